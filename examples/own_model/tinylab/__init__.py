"""tinylab: a researcher's own model, dataset and augmentation, trained by eva.

Nothing here imports eva's internals but `eva.data.ImageSet` (the dataset contract); eva
finds these builders through the `_target_` of the YAMLs in ../conf.
"""
