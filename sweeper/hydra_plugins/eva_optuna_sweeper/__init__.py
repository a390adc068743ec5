"""eva's Optuna sweeper for Hydra: `hydra/sweeper=eva_optuna` (see eva/sweep/)."""
