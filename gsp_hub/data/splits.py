"""Train / test splits for metric learning: the zero-shot class split, or the data set's own splits.

Both take the output of :func:`gsp_hub.data.load_image_dataset` (``label`` a ``ClassLabel``, ids 0..C-1) and
return :class:`DatasetSplits`. In the train set the labels are always 0..num_classes-1 (what proxy losses and
classifier heads need); test labels keep their ids (only equality matters for retrieval).

Zero-shot protocol (CUB-200, Cars-196, SOP, Tiny ImageNet): classes sorted by id, the first half
(ids < C // 2) is for training, the rest for testing, with no class in both. By default the rows of every split
are pooled first, as CUB and Cars are used (their Hub copies come with a classification train/test split).
``train_splits`` / ``test_splits`` restrict where the rows come from. Tiny ImageNet (``train`` 250 + ``valid`` 50
images per class): the pooled default trains on 30,000 images of classes 0-99 and tests on the 30,000 of
classes 100-199; ``test_splits=["valid"]`` tests on the 5,000 validation images of classes 100-199, the set of
the sanity anchors in ``shared/README.md``, and ``train_splits=["train"]`` keeps training on the train split only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets

from gsp_hub.data.loading import LABEL_COLUMN

__all__ = ["SPLIT_PROTOCOLS", "DatasetSplits", "make_splits", "own_splits", "zero_shot_split"]

SplitProtocol = Literal["zero-shot", "own"]
SPLIT_PROTOCOLS: tuple[str, ...] = ("zero-shot", "own")
_TEST_SPLIT_NAMES = ("test", "validation", "valid", "val")


@dataclass(frozen=True)
class DatasetSplits:
    """The data of one run.

    Attributes:
        train: training rows; labels 0..num_classes-1.
        test: evaluation rows (the retrieval gallery = the queries, leave-one-out).
        num_classes: number of training classes (size of a proxy / classifier head).
        num_test_classes: number of classes in ``test``.
        protocol: ``"zero-shot"`` or ``"own"``.
        summary: one line for logs, e.g. ``"zero-shot: train 3500 rows of classes 0-4 from train+test; ..."``.
    """

    train: Dataset
    test: Dataset
    num_classes: int
    num_test_classes: int
    protocol: SplitProtocol
    summary: str


def zero_shot_split(
    dataset: DatasetDict,
    *,
    train_splits: Sequence[str] | None = None,
    test_splits: Sequence[str] | None = None,
) -> DatasetSplits:
    """Classes 0..C//2-1 for training, C//2..C-1 for testing, rows pooled over the named splits (default all)."""
    num_classes = _num_classes(dataset)
    if num_classes < 4:
        raise ValueError(f"the zero-shot split needs at least 4 classes (2 to train, 2 to test); the data set has "
                         f"{num_classes}. Use the data set's own splits (--split-protocol own) instead")
    boundary = num_classes // 2
    train_names = _split_names(dataset, train_splits, "train_splits")
    test_names = _split_names(dataset, test_splits, "test_splits")
    train = _rows_of_classes(dataset, train_names, 0, boundary)
    test = _rows_of_classes(dataset, test_names, boundary, num_classes)
    summary = (f"zero-shot: train {len(train)} rows of classes 0-{boundary - 1} from {'+'.join(train_names)}; "
               f"test {len(test)} rows of classes {boundary}-{num_classes - 1} from {'+'.join(test_names)}")
    return DatasetSplits(train, test, boundary, num_classes - boundary, "zero-shot", summary)


def own_splits(dataset: DatasetDict, *, train_split: str = "train", test_split: str | None = None) -> DatasetSplits:
    """The data set's own train / test splits, same classes in both. ``test_split`` default: test, validation, ..."""
    if test_split is None:
        test_split = next((name for name in _TEST_SPLIT_NAMES if name in dataset and name != train_split), None)
        if test_split is None:
            raise ValueError(f"the data set has no test split (splits: {list(dataset)}, looked for "
                             f"{list(_TEST_SPLIT_NAMES)}); name one with test_split= or use the zero-shot protocol")
    _split_names(dataset, [train_split, test_split], "train_split/test_split")
    train, test = dataset[train_split], dataset[test_split]
    test_classes = len(np.unique(np.asarray(test[LABEL_COLUMN])))
    summary = f"own splits: train {len(train)} rows ({train_split!r}), test {len(test)} rows ({test_split!r})"
    return DatasetSplits(train, test, _num_classes(dataset), test_classes, "own", summary)


def make_splits(dataset: DatasetDict, protocol: SplitProtocol = "zero-shot", **kwargs: Any) -> DatasetSplits:
    """Dispatch to :func:`zero_shot_split` or :func:`own_splits` by name (for the command line)."""
    if protocol == "zero-shot":
        return zero_shot_split(dataset, **kwargs)
    if protocol == "own":
        return own_splits(dataset, **kwargs)
    raise ValueError(f"split protocol {protocol!r} is unknown; expected one of {SPLIT_PROTOCOLS}")


def _num_classes(dataset: DatasetDict) -> int:
    feature = next(iter(dataset.values())).features[LABEL_COLUMN]
    if not isinstance(feature, ClassLabel):
        raise TypeError(f"the label column is {feature}, expected a ClassLabel; load the data with "
                        "gsp_hub.data.load_image_dataset, which encodes the labels")
    return feature.num_classes


def _split_names(dataset: DatasetDict, names: Sequence[str] | None, argument: str) -> list[str]:
    if names is None:
        return list(dataset)
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in dataset]
    if unknown or not names:
        raise ValueError(f"{argument}={names!r}: unknown split(s) {unknown}; the data set has {list(dataset)}")
    return names


def _rows_of_classes(dataset: DatasetDict, split_names: Sequence[str], low: int, high: int) -> Dataset:
    """Rows with low <= label < high from the named splits, concatenated in split order."""
    parts = []
    for name in split_names:
        labels = np.asarray(dataset[name][LABEL_COLUMN])
        parts.append(dataset[name].select(np.flatnonzero((labels >= low) & (labels < high))))
    rows = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if len(rows) == 0:
        raise ValueError(f"no rows of classes {low}-{high - 1} in the split(s) {list(split_names)}")
    return rows
