"""Load any image-classification data set as a ``datasets.DatasetDict`` with two columns: ``image``, ``label``.

Sources (``load_image_dataset(source)``):

* a data set embedded in the package, by name (:data:`EMBEDDED_DATASETS`): ``"fashion-collage"`` (the default,
  ``None``; :mod:`gsp_hub.data.fashion_collage`) or ``"fashion-mnist-subset"`` (:mod:`gsp_hub.data.embedded`);
* a ``datasets.Dataset`` (one ``train`` split) or ``DatasetDict`` object (Python API only);
* an ``IterableDataset`` / ``IterableDatasetDict`` object: metric learning needs every label up front (m-per-class
  batches, class splits), so it is read once, whole, into memory, with a ``UserWarning`` (a streamed Hub data set is
  downloaded whole): bound it first with ``.take(n)``;
* a ``save_to_disk`` folder (it holds ``dataset_dict.json`` or ``state.json``): ``datasets.load_from_disk``;
* another local folder: ``datasets.load_dataset(folder)``, which reads a Hub-layout repository (``README.md`` +
  ``data/*.parquet``), a plain folder of parquet files, or an image folder (``root/<class>/*.jpg`` or
  ``root/<split>/<class>/*.jpg``, the ``imagefolder`` builder);
* a ``.parquet`` file (one ``train`` split);
* a ``.csv``, ``.jsonl`` or ``.json`` (JSON lines or a list of records) table of image paths and labels: paths
  relative to the table's folder (absolute paths are kept), one ``train`` split or one split per value of a
  ``split`` column; every file must exist (checked up front, an error names the rows);
* a Hub id ``org/name`` (anything of that shape that is not an existing path): ``datasets.load_dataset(id)``, from
  the local cache when offline;
* a deep-metric-learning benchmark in its official layout, ``PREFIX:ROOT`` with PREFIX ``cub200``, ``cars196``,
  ``sop`` or ``inshop`` (:mod:`gsp_hub.data.dml_benchmarks`): its official splits, training classes first.

Whatever the source, the result is normalised: the detected (or named) image column becomes ``image``
(``datasets.Image``), the label column becomes ``label``, a ``ClassLabel`` whose ids 0..C-1 are exactly the
classes present in the loaded splits (integer or string labels are encoded in sorted order, the strings kept as the
class names), a collage's ``target_cell`` column (the label tile's cell, :data:`TARGET_CELL_COLUMN`) is kept, and
other columns are dropped. Errors about the data (missing path, no label/image column, fewer
than 2 classes, undecodable images) are raised here, before any training starts.

Undecodable images: with ``verify_images=True`` (the default) every image is decoded once, up front, with a
progress bar (one core decodes about 11,000 32x32 or 5,000 64x64 JPEGs per second, i.e. ~12 s for Tiny
ImageNet; pass ``verify_images=False`` for large trusted data).
A bad image is then a ``ValueError`` naming its split, row and file, or — with ``skip_bad_images=True`` — its
row is dropped and a ``UserWarning`` reports how many were dropped. Decoding at training time
(:mod:`gsp_hub.data.transforms`) raises a clear error for a bad image that was not verified; it never silently
drops rows, because that would break the m-per-class batch structure.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import PIL.Image
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Image,
    IterableDataset,
    IterableDatasetDict,
    Value,
    load_dataset,
    load_from_disk,
)
from tqdm.auto import tqdm

from gsp_hub.data.embedded import (
    DEFAULT_DATASET_NAME,
    FASHION_COLLAGE_NAME,
    FASHION_MNIST_SUBSET_NAME,
    load_fashion_mnist_subset,
)

__all__ = [
    "EMBEDDED_DATASETS",
    "IMAGE_COLUMN",
    "IMAGE_COLUMN_NAMES",
    "LABEL_COLUMN",
    "LABEL_COLUMN_NAMES",
    "SPLIT_COLUMN",
    "TARGET_CELL_COLUMN",
    "DatasetSource",
    "check_verification_options",
    "decode_image",
    "find_bad_images",
    "is_embedded_source",
    "load_image_dataset",
    "verify_dataset_images",
]

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"
# Column names tried, in order, when no column has the Image / ClassLabel feature (the last four are the usual names
# of a column of image file paths, as in CSV / JSON-lines tables).
IMAGE_COLUMN_NAMES: tuple[str, ...] = ("image", "img", "pixel_values", "images", "picture", "photo", "image_path",
                                       "path", "file", "filename")
LABEL_COLUMN_NAMES: tuple[str, ...] = ("label", "labels", "fine_label", "class", "class_id", "category", "target")
SPLIT_COLUMN = "split"  # in a CSV / JSON-lines table: the split of each row (else all rows are ``train``)
TARGET_CELL_COLUMN = "target_cell"  # a collage's label-tile cell (0-3, row-major): kept beside image and label

DatasetSource: TypeAlias = (
    str | os.PathLike[str] | Dataset | DatasetDict | IterableDataset | IterableDatasetDict | None
)

# Suffix of a table of image paths + labels -> the datasets builder that reads it.
_TABLE_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json"}
# A folder written by Dataset.save_to_disk holds state.json, one by DatasetDict.save_to_disk dataset_dict.json.
_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")



def _load_fashion_collage() -> DatasetDict:
    from gsp_hub.data.fashion_collage import load_fashion_collage  # that module builds on this one (via collage)

    return load_fashion_collage()


# The data sets shipped in the package, by name: a loader without arguments each (DEFAULT_DATASET_NAME for None).
EMBEDDED_DATASETS: dict[str, Callable[[], DatasetDict]] = {
    FASHION_COLLAGE_NAME: _load_fashion_collage,
    FASHION_MNIST_SUBSET_NAME: load_fashion_mnist_subset,
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_RGB_DECODER = Image(mode="RGB")


def load_image_dataset(
    source: DatasetSource = None,
    *,
    split: str | Sequence[str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    revision: str | None = None,
    verify_images: bool = True,
    skip_bad_images: bool = False,
    progress: bool = True,
) -> DatasetDict:
    """Load an image-classification data set; see the module docstring for sources and guarantees.

    Args:
        source: an embedded data set's name (``None``: ``"fashion-collage"``), a ``Dataset`` / ``DatasetDict`` (or
            iterable) object, a local folder (``save_to_disk``, Hub-layout, parquet or image folder), a ``.parquet``
            file, a ``.csv`` / ``.jsonl`` / ``.json`` table of image paths and labels, a Hub id, or a benchmark
            ``PREFIX:ROOT`` (``cub200:/data/CUB_200_2011``).
        split: keep only this split (or these splits); default all.
        image_column / label_column: use these columns instead of detecting them (for a table: the column of
            image paths).
        revision: Hub revision (branch, tag or commit); used for Hub ids only.
        verify_images: decode every image once up front (not done for the embedded data, known good).
        skip_bad_images: drop undecodable images (with a warning) instead of raising; needs ``verify_images``.
        progress: show the verification progress bar (pass ``accelerator.is_main_process``).

    Returns:
        ``DatasetDict`` of the kept splits, features ``{"image": Image(), "label": ClassLabel(names)}`` (and
        ``target_cell`` when the source has it).
    """
    check_verification_options(verify_images, skip_bad_images)
    embedded = is_embedded_source(source)
    dataset = (EMBEDDED_DATASETS[os.fspath(source or DEFAULT_DATASET_NAME)]() if embedded
               else _as_dataset_dict(source, revision, image_column))
    dataset = _select_splits(dataset, split)
    dataset = _normalise_columns(dataset, image_column, label_column)
    dataset = _encode_labels(dataset)  # class errors first: they are cheap to find
    if verify_images and not embedded:
        dataset = verify_dataset_images(dataset, skip_bad_images=skip_bad_images, progress=progress)
    return dataset


def check_verification_options(verify_images: bool, skip_bad_images: bool) -> None:
    """ValueError for ``skip_bad_images`` without ``verify_images`` (bad images are found by the verification)."""
    if skip_bad_images and not verify_images:
        raise ValueError("skip_bad_images=True needs verify_images=True: bad images are found by the verification "
                         "pass (drop --no-verify-images, or drop --skip-bad-images)")


def is_embedded_source(source: DatasetSource | None) -> bool:
    """True for a data set shipped in the package (``None`` or a name of :data:`EMBEDDED_DATASETS`): known good,
    never verified."""
    return source is None or (isinstance(source, (str, os.PathLike)) and os.fspath(source) in EMBEDDED_DATASETS)


def verify_dataset_images(dataset: DatasetDict, *, skip_bad_images: bool = False, progress: bool = True
                          ) -> DatasetDict:
    """Decode every image of a loaded ``dataset`` once: ``dataset`` itself if all decode; else a ValueError naming
    the bad files, or with ``skip_bad_images`` their rows dropped (with a warning) and the labels re-encoded (a class
    may have lost all its images)."""
    verified = _verify_images(dataset, skip_bad_images, progress)
    return verified if verified is dataset else _encode_labels(verified)


def decode_image(value: Mapping[str, Any] | PIL.Image.Image) -> PIL.Image.Image:
    """An RGB PIL image from an undecoded ``datasets.Image`` value ``{"bytes", "path"}`` (or a PIL image).

    Greyscale, palette and RGBA images are converted to RGB (alpha is dropped). EXIF orientation is applied.
    Raises ``ValueError`` naming the file when the image cannot be decoded.
    """
    if isinstance(value, PIL.Image.Image):
        return value if value.mode == "RGB" else value.convert("RGB")
    try:
        return _RGB_DECODER.decode_example(dict(value))
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, EOFError, ... for corrupt files
        where = value.get("path") or "in-memory bytes"
        raise ValueError(f"cannot decode the image {where}: {error}") from error


def find_bad_images(dataset: Dataset, *, progress: bool = True, description: str = "verify images") -> list[int]:
    """Row numbers of ``dataset`` whose ``image`` cannot be decoded (every image is decoded once)."""
    raw = dataset.select_columns([IMAGE_COLUMN]).cast_column(IMAGE_COLUMN, Image(decode=False))
    bad: list[int] = []
    with tqdm(total=len(raw), desc=description, unit="img", disable=not progress) as bar:
        for start in range(0, len(raw), 256):
            values = raw[start : start + 256][IMAGE_COLUMN]
            for row, value in enumerate(values, start=start):
                try:
                    decode_image(value)
                except ValueError:
                    bad.append(row)
            bar.update(len(values))
    return bad


def _as_dataset_dict(source: DatasetSource, revision: str | None, image_column: str | None) -> DatasetDict:
    """The splits of a data set object or path (a lone ``Dataset`` is one ``train`` split)."""
    if isinstance(source, (IterableDataset, IterableDatasetDict)):
        source = _materialise(source)
    elif isinstance(source, (str, os.PathLike)):
        source = _load_source(os.fspath(source), revision, image_column)
    elif not isinstance(source, (Dataset, DatasetDict)):
        raise TypeError(f"dataset / --dataset: got a {type(source).__name__}; expected a path or Hub id (str), a "
                        "datasets.Dataset, DatasetDict, IterableDataset or IterableDatasetDict")
    dataset = DatasetDict({"train": source}) if isinstance(source, Dataset) else source
    if not dataset:
        raise ValueError("the DatasetDict has no splits; pass one with at least a train split")
    return dataset


def _materialise(stream: IterableDataset | IterableDatasetDict) -> Dataset | DatasetDict:
    """An in-memory copy of every row of ``stream`` (images kept encoded), with a warning about its size."""
    warnings.warn(f"dataset is an {type(stream).__name__}: metric learning needs every label up front (m-per-class "
                  "batches, class splits), so every row is read now and kept in memory (a streamed Hub data set is "
                  "downloaded whole). Bound it first with .take(n), or pass a datasets.Dataset", stacklevel=4)
    if isinstance(stream, IterableDatasetDict):
        return DatasetDict({name: _materialise_split(split) for name, split in stream.items()})
    return _materialise_split(stream)


def _materialise_split(stream: IterableDataset) -> Dataset:
    rows = stream if stream.features is None else stream.decode(False)  # unknown features: nothing is decoded
    return Dataset.from_list(list(rows), features=stream.features)


def _load_source(source: str, revision: str | None, image_column: str | None) -> Dataset | DatasetDict:
    """Dispatch on the kind of source: a benchmark folder ``PREFIX:ROOT``, save_to_disk folder, other local folder,
    parquet file, table of image paths, or Hub id."""
    from gsp_hub.data.dml_benchmarks import DML_BENCHMARKS, load_dml_benchmark  # that module builds on this one

    if source.partition(":")[0] in DML_BENCHMARKS:
        return load_dml_benchmark(source)
    path = Path(source).expanduser()
    if path.is_dir() and any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS):
        return load_from_disk(str(path))
    if path.is_dir():
        try:
            return load_dataset(str(path))
        except FileNotFoundError as error:  # datasets' "no (supported) data files" errors derive from it
            raise ValueError(f"the folder {path} holds no data set datasets can read ({error}); expected a "
                             "Hub-layout folder (README.md + data/*.parquet), parquet files, or an image folder "
                             "root/<class>/<image>") from error
    if path.is_file() and path.suffix == ".parquet":
        return load_dataset("parquet", data_files=str(path))
    if path.is_file() and path.suffix in _TABLE_BUILDERS:
        return _load_image_table(path, image_column)
    if path.is_file():
        raise ValueError(f"--dataset {source!r} is a {path.suffix or 'suffix-less'} file; expected a folder, a "
                         f".parquet file, a .csv / .jsonl / .json table of image paths and labels, a Hub id "
                         f"org/name, or an embedded data set: {', '.join(EMBEDDED_DATASETS)}")
    if _HUB_ID.fullmatch(source):
        return _load_from_hub(source, revision)
    raise FileNotFoundError(f"--dataset {source!r}: no such file or folder. Give an existing folder, .parquet, .csv "
                            f"or .jsonl file, a Hub id of the form org/name, a benchmark folder as PREFIX:ROOT "
                            f"(PREFIX one of {', '.join(DML_BENCHMARKS)}), an embedded data set ("
                            f"{', '.join(EMBEDDED_DATASETS)}), or omit --dataset to use {DEFAULT_DATASET_NAME!r}")


def _load_image_table(path: Path, image_column: str | None) -> DatasetDict:
    """A CSV / JSON-lines table of image paths and labels: the paths resolved against the table's folder, checked
    to exist and cast to ``Image``; one split per value of the ``split`` column, else one ``train`` split."""
    table = load_dataset(_TABLE_BUILDERS[path.suffix], data_files=str(path), split="train")
    column = _pick_column(table.features, image_column, Image, IMAGE_COLUMN_NAMES, "image")
    folder = path.absolute().parent
    files = [None if value is None else folder / str(value) for value in table[column]]  # absolute paths: kept
    missing = [(row, file) for row, file in enumerate(files) if file is None or not file.is_file()]
    if missing:
        examples = ", ".join(f"row {row} ({file or 'empty'})" for row, file in missing[:5])
        raise FileNotFoundError(
            f"{path}: {len(missing)} of {len(files)} image files of the column {column!r} do not exist: {examples}"
            f"{' ...' if len(missing) > 5 else ''} (row 0 is the first data row). Relative paths are read from the "
            f"table's folder {folder}; fix the paths or remove those rows")
    images = table.remove_columns(column).add_column(column, [str(file) for file in files])
    images = images.cast_column(column, Image())
    if SPLIT_COLUMN not in images.column_names:
        return DatasetDict({"train": images})
    rows_of_split: dict[str, list[int]] = {}
    for row, name in enumerate(images[SPLIT_COLUMN]):
        if name is None:
            raise ValueError(f"{path}: row {row} has an empty {SPLIT_COLUMN!r}; give every row a split name (or "
                             f"drop the {SPLIT_COLUMN!r} column for one train split)")
        rows_of_split.setdefault(str(name), []).append(row)
    return DatasetDict({name: images.select(rows) for name, rows in rows_of_split.items()})


def _load_from_hub(repo_id: str, revision: str | None) -> DatasetDict:
    try:
        return load_dataset(repo_id, revision=revision)
    except ConnectionError as error:
        raise ConnectionError(
            f"could not load the Hub dataset {repo_id!r} ({error}). It is not in the local cache and the Hub is "
            f"unreachable or HF_HUB_OFFLINE=1 is set: connect once to download it, or pass a local folder "
            f"(no local path {repo_id!r} exists)"
        ) from error


def _select_splits(dataset: DatasetDict, split: str | Sequence[str] | None) -> DatasetDict:
    if split is None:
        return dataset
    wanted = [split] if isinstance(split, str) else list(split)
    unknown = [name for name in wanted if name not in dataset]
    if unknown or not wanted:
        raise ValueError(f"split={wanted!r}: unknown split(s) {unknown}; the data set has {list(dataset)}")
    return DatasetDict({name: dataset[name] for name in wanted})


def _normalise_columns(dataset: DatasetDict, image_column: str | None, label_column: str | None) -> DatasetDict:
    """Keep the image and label columns, renamed ``image`` / ``label`` (image column cast to ``Image``), and
    ``target_cell`` when present; drop the others."""
    features = next(iter(dataset.values())).features
    image_name = _pick_column(features, image_column, Image, IMAGE_COLUMN_NAMES, "image")
    label_name = _pick_column(features, label_column, ClassLabel, LABEL_COLUMN_NAMES, "label")
    if image_name == label_name:
        raise ValueError(f"the image and label columns are the same column {image_name!r}; name them with "
                         "--image-column and --label-column")
    kept = [TARGET_CELL_COLUMN] if TARGET_CELL_COLUMN in features and TARGET_CELL_COLUMN not in (
        image_name, label_name) else []
    dataset = dataset.select_columns([image_name, label_name, *kept])
    dataset = dataset.rename_columns({image_name: "__image__", label_name: "__label__"})  # no clash on swaps
    dataset = dataset.rename_columns({"__image__": IMAGE_COLUMN, "__label__": LABEL_COLUMN})
    if not isinstance(features[image_name], Image):
        dataset = dataset.cast_column(IMAGE_COLUMN, Image())  # file paths, encoded bytes or pixel arrays
    return dataset


def _pick_column(features: Mapping[str, Any], explicit: str | None, feature_type: type,
                 known_names: Iterable[str], kind: str) -> str:
    """The explicit column, else the one column of ``feature_type`` (ties broken by name), else a known name."""
    columns = {name: type(feature).__name__ for name, feature in features.items()}
    flag = f"--{kind}-column / {kind}_column="
    if explicit is not None:
        if explicit not in features:
            raise ValueError(f"{flag}{explicit!r} is not a column; the columns are {columns}")
        return explicit
    typed = [name for name, feature in features.items() if isinstance(feature, feature_type)]
    by_name = [name for name in known_names if name in features]
    preferred = [name for name in by_name if name in typed]
    if len(typed) == 1 or (typed and preferred):
        return preferred[0] if preferred else typed[0]
    if len(typed) > 1:
        raise ValueError(f"several candidate {kind} columns {typed}; choose one with {flag}<name>")
    if by_name:
        return by_name[0]
    raise ValueError(f"no {kind} column found among the columns {columns}: expected a "
                     f"{'datasets.Image' if kind == 'image' else 'ClassLabel or integer'} column or one named "
                     f"{' / '.join(known_names)}; name it with {flag}<name>")


def _encode_labels(dataset: DatasetDict) -> DatasetDict:
    """Make ``label`` a ``ClassLabel`` whose ids 0..C-1 are exactly the present classes, in sorted order."""
    feature = next(iter(dataset.values())).features[LABEL_COLUMN]
    raw = {name: np.asarray(ds[LABEL_COLUMN]) for name, ds in dataset.items()}
    present = np.unique(np.concatenate(list(raw.values())))
    if isinstance(feature, ClassLabel):
        names = [feature.names[i] for i in present]
    elif isinstance(feature, Value) and feature.dtype.startswith(("int", "uint")):
        if len(present) and present[0] < 0:
            counts = {name: int((labels < 0).sum()) for name, labels in raw.items() if (labels < 0).any()}
            raise ValueError(f"negative (unlabelled?) labels in the label column: rows per split {counts}; keep "
                             "only labelled splits with --split")
        names = [str(value) for value in present]
    elif isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        names = [str(value) for value in present]
    else:
        raise ValueError(f"the label column has type {feature}; expected ClassLabel, integers or strings (name "
                         "another column with --label-column)")
    if len(names) < 2:
        raise ValueError(f"the data set has {len(names)} class(es) {names}; metric learning needs at least 2")
    target = ClassLabel(names=names)
    if isinstance(feature, ClassLabel) and len(names) == feature.num_classes:
        return dataset  # already ids 0..C-1, all present
    if not isinstance(feature, ClassLabel) and np.array_equal(present, np.arange(len(present))):
        return dataset.cast_column(LABEL_COLUMN, target)
    return DatasetDict({
        name: ds.remove_columns(LABEL_COLUMN).add_column(
            LABEL_COLUMN, np.searchsorted(present, raw[name]).astype(np.int64), feature=target)
        for name, ds in dataset.items()
    })


def _verify_images(dataset: DatasetDict, skip_bad_images: bool, progress: bool) -> DatasetDict:
    """``dataset`` itself if every image decodes; else raise, or drop the bad rows with a warning."""
    kept = {}
    for split, rows in dataset.items():
        bad = find_bad_images(rows, progress=progress, description=f"verify images ({split})")
        if not bad:
            kept[split] = rows
            continue
        paths = rows.select_columns([IMAGE_COLUMN]).cast_column(IMAGE_COLUMN, Image(decode=False))
        examples = ", ".join(f"row {row} ({paths[row][IMAGE_COLUMN]['path'] or 'in-memory bytes'})"
                             for row in bad[:5]) + (" ..." if len(bad) > 5 else "")
        if not skip_bad_images:
            raise ValueError(f"split {split!r}: {len(bad)} of {len(rows)} images cannot be decoded: {examples}. "
                             "Repair or remove those files, or pass --skip-bad-images (skip_bad_images=True) to "
                             "drop them")
        warnings.warn(f"split {split!r}: skipped {len(bad)} of {len(rows)} images that cannot be decoded: "
                      f"{examples}", stacklevel=4)
        kept[split] = rows.select(np.setdiff1d(np.arange(len(rows)), bad))
    if all(kept[split] is dataset[split] for split in dataset):
        return dataset
    return DatasetDict(kept)
