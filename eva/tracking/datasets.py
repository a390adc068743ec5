"""The data a run trains and is measured on, described for MLflow's run inputs.

One entry per split the run uses: train, validation (dataset.val_size > 0) and test for a
training run, test for mode=test, train for mode=lr_find. Each says the dataset's name,
where the images come from (dataset.root, or "generated" for a builder that reads no
files), how many images the split has, and a digest of exactly those images.

Plain dicts, no MLflow: this runs in the training process, which never imports MLflow
(eva/tracking/writer.py); Tracker.log_datasets (eva/tracking/run.py) turns them into
MLflow's entities where the MLflow calls run.
"""

import hashlib
import json

import numpy as np

# The splits each mode uses, by MLflow's context tag (mlflow.data.context).
SPLITS = {
    "train": ("train", "validation", "test"),
    "test": ("test",),
    "lr_find": ("train",),
}
SAMPLED = 1024  # images of a whole split hashed into its fingerprint (all of them, if fewer)
DIGEST_CHARS = 12  # MLflow's store keeps up to 36


def describe(cfg) -> list[dict]:
    """The run's data splits: [{name, context, digest, size, source, builder, image_shape,
    num_classes}], for a config whose data the process has loaded (eva.data.build_data)."""
    from eva.data import load_split, split_indices

    d = cfg.dataset
    # Both whole splits are the ones build_data loaded: load_split keeps them per process.
    whole = {"train": load_split(cfg, train=True), "test": load_split(cfg, train=False)}
    train_idx, val_idx, test_idx = split_indices(
        len(whole["train"]), len(whole["test"]), d, cfg.seed
    )
    # Which whole split each context's images are taken from, and which of them.
    parts = {
        "train": ("train", train_idx),
        "validation": ("train", val_idx),
        "test": ("test", test_idx),
    }
    prints = {split: fingerprint(d.name, split, images) for split, images in whole.items()}
    source = data_source(cfg)
    described = []
    for context in SPLITS.get(str(cfg.mode), SPLITS["train"]):
        split, indices = parts[context]
        if len(indices) == 0:  # no validation split
            continue
        images = whole[split].images
        described.append(
            {
                "name": str(d.name),
                "context": context,
                "digest": digest(prints[split], indices),
                "size": len(indices),
                "source": source,
                "builder": str(d._target_),
                "image_shape": [int(n) for n in images.shape[1:]],
                "num_classes": int(d.num_classes),
            }
        )
    return described


def fingerprint(name: str, split: str, images_and_labels) -> "hashlib._Hash":
    """A hash of a whole split: its shape, all of its labels and SAMPLED images spread
    evenly over it. Hashing every image would cost a tenth of a second per CIFAR-10 run;
    the sample, a few milliseconds (MLflow's own digests sample rows too)."""
    images, labels = images_and_labels.images, images_and_labels.labels
    h = hashlib.sha1()
    h.update(json.dumps([name, split, list(images.shape), str(images.dtype)]).encode())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    picked = np.linspace(0, len(images) - 1, min(SAMPLED, len(images))).astype(np.int64)
    h.update(np.ascontiguousarray(images[picked]).tobytes())
    return h


def digest(whole_split: "hashlib._Hash", indices: np.ndarray) -> str:
    """The whole split's fingerprint and which of its images the run's split holds: a
    subset, a validation split or another seed changes it, a moved dataset.root does not."""
    h = whole_split.copy()
    h.update(np.ascontiguousarray(indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:DIGEST_CHARS]


def data_source(cfg) -> str:
    """dataset.root as an absolute path, for a builder that takes a root; else "generated"
    (the images are made in code, e.g. dataset=synthetic)."""
    from eva.config import options
    from eva.config.validate import dataset_inputs, eva_keys

    _, kwargs = options.resolve("dataset", cfg.dataset, eva_keys("dataset"), dataset_inputs(cfg))
    return str(kwargs["root"]) if "root" in kwargs else "generated"
