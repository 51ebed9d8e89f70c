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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate.data_loader import SkipBatchSampler
from datasets import Dataset, DatasetDict
from torch import nn
from torch.utils.data import DataLoader

from gsp_hub.data import (
    LABEL_COLUMN,
    DatasetSplits,
    MPerClassBatchSampler,
    check_verification_options,
    collate_image_batch,
    create_image_transforms,
    is_embedded_source,
    load_image_dataset,
    make_splits,
    verify_dataset_images,
    with_image_transform,
)
from gsp_hub.data.splits import describe_classes
from gsp_hub.train.config import TrainConfig

__all__ = [
    "VALIDATION_PREFIX",
    "RunData",
    "SeededBatchDataset",
    "check_labels",
    "check_split_labels",
    "eval_loader",
    "load_dataset_splits",
    "load_run_data",
    "loader_options",
    "prepare_eval_loaders",
    "seeded_random_state",
    "train_loader",
]


VALIDATION_PREFIX = "validation/"  # history rows: bare metric names are the test split's, prefixed the validation's


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
    validation: Dataset | None = None


def split_options(config: TrainConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`gsp_hub.data.make_splits` that ``config`` sets for its split protocol."""
    shared = {"validation_fraction": config.validation_fraction, "query_split": config.query_split,
              "gallery_split": config.gallery_split}
    if config.split_protocol == "zero-shot":
        return shared
    names = {"train_split": config.train_split or "train", "validation_split": config.validation_split,
             "test_split": config.test_split}
    return {**names, **shared, "seed": config.seed}


def load_dataset_splits(config: TrainConfig, *, num_processes: int = 1, progress: bool = True) -> DatasetSplits:
    """Load ``config.dataset`` and split it into train / validation / test (``config.split_protocol``).

    The data errors are raised here, before any model is built, in the order of their cost: a missing path or
    column, then what the labels alone decide (:func:`check_split_labels`: classes per batch, singleton classes),
    and only then the decoding of every image (``config.verify_images``), whose dropped rows (``skip_bad_images``)
    are re-checked."""
    def split_and_check(dataset: DatasetDict) -> DatasetSplits:
        splits = make_splits(dataset, config.split_protocol, **split_options(config))
        check_split_labels(splits, config.batch_size, config.m_per_class, num_processes)
        return splits

    check_verification_options(config.verify_images, config.skip_bad_images)
    dataset = load_image_dataset(config.dataset, image_column=config.image_column, label_column=config.label_column,
                                 verify_images=False, progress=progress)
    splits = split_and_check(dataset)
    if config.verify_images and not is_embedded_source(config.dataset):
        verified = verify_dataset_images(dataset, skip_bad_images=config.skip_bad_images, progress=progress)
        if verified is not dataset:  # rows were dropped: the labels allow the run only if they still do
            splits = split_and_check(verified)
    return splits


def check_split_labels(splits: DatasetSplits, batch_size: int, m_per_class: int, num_processes: int = 1) -> None:
    """:func:`check_labels` of the splits of a data set."""
    labels = {name: None if (rows := getattr(splits, name)) is None else np.asarray(rows[LABEL_COLUMN])
              for name in ("train", "validation", "test")}
    check_labels(labels, splits.class_names, batch_size, m_per_class, num_processes,
                 num_test_queries=splits.num_test_queries)


def check_labels(labels: Mapping[str, np.ndarray | None], class_names: Sequence[str], batch_size: int,
                 m_per_class: int, num_processes: int = 1, num_test_queries: int = 0) -> None:
    """ValueError unless the labels of the splits (``labels['train']``, ``['validation']``, ``['test']``: (N,) ids,
    None for a split the run lacks) allow the run: ``batch_size / m_per_class`` training classes per batch, one
    batch per process, and no class with a single row in the validation or test split (leave-one-out retrieval has
    no positive for it) or, for a query/gallery test (its first ``num_test_queries`` rows query the others), no
    query class missing from the gallery; named by class name (``class_names``, indexed by id)."""
    classes_per_batch = batch_size // m_per_class
    train_labels = labels["train"]
    train_classes = np.unique(train_labels)
    if len(train_classes) < classes_per_batch:
        raise ValueError(
            f"batch_size={batch_size} / m_per_class={m_per_class} = {classes_per_batch} classes per batch, but the "
            f"train split has {describe_classes(train_classes, class_names)}; lower --batch-size to "
            f"{len(train_classes) * m_per_class} or below (a multiple of m_per_class), or lower --m-per-class")
    if len(train_labels) < batch_size * num_processes:
        raise ValueError(
            f"the train split has {len(train_labels)} images, fewer than one batch of {batch_size} x "
            f"{num_processes} process(es); lower --batch-size")
    if num_test_queries:
        test = labels["test"]
        unmatched = np.setdiff1d(test[:num_test_queries], test[num_test_queries:])
        if len(unmatched):
            raise ValueError(
                f"{len(unmatched)} query class(es) have no image in the gallery split, so their queries have no "
                f"positive: {describe_classes(unmatched, class_names)}; check --query-split / --gallery-split")
    for name in ("validation", "test"):
        if labels.get(name) is None or (name == "test" and num_test_queries):
            continue
        ids, counts = np.unique(labels[name], return_counts=True)
        singletons = ids[counts < 2]
        if len(singletons):
            raise ValueError(
                f"the {name} split has {len(singletons)} class(es) with a single image, which leave-one-out "
                f"retrieval cannot score: {describe_classes(singletons, class_names)}; remove them from the "
                f"data set or add images")


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
        validation=None if splits.validation is None else with_image_transform(splits.validation, transforms.eval),
    )


def loader_options(num_workers: int, device: torch.device | str) -> dict[str, Any]:
    """The DataLoader options every loader of a run shares: ``num_workers`` worker processes, kept alive between
    passes over the loader (``persistent_workers``, when there are any: the evaluation loaders are iterated at every
    evaluation), and batches in pinned (page-locked) host memory when they go to a CUDA ``device`` (faster copies to
    the GPU; on the CPU pinning would only cost a copy)."""
    return {"num_workers": num_workers, "persistent_workers": num_workers > 0,
            "pin_memory": torch.device(device).type == "cuda"}


def train_loader(
    data: RunData, config: TrainConfig, *, epoch: int, skip_batches: int, num_replicas: int, rank: int,
    device: torch.device | str,
) -> DataLoader:
    """This process's m-per-class batches of ``epoch``, without the first ``skip_batches`` (already trained on),
    loaded for ``device`` (:func:`loader_options`)."""
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
        generator=torch.Generator().manual_seed(config.seed + epoch),  # never draws from the global RNG
        **loader_options(config.num_workers, device),
    )


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int,
                device: torch.device | str = "cpu") -> DataLoader:
    """Sequential batches of ``(images, labels)`` for embedding a split on ``device`` (:func:`loader_options`)."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_image_batch,
        generator=torch.Generator().manual_seed(0), **loader_options(num_workers, device),
    )


def prepare_eval_loaders(accelerator: Any, test: Dataset, validation: Dataset | None, batch_size: int,
                         num_workers: int) -> tuple[DataLoader, DataLoader | None]:
    """The test and (if any) validation loaders of :func:`eval_loader`, prepared by ``accelerator`` (sharded over
    processes, gathered with ``gather_for_metrics``)."""
    def prepared(dataset: Dataset) -> DataLoader:
        return accelerator.prepare(eval_loader(dataset, batch_size, num_workers, accelerator.device))

    return prepared(test), None if validation is None else prepared(validation)
