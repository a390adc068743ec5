"""eva's side of its Optuna sweeps; the sweeper itself is evasweep (sweeper/evasweep)."""
