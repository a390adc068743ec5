"""What a run does, by `mode`: train (and resume), test a checkpoint, the LR range test.

Each mode starts from the shared runtime (eva/modes/runtime.py): validated config, tracking
store, device, seeds, then data and model.
"""
