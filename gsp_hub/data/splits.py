"""Train / validation / test splits for metric learning: the zero-shot class split, or the data set's own splits.

Both take the output of :func:`gsp_hub.data.load_image_dataset` (``label`` a ``ClassLabel``, ids 0..C-1) and
return :class:`DatasetSplits`. In the train set the labels are always 0..num_classes-1 (what proxy losses and
classifier heads need); validation and test labels keep their ids (only equality matters for retrieval).

The three splits have three jobs (Musgrave et al. 2020, "A Metric Learning Reality Check"): ``train`` is trained
on, ``validation`` chooses (the exported epoch, early stopping, CCP's plateau rule), ``test`` is only reported.

Zero-shot protocol (CUB-200, Cars-196, SOP, In-shop, Tiny ImageNet): classes sorted by id, the first half
(ids < C // 2) is the training half, the rest is for testing, with no class in both. A data set that comes split by
class with its training classes first — its ``train`` split holds exactly the classes 0..T-1 and no other split
holds any of them, as the benchmark loaders of :mod:`gsp_hub.data.dml_benchmarks` return them — keeps its own
training classes: the training half is 0..T-1 (SOP: 11,318 of 22,634 classes, not 11,317). The last
``validation_fraction`` of the training half (at least 2 classes, so that leave-one-out retrieval means something)
are held out as validation classes, never trained on; the remaining classes (at least 2) are trained on. A data set
split by class that also has validation classes of its own — a ``validation`` (``valid``, ``val``) split holding
exactly the next classes T..T+V-1 (at least 2), as the embedded Fashion-Collage does (train 0-4, validation 5-6,
test 7-9) — keeps all three: its training classes all train, its validation classes validate (for any positive
``validation_fraction``; 0 still means no validation) and the classes after them are the test classes. By default
the rows of every split are pooled first, as CUB and Cars are used (their Hub copies come with a classification
train/test split). ``train_splits`` / ``test_splits`` restrict where the rows come from (validation classes take
their rows from ``train_splits``). Tiny ImageNet (``train`` 250 + ``valid`` 50 images per class): the pooled
default with ``validation_fraction=0.1`` trains on classes 0-89, validates on classes 90-99 and tests on classes
100-199; ``test_splits=["valid"]`` tests on the 5,000 validation images of classes 100-199, the set of the sanity
anchors in ``shared/README.md``.

Own protocol: the data set's own ``train`` / ``validation`` / ``test`` splits (names configurable); without a
validation split, ``validation_fraction`` of every training class's rows is held out (seeded, stratified).

Query/gallery evaluation (In-shop): with ``query_split`` and ``gallery_split`` (either protocol) the test set is the
rows of the query split followed by those of the gallery split (zero-shot: of the test classes);
``DatasetSplits.num_test_queries`` says where the queries end. The queries then search the gallery instead of every
test row searching the others (leave-one-out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets

from gsp_hub.data.loading import LABEL_COLUMN

__all__ = ["SPLIT_PROTOCOLS", "DatasetSplits", "describe_classes", "make_splits", "own_splits", "zero_shot_split"]

SplitProtocol = Literal["zero-shot", "own"]
SPLIT_PROTOCOLS: tuple[str, ...] = ("zero-shot", "own")
_TEST_SPLIT_NAMES = ("test", "validation", "valid", "val")
_VALIDATION_SPLIT_NAMES = ("validation", "valid", "val")
MIN_RETRIEVAL_CLASSES = 2  # leave-one-out retrieval over a single class scores 1.0 whatever the model


@dataclass(frozen=True)
class DatasetSplits:
    """The data of one run.

    Attributes:
        train: training rows; labels 0..num_classes-1.
        test: evaluation rows, reported only (the retrieval gallery = the queries, leave-one-out).
        num_classes: number of training classes (size of a proxy / classifier head).
        num_test_classes: number of classes in ``test``.
        protocol: ``"zero-shot"`` or ``"own"``.
        summary: one line per split for logs, naming the classes of each split.
        validation: rows that choose the model (best epoch, early stopping), or None (no selection: last epoch).
        num_validation_classes: number of classes in ``validation`` (0 without one).
        class_names: the data set's class names, indexed by label id.
        num_test_queries: 0: every ``test`` row queries the others (leave-one-out); else the first
            ``num_test_queries`` rows of ``test`` are queries and the others their gallery.
    """

    train: Dataset
    test: Dataset
    num_classes: int
    num_test_classes: int
    protocol: SplitProtocol
    summary: str
    validation: Dataset | None = None
    num_validation_classes: int = 0
    class_names: tuple[str, ...] = ()
    num_test_queries: int = 0

    def describe(self, split: str) -> str:
        """``split`` ('train', 'validation', 'test') in words for reports, e.g. ``"classes 3-4 (Dress, Coat)"``."""
        rows = getattr(self, split)
        if rows is None:
            return "none"
        return describe_classes(np.unique(np.asarray(rows[LABEL_COLUMN])), self.class_names)


def describe_classes(ids: Sequence[int] | np.ndarray, names: Sequence[str], limit: int = 6) -> str:
    """Class ids with their names, e.g. ``"classes 0-2 (T-shirt/top, Trouser, Pullover)"``: a contiguous range
    or the id list, then the first ``limit`` names (names that only repeat the id are left out)."""
    return _ids_text(ids) + _names_text(ids, names, limit)


def _ids_text(ids: Sequence[int] | np.ndarray) -> str:
    """``"classes 3-4"``, ``"classes 1, 5, 9"`` or ``"class 7"``."""
    ids = [int(i) for i in ids]
    if len(ids) == 1:
        return f"class {ids[0]}"
    if ids == list(range(ids[0], ids[0] + len(ids))):
        return f"classes {ids[0]}-{ids[-1]}"
    return f"classes {', '.join(map(str, ids))}"


def _names_text(ids: Sequence[int] | np.ndarray, names: Sequence[str], limit: int = 6) -> str:
    """``" (Dress, Coat)"`` for the first ``limit`` named classes, ``""`` when the names are only the ids."""
    ids = [int(i) for i in ids]
    named = [names[i] for i in ids if i < len(names) and names[i] != str(i)]
    if not named:
        return ""
    more = f", ... ({len(named) - limit} more)" if len(named) > limit else ""
    return f" ({', '.join(named[:limit])}{more})"


def zero_shot_split(
    dataset: DatasetDict,
    *,
    train_splits: Sequence[str] | None = None,
    test_splits: Sequence[str] | None = None,
    validation_fraction: float = 0.0,
    query_split: str | None = None,
    gallery_split: str | None = None,
) -> DatasetSplits:
    """Classes 0..C//2-1 are the training half (0..T-1 for a data set that comes split by class, see the module
    docstring), the others the test classes, rows pooled over the named splits (default all); the last
    ``validation_fraction`` of the training half (rounded up, at least 2 classes when positive) become validation
    classes. 0 holds out none (no model selection). A data set split by class that has its own validation classes
    (a ``validation`` / ``valid`` / ``val`` split) validates on them instead, for any positive fraction, and tests
    on the classes after them. ``query_split`` / ``gallery_split``: the test classes' rows of these two splits,
    queries first, replace ``test_splits``."""
    num_classes = _num_classes(dataset)
    if num_classes < 4:
        raise ValueError(f"the zero-shot split needs at least 4 classes (2 to train, 2 to test); the data set has "
                         f"{num_classes}. Use the data set's own splits (--split-protocol own) instead")
    query_gallery = _query_gallery_names(dataset, query_split, gallery_split)
    if query_gallery and test_splits is not None:
        raise ValueError(f"test_splits={test_splits!r} and query_split / gallery_split both name the test rows; "
                         "pass one or the other")
    boundary = _training_half(dataset, num_classes)
    own_validation = _own_validation_classes(dataset, boundary)
    if own_validation is None:
        num_validation = _num_validation_classes(boundary, validation_fraction)
        num_train, first_test = boundary - num_validation, boundary
    else:
        validation_name, own_count = own_validation
        num_validation = own_count if validation_fraction > 0 else 0
        num_train, first_test = boundary, boundary + own_count
    train_names = _split_names(dataset, train_splits, "train_splits")
    validation_names = train_names if own_validation is None else [validation_name]
    test_names = list(query_gallery) if query_gallery else _split_names(dataset, test_splits, "test_splits")
    train = _rows_of_classes(dataset, train_names, 0, num_train)
    validation = (_rows_of_classes(dataset, validation_names, num_train, num_train + num_validation)
                  if num_validation else None)
    if query_gallery:
        queries, gallery = (_rows_of_classes(dataset, [name], first_test, num_classes) for name in query_gallery)
        test, num_queries = concatenate_datasets([queries, gallery]), len(queries)
    else:
        test, num_queries = _rows_of_classes(dataset, test_names, first_test, num_classes), 0
    names = _class_names(dataset)
    train_ids, test_ids = range(num_train), range(first_test, num_classes)
    validation_ids = range(num_train, num_train + num_validation)
    lines = [f"zero-shot: train {len(train)} rows of {_ids_text(train_ids)} from {'+'.join(train_names)}"
             f"{_names_text(train_ids, names)}"]
    if validation is not None:
        lines.append(f"validation {len(validation)} rows of {_ids_text(validation_ids)} from "
                     f"{'+'.join(validation_names)}{_names_text(validation_ids, names)}, choose the model")
    rows = _query_gallery_text(num_queries, len(test), query_gallery) if query_gallery else f"{len(test)} rows"
    source = "" if query_gallery else f" from {'+'.join(test_names)}"
    lines.append(f"test {rows} of {_ids_text(test_ids)}{source}{_names_text(test_ids, names)}, reported only")
    return DatasetSplits(train, test, num_train, num_classes - first_test, "zero-shot", "; ".join(lines),
                         validation, num_validation, names, num_queries)


def own_splits(
    dataset: DatasetDict,
    *,
    train_split: str = "train",
    validation_split: str | None = None,
    test_split: str | None = None,
    validation_fraction: float = 0.0,
    seed: int = 0,
    query_split: str | None = None,
    gallery_split: str | None = None,
) -> DatasetSplits:
    """The data set's own splits, same classes in all. ``test_split`` default: test, validation, valid, val (the
    first present). ``validation_split`` default: validation, valid or val when present besides the test split;
    otherwise ``validation_fraction`` of every training class's rows (rounded up, seeded) is held out of ``train``
    (0: no validation split). ``query_split`` / ``gallery_split``: the test rows are these two splits' rows, queries
    first, instead of a test split."""
    query_gallery = _query_gallery_names(dataset, query_split, gallery_split)
    if query_gallery and test_split is not None:
        raise ValueError(f"test_split={test_split!r} and query_split / gallery_split both name the test rows; pass "
                         "one or the other")
    if test_split is None and not query_gallery:
        test_split = next((name for name in _TEST_SPLIT_NAMES if name in dataset and name != train_split), None)
        if test_split is None:
            raise ValueError(f"the data set has no test split (splits: {list(dataset)}, looked for "
                             f"{list(_TEST_SPLIT_NAMES)}); name one with test_split= (--test-split) or use the "
                             "zero-shot protocol")
    test_names = list(query_gallery) if query_gallery else [test_split]
    if validation_split is None:
        validation_split = next((name for name in _VALIDATION_SPLIT_NAMES
                                 if name in dataset and name not in (train_split, *test_names)), None)
    named = [train_split, *test_names] + ([validation_split] if validation_split else [])
    _split_names(dataset, named, "train_split/validation_split/test_split")
    if len(set(named)) < len(named):
        raise ValueError(f"train_split/validation_split/test_split must name different splits, got {named}")
    train = dataset[train_split]
    test = concatenate_datasets([dataset[name] for name in test_names]) if query_gallery else dataset[test_split]
    num_queries = len(dataset[test_names[0]]) if query_gallery else 0
    if validation_split:
        validation = dataset[validation_split]
        source = repr(validation_split)
    elif validation_fraction > 0:
        train, validation = _hold_out_rows(train, validation_fraction, seed)
        source = f"{validation_fraction:g} of each class of {train_split!r}, seed {seed}"
    else:
        validation, source = None, ""
    names = _class_names(dataset)
    lines = [f"own splits: train {len(train)} rows ({train_split!r}, {describe_classes(_labels(train), names)})"]
    if validation is not None:
        lines.append(f"validation {len(validation)} rows ({source}), choose the model")
    rows = _query_gallery_text(num_queries, len(test), query_gallery) if query_gallery else \
        f"{len(test)} rows ({test_split!r})"
    lines.append(f"test {rows}, reported only")
    return DatasetSplits(train, test, _num_classes(dataset), len(_labels(test)), "own", "; ".join(lines),
                         validation, 0 if validation is None else len(_labels(validation)), names, num_queries)


def make_splits(dataset: DatasetDict, protocol: SplitProtocol = "zero-shot", **kwargs: Any) -> DatasetSplits:
    """Dispatch to :func:`zero_shot_split` or :func:`own_splits` by name (for the command line)."""
    if protocol == "zero-shot":
        return zero_shot_split(dataset, **kwargs)
    if protocol == "own":
        return own_splits(dataset, **kwargs)
    raise ValueError(f"split protocol {protocol!r} is unknown; expected one of {SPLIT_PROTOCOLS}")


def _training_half(dataset: DatasetDict, num_classes: int) -> int:
    """T, the classes 0..T-1 of the zero-shot training half: those of the ``train`` split when it holds exactly
    0..T-1 (T < C) and no other split holds any of them (a data set split by class, training classes first), else
    C // 2."""
    if "train" not in dataset or len(dataset) < 2:
        return num_classes // 2
    train_classes = _labels(dataset["train"])
    count = len(train_classes)
    own_split = count < num_classes and np.array_equal(train_classes, np.arange(count)) and all(
        _labels(rows).min(initial=count) >= count for name, rows in dataset.items() if name != "train")
    return count if own_split else num_classes // 2


def _own_validation_classes(dataset: DatasetDict, num_train: int) -> tuple[str, int] | None:
    """(split name, V) when ``dataset`` comes split by class with validation classes of its own: its ``train``
    split holds exactly the classes 0..num_train-1 and its validation split (the first of validation, valid, val)
    exactly the classes num_train..num_train+V-1 (at least 2), which no other split holds; else None."""
    name = next((name for name in _VALIDATION_SPLIT_NAMES if name in dataset and name != "train"), None)
    if name is None or "train" not in dataset or not np.array_equal(_labels(dataset["train"]), np.arange(num_train)):
        return None
    classes = _labels(dataset[name])
    if len(classes) < MIN_RETRIEVAL_CLASSES or not np.array_equal(classes, num_train + np.arange(len(classes))):
        return None
    if any(np.isin(_labels(rows), classes).any() for other, rows in dataset.items() if other != name):
        return None
    return name, len(classes)


def _query_gallery_names(dataset: DatasetDict, query_split: str | None,
                         gallery_split: str | None) -> tuple[str, str] | None:
    """(query split, gallery split), checked to be two different splits of ``dataset``; None when neither is
    named."""
    if query_split is None and gallery_split is None:
        return None
    if query_split is None or gallery_split is None or query_split == gallery_split:
        raise ValueError(f"query_split={query_split!r}, gallery_split={gallery_split!r}: a query/gallery evaluation "
                         "needs both, two different splits (e.g. --query-split query --gallery-split gallery); name "
                         "both or neither")
    _split_names(dataset, [query_split, gallery_split], "query_split/gallery_split")
    return query_split, gallery_split


def _query_gallery_text(num_queries: int, num_rows: int, split_names: tuple[str, str]) -> str:
    """``"14 query rows ('query') searching 26 gallery rows ('gallery')"``."""
    query, gallery = split_names
    return f"{num_queries} query rows ({query!r}) searching {num_rows - num_queries} gallery rows ({gallery!r})"


def _num_validation_classes(num_training_half: int, fraction: float) -> int:
    """Validation classes held out of the training half: ceil(fraction * classes), at least 2 when positive,
    leaving at least 2 training classes."""
    if not 0.0 <= fraction < 1.0 or math.isnan(fraction):
        raise ValueError(f"validation_fraction must lie in [0, 1), got {fraction!r}")
    if fraction == 0:
        return 0
    count = max(MIN_RETRIEVAL_CLASSES, math.ceil(fraction * num_training_half - 1e-9))
    if num_training_half - count < MIN_RETRIEVAL_CLASSES:
        raise ValueError(
            f"validation_fraction={fraction:g} holds out {count} of the {num_training_half} training classes "
            f"(at least {MIN_RETRIEVAL_CLASSES}), leaving fewer than {MIN_RETRIEVAL_CLASSES} to train on; use a "
            f"data set with more classes or validation_fraction=0 (no model selection: the last epoch is kept)"
        )
    return count


def _hold_out_rows(rows: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(kept, held out): ceil(fraction * n_c) random rows of every class c with n_c >= 2 go to the held-out part."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1) to hold out rows, got {fraction!r}")
    labels = np.asarray(rows[LABEL_COLUMN])
    generator = np.random.default_rng([seed, 7])
    held_out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) >= 2:
            count = min(len(members) - 1, max(1, math.ceil(fraction * len(members) - 1e-9)))
            held_out.append(generator.choice(members, count, replace=False))
    mask = np.zeros(len(labels), dtype=bool)
    mask[np.concatenate(held_out)] = True
    return rows.select(np.flatnonzero(~mask)), rows.select(np.flatnonzero(mask))


def _labels(rows: Dataset) -> np.ndarray:
    return np.unique(np.asarray(rows[LABEL_COLUMN]))


def _class_names(dataset: DatasetDict) -> tuple[str, ...]:
    return tuple(next(iter(dataset.values())).features[LABEL_COLUMN].names)


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
