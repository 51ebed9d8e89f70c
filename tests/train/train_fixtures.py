"""Helpers of the training tests: a tiny real data set and a fast configuration (imported by the tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict

from gsp_hub.train import TrainConfig

# test_vit at 32 px with 8 px patches: 16 local tokens, no BatchNorm (per-rank batch statistics would make a
# two-process step differ from a one-process step), 0.26 M parameters.
TINY_MODEL: dict[str, Any] = dict(
    backbone="test_vit",
    backbone_kwargs={"img_size": 32, "patch_size": 8},
    embed_dim=16,
    pool_kwargs={"num_prototypes": 4, "memory_size": 16},
    img_size=32,
)


# With validation classes: classes 0-2 train (3 per batch x 4 images), classes 3-4 validate, 5-9 test.
WITH_VALIDATION: dict[str, Any] = dict(batch_size=12, validation_fraction=0.1)


def write_tiny_dataset(path: Path, per_class: int = 16) -> Path:
    """A parquet file of real Fashion-MNIST images (``per_class`` of each of the 10 classes, embedded subset)."""
    from gsp_hub.data import load_fashion_mnist_subset

    train = load_fashion_mnist_subset()["train"]
    labels = np.asarray(train["label"])
    rows = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    train.select(rows).to_parquet(str(path))
    return path


def write_labelled_images(folder: Path, classes: int = 4, per_class: int = 8) -> list[tuple[str, str]]:
    """``folder/<class>_<i>.png``: random 32x32 RGB images of ``classes`` classes named ``class_a``, ``class_b``, ...;
    returns the (file name, class name) rows."""
    import PIL.Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in (f"class_{chr(ord('a') + c)}" for c in range(classes)):
        for i in range(per_class):
            name = f"{label}_{i}.png"
            PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name)
            rows.append((name, label))
    return rows


def tiny_config(output_dir: Path, dataset: Path | DatasetDict, **overrides: Any) -> TrainConfig:
    """A run of 16-image steps on ``dataset`` (a path or an object; 5 train classes: 4 per batch x 4 images), 2 epochs,
    timm augmentation; no validation classes (the 5 classes of the training half all train; validation tests set
    validation_fraction)."""
    values: dict[str, Any] = dict(
        TINY_MODEL,
        dataset=str(dataset) if isinstance(dataset, Path) else dataset,
        output_dir=str(output_dir),
        batch_size=16,
        m_per_class=4,
        epochs=2,
        eval_batch_size=64,
        log_every=1,
        eval_at_start=False,
        augment=True,
        augment_kwargs={},  # timm's own training transform (random resized crop, flip, colour jitter)
        validation_fraction=0.0,
    )
    values.update(overrides)
    return TrainConfig(**values)
