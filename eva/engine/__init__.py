"""The training loop and what it needs: device, seeds, checkpoints."""
