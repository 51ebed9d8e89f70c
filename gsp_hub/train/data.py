"""The data side of a run: load and split the data set, build the timm transforms and the loaders.

Augmentation is made a function of the data, not of the loader: :class:`SeededBatchDataset` fetches every batch
with the random generators (torch, numpy, python) seeded from ``(seed, epoch, batch indices)``. The images of a
batch are therefore the same whatever the number of loader workers, and a run resumed in the middle of an epoch
(which skips the consumed index lists of the deterministic m-per-class sampler) sees exactly the batches the
uninterrupted run saw.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate.data_loader import SkipBatchSampler
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader

from gsp_hub.data import (
    DatasetSource,
    DatasetSplits,
    MPerClassBatchSampler,
    collate_image_batch,
    create_image_transforms,
    load_image_dataset,
    make_splits,
    with_image_transform,
)
from gsp_hub.train.config import TrainConfig

__all__ = [
    "RunData",
    "SeededBatchDataset",
    "batches_per_epoch",
    "eval_loader",
    "load_dataset_splits",
    "load_run_data",
    "seeded_random_state",
    "train_loader",
]


@contextlib.contextmanager
def seeded_random_state(entropy: Sequence[int]) -> Iterator[None]:
    """Seed torch (CPU), numpy and python ``random`` from ``entropy`` inside the block; restore them afterwards."""
    seed = np.random.SeedSequence(list(entropy)).generate_state(1)[0].item()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class SeededBatchDataset(torch.utils.data.Dataset):
    """Wraps a transformed ``datasets.Dataset``; batches are fetched under :func:`seeded_random_state`.

    ``set_epoch`` before building each epoch's loader (workers receive a copy of the dataset at that moment).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        with seeded_random_state([self.seed, self.epoch, *indices]):
            return self.dataset.__getitems__(indices)


@dataclass(frozen=True)
class RunData:
    """Splits and transformed datasets of a run; ``data_config`` is the timm preprocessing config."""

    splits: DatasetSplits
    train: SeededBatchDataset
    test: Dataset
    data_config: dict[str, Any]


def load_dataset_splits(
    source: DatasetSource,
    *,
    split_protocol: str = "zero-shot",
    image_column: str | None = None,
    label_column: str | None = None,
    verify_images: bool = True,
    skip_bad_images: bool = False,
    progress: bool = True,
) -> DatasetSplits:
    """Load a data set and split it (``zero-shot`` or ``own``); the data errors (missing path, no label or image
    column, corrupt images) are raised here, before any model is built."""
    dataset = load_image_dataset(
        source,
        image_column=image_column,
        label_column=label_column,
        verify_images=verify_images,
        skip_bad_images=skip_bad_images,
        progress=progress,
    )
    return make_splits(dataset, split_protocol)


def load_run_data(config: TrainConfig, splits: DatasetSplits, model: nn.Module) -> RunData:
    """timm transforms for ``model`` (``config.img_size`` / ``crop_pct`` override its data config) applied lazily
    to the splits; training images are augmented only with ``config.augment``."""
    transforms = create_image_transforms(model, input_size=config.img_size or None, crop_pct=config.crop_pct,
                                         **config.augment_kwargs)
    train_transform = transforms.train if config.augment else transforms.eval
    return RunData(
        splits=splits,
        train=SeededBatchDataset(with_image_transform(splits.train, train_transform), config.seed),
        test=with_image_transform(splits.test, transforms.eval),
        data_config=transforms.data_config,
    )


def train_loader(
    data: RunData, config: TrainConfig, *, epoch: int, skip_batches: int, num_replicas: int, rank: int
) -> DataLoader:
    """This process's m-per-class batches of ``epoch``, without the first ``skip_batches`` (already trained on)."""
    sampler = MPerClassBatchSampler(
        np.asarray(data.splits.train["label"]), config.m_per_class, config.batch_size,
        num_replicas=num_replicas, rank=rank, seed=config.seed,
    )
    sampler.set_epoch(epoch)
    data.train.set_epoch(epoch)
    batches = SkipBatchSampler(sampler, skip_batches=skip_batches) if skip_batches else sampler
    return DataLoader(
        data.train,
        batch_sampler=batches,
        collate_fn=collate_image_batch,
        num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(config.seed + epoch),  # never draws from the global RNG
    )


def batches_per_epoch(data: RunData, config: TrainConfig, num_replicas: int) -> int:
    """Micro-batches per process and epoch, rounded down to whole optimizer steps (multiples of grad_accum)."""
    total = len(data.splits.train) // (config.batch_size * num_replicas)
    return total - total % config.grad_accum


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """Sequential batches of ``(images, labels)`` for embedding a split."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_image_batch,
        generator=torch.Generator().manual_seed(0),
    )
