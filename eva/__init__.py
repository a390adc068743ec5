"""eva: train image classifiers on CIFAR-10 with Hydra, MLflow and Optuna."""

__version__ = "0.1.0"
