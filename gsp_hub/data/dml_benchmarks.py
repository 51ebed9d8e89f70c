"""The four deep-metric-learning benchmarks, read from the folders their official releases unpack to.

* ``cub200:ROOT`` (:func:`load_cub200`), CUB-200-2011: ROOT is the ``CUB_200_2011`` folder (``images.txt``,
  ``image_class_labels.txt``, ``classes.txt``, ``images/``). ``train``: classes 1-100 (5,864 images), ``test``:
  classes 101-200 (5,924); names from ``classes.txt`` (``001.Black_footed_Albatross``).
* ``cars196:ROOT`` (:func:`load_cars196`), Cars196: ROOT holds the devkit's ``cars_annos.mat`` and the ``car_ims/``
  folder of ``car_ims.tgz``, as the paths in the ``.mat`` give them. ``train``: classes 1-98 (8,054 images),
  ``test``: classes 99-196 (8,131); names from its ``class_names``. Reading the ``.mat`` needs scipy.
* ``sop:ROOT`` (:func:`load_stanford_online_products`), Stanford Online Products: ROOT is the
  ``Stanford_Online_Products`` folder (``Ebay_train.txt``, ``Ebay_test.txt``, ``<category>_final/``). ``train``:
  59,551 images of 11,318 products, ``test``: 60,502 of 11,316; names are the official class ids; the loader's
  result also has the column ``super_class_id`` (1-12, the product category).
* ``inshop:ROOT`` (:func:`load_inshop`), In-shop Clothes Retrieval: ROOT holds ``Eval/list_eval_partition.txt`` (or
  ``list_eval_partition.txt``) and the ``img/`` folder of ``img.zip`` (in ``Img/`` or in ROOT). ``train``: 25,882
  images of 3,997 items; ``query``: 14,218 and ``gallery``: 12,612 images of the 3,985 other items; names are the
  item ids (``id_00000001``).

Every loader returns a ``datasets.DatasetDict`` of these splits with the columns ``image`` (``datasets.Image``, the
file path) and ``label`` (``ClassLabel`` with the names above). The class ids follow the official class order with
the training classes first, so that the zero-shot protocol (:func:`gsp_hub.data.zero_shot_split`, the default of
``gsp-hub train``) trains on exactly the official training classes and tests on the official test classes, while
its validation classes are, as for every data set, the last ``validation_fraction`` of the training classes (at
least 2; never trained on). In-shop's test classes come in two splits: name them as the query and the gallery
(``--query-split query --gallery-split gallery``) for the benchmark's query/gallery evaluation; otherwise they are
pooled and searched leave-one-out. Through :func:`gsp_hub.data.load_image_dataset` (``--dataset``) a benchmark is
named ``PREFIX:ROOT``, e.g. ``cub200:/data/CUB_200_2011``, and, as for every source there, only ``image`` and
``label`` are kept.

Checks, before any data set is built: ROOT must be the benchmark's folder (a ``FileNotFoundError`` names the files
expected there, and a subfolder that holds them), every list file must parse (errors name the file and line) and
every listed image must exist. Counts that differ from the official release (a partial copy) give one
``UserWarning`` with both numbers of each.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image, Value

from gsp_hub.data.loading import IMAGE_COLUMN, LABEL_COLUMN

__all__ = [
    "CARS196_COUNTS",
    "CUB200_COUNTS",
    "DML_BENCHMARKS",
    "INSHOP_COUNTS",
    "SOP_COUNTS",
    "OfficialCounts",
    "load_cars196",
    "load_cub200",
    "load_dml_benchmark",
    "load_inshop",
    "load_stanford_online_products",
]

PathLike = str | os.PathLike[str]
SUPER_CLASS_COLUMN = "super_class_id"
CUB200_LAST_TRAIN_CLASS = 100
CARS196_LAST_TRAIN_CLASS = 98


@dataclass(frozen=True)
class OfficialCounts:
    """The sizes of a benchmark's official release: images, classes, and images per split (in split order)."""

    images: int
    classes: int
    split_images: Mapping[str, int]


CUB200_COUNTS = OfficialCounts(11_788, 200, {"train": 5_864, "test": 5_924})
CARS196_COUNTS = OfficialCounts(16_185, 196, {"train": 8_054, "test": 8_131})
SOP_COUNTS = OfficialCounts(120_053, 22_634, {"train": 59_551, "test": 60_502})
INSHOP_COUNTS = OfficialCounts(52_712, 7_982, {"train": 25_882, "query": 14_218, "gallery": 12_612})


@dataclass(frozen=True)
class _Listing:
    """The rows of a benchmark as read from its files: image paths (relative to ``base``), class keys, splits."""

    title: str
    counts: OfficialCounts
    root: Path
    base: Path
    list_file: Path
    paths: list[str]
    class_keys: list[Any]  # the official class id (int) or item id (str) of every row
    class_names: Mapping[Any, str]
    splits: list[str]
    extra_columns: Mapping[str, tuple[list[Any], Value]] = field(default_factory=dict)  # name -> (values, feature)


def load_cub200(root: PathLike) -> DatasetDict:
    """CUB-200-2011 (Wah et al. 2011) in the zero-shot protocol: ``train`` classes 1-100, ``test`` classes 101-200.

    Args:
        root: the ``CUB_200_2011`` folder of ``CUB_200_2011.tgz`` (``images.txt``, ``image_class_labels.txt``,
            ``classes.txt``, ``images/``).

    Returns:
        ``DatasetDict(train, test)``: ``image``, ``label`` (ids 0-199 in class order, names from ``classes.txt``).
    """
    title = "CUB-200-2011"
    images_list, labels_list, classes_list = _find_files(
        root, title, "the CUB_200_2011 folder of CUB_200_2011.tgz", "images.txt", "image_class_labels.txt",
        "classes.txt")
    images = _read_list(images_list, (("image_id", int), ("path", str)))
    labels = _read_list(labels_list, (("image_id", int), ("class_id", int)))
    classes = _read_list(classes_list, (("class_id", int), ("name", str)))
    class_ids = _look_up(images["image_id"], dict(zip(labels["image_id"], labels["class_id"])),
                         f"image ids of {images_list.name}", labels_list)
    class_names = dict(zip(classes["class_id"], classes["name"]))
    _look_up(class_ids, class_names, f"class ids of {labels_list.name}", classes_list)
    return _build(_Listing(
        title, CUB200_COUNTS, images_list.parent, images_list.parent / "images", images_list, images["path"],
        class_ids, class_names, ["train" if c <= CUB200_LAST_TRAIN_CLASS else "test" for c in class_ids]))


def load_cars196(root: PathLike) -> DatasetDict:
    """Cars196 (Krause et al. 2013) in the zero-shot protocol: ``train`` classes 1-98, ``test`` classes 99-196.

    Args:
        root: the folder of the devkit's ``cars_annos.mat`` (its ``annotations`` struct array: ``relative_im_path``
            e.g. ``car_ims/000001.jpg``, ``class`` 1-196; its ``class_names``) and of the ``car_ims/`` images.

    Returns:
        ``DatasetDict(train, test)``: ``image``, ``label`` (ids 0-195 in class order, names from ``class_names``).
        All 16,185 images: the ``.mat``'s own ``test`` flag (a classification split) is not used.
    """
    title = "Cars196"
    (annotations_file,) = _find_files(root, title, "the folder of cars_annos.mat and car_ims/", "cars_annos.mat")
    paths, class_ids, names = _read_cars_annotations(annotations_file)
    class_names = {class_id: name for class_id, name in enumerate(names, start=1)}
    _look_up(class_ids, class_names, "classes of the annotations", annotations_file)
    return _build(_Listing(
        title, CARS196_COUNTS, annotations_file.parent, annotations_file.parent, annotations_file, paths, class_ids,
        class_names, ["train" if c <= CARS196_LAST_TRAIN_CLASS else "test" for c in class_ids]))


def load_stanford_online_products(root: PathLike) -> DatasetDict:
    """Stanford Online Products (Oh Song et al. 2016): ``train`` from ``Ebay_train.txt`` (classes 1-11,318),
    ``test`` from ``Ebay_test.txt`` (classes 11,319-22,634).

    Args:
        root: the ``Stanford_Online_Products`` folder (``Ebay_train.txt``, ``Ebay_test.txt``: lines
            ``image_id class_id super_class_id path`` after a header line; the ``<category>_final/`` folders).

    Returns:
        ``DatasetDict(train, test)``: ``image``, ``label`` (ids in class-id order, named by the official class id),
        ``super_class_id`` (int, 1-12).
    """
    title = "Stanford Online Products"
    files = _find_files(root, title, "the Stanford_Online_Products folder", "Ebay_train.txt", "Ebay_test.txt")
    fields = (("image_id", int), ("class_id", int), (SUPER_CLASS_COLUMN, int), ("path", str))
    paths, class_ids, super_classes, splits = [], [], [], []
    for split, list_file in zip(SOP_COUNTS.split_images, files):
        rows = _read_list(list_file, fields, skip=1)
        paths += rows["path"]
        class_ids += rows["class_id"]
        super_classes += rows[SUPER_CLASS_COLUMN]
        splits += [split] * len(rows["path"])
    return _build(_Listing(
        title, SOP_COUNTS, files[0].parent, files[0].parent, files[0], paths, class_ids,
        {class_id: str(class_id) for class_id in class_ids}, splits,
        {SUPER_CLASS_COLUMN: (super_classes, Value("int64"))}))


def load_inshop(root: PathLike) -> DatasetDict:
    """In-shop Clothes Retrieval (DeepFashion, Liu et al. 2016): the splits of ``list_eval_partition.txt``.

    Args:
        root: the ``In-shop Clothes Retrieval Benchmark`` folder: ``Eval/list_eval_partition.txt`` (or the file in
            ROOT itself: a count line, a header line, then ``image_name item_id evaluation_status``) and the
            ``img/`` folder of ``img.zip`` in ``Img/`` or in ROOT.

    Returns:
        ``DatasetDict(train, query, gallery)``: ``image``, ``label`` (the training items first, each group in item-id
        order; named by item id). The query images search the gallery images; no item is in both train and test.
    """
    title = "In-shop Clothes Retrieval"
    (list_file,) = _find_files(root, title, "the In-shop Clothes Retrieval Benchmark folder",
                               ("Eval/list_eval_partition.txt", "list_eval_partition.txt"))
    rows = _read_list(list_file, (("path", str), ("item_id", str), ("status", str)), skip=2)
    unknown = sorted(set(rows["status"]) - set(INSHOP_COUNTS.split_images))
    if unknown:
        raise ValueError(f"{title}: {list_file} has the evaluation status(es) {unknown}; expected only "
                         f"{list(INSHOP_COUNTS.split_images)} (is it the official list_eval_partition.txt?)")
    training_items = {item for item, status in zip(rows["item_id"], rows["status"]) if status == "train"}
    shared = sorted({item for item, status in zip(rows["item_id"], rows["status"]) if status != "train"}
                    & training_items)
    if shared:
        raise ValueError(f"{title}: {list_file} puts {len(shared)} item(s) in train and in query/gallery (e.g. "
                         f"{', '.join(shared[:3])}); the official partition keeps the training items apart")
    folder = Path(root).expanduser()
    first = rows["path"][0] if rows["path"] else ""
    base = next((base for base in (folder / "Img", folder) if (base / first).is_file()), folder)
    return _build(_Listing(
        title, INSHOP_COUNTS, folder, base, list_file, rows["path"], rows["item_id"],
        {item: item for item in rows["item_id"]}, rows["status"]))


DML_BENCHMARKS: dict[str, Callable[[PathLike], DatasetDict]] = {
    "cub200": load_cub200,
    "cars196": load_cars196,
    "sop": load_stanford_online_products,
    "inshop": load_inshop,
}


def load_dml_benchmark(source: str) -> DatasetDict:
    """The benchmark named ``PREFIX:ROOT`` (PREFIX a key of :data:`DML_BENCHMARKS`): ``cub200:/data/CUB_200_2011``."""
    prefix, separator, root = source.partition(":")
    if not separator or prefix not in DML_BENCHMARKS:
        raise ValueError(f"dataset {source!r}: expected PREFIX:ROOT with PREFIX one of {sorted(DML_BENCHMARKS)}, "
                         "e.g. cub200:/data/CUB_200_2011")
    if not root:
        raise ValueError(f"dataset {source!r} names no folder; pass {prefix}:/path/to/the/benchmark/folder")
    return DML_BENCHMARKS[prefix](root)


# ------------------------------------------------------------------------------------------------------- helpers
def _find_files(root: PathLike, title: str, folder_kind: str, *wanted: str | tuple[str, ...]) -> list[Path]:
    """The file of each ``wanted`` entry (a path relative to ``root``, or a tuple of alternatives: the first that
    exists). FileNotFoundError naming what is missing, and a subfolder of ``root`` that holds it, if any."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{title}: {folder} is not a folder; pass {folder_kind}")
    groups = [(entry,) if isinstance(entry, str) else entry for entry in wanted]
    found = [next((folder / name for name in group if (folder / name).is_file()), None) for group in groups]
    missing = [" or ".join(group) for group, file in zip(groups, found) if file is None]
    if not missing:
        return found  # type: ignore[return-value]
    holders = [sub for sub in sorted(folder.iterdir()) if sub.is_dir()
               and all(any((sub / name).is_file() for name in group) for group in groups)]
    hint = f"; its subfolder {holders[0]} holds them: pass that folder" if holders else ""
    raise FileNotFoundError(f"{title}: {folder} has no {', '.join(missing)}; pass {folder_kind}, which holds "
                            f"{', '.join(' or '.join(group) for group in groups)}{hint}")


def _read_list(path: Path, fields: Sequence[tuple[str, type]], *, skip: int = 0) -> dict[str, list[Any]]:
    """The columns of a whitespace-separated list file (the last field may hold spaces), after ``skip`` header
    lines; empty lines are ignored. ValueError naming the file and line for a line that does not fit ``fields``."""
    columns: dict[str, list[Any]] = {name: [] for name, _ in fields}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines[skip:], start=skip + 1):
        values = line.split(maxsplit=len(fields) - 1)
        if not values:
            continue
        try:
            if len(values) != len(fields):
                raise ValueError(f"{len(values)} field(s)")
            for (name, kind), value in zip(fields, values):
                columns[name].append(kind(value))
        except ValueError as error:
            expected = " ".join(f"{name}({kind.__name__})" for name, kind in fields)
            raise ValueError(f"{path}, line {number}: {line!r} does not read as '{expected}' ({error}); is it the "
                             "official file, unmodified?") from error
    return columns


def _look_up(keys: Sequence[Any], table: Mapping[Any, Any], what: str, source: Path) -> list[Any]:
    """``table[key]`` for every key; ValueError naming the keys ``source`` (the file of ``table``) lacks."""
    missing = sorted(set(keys) - set(table))
    if missing:
        raise ValueError(f"{len(missing)} {what} have no entry in {source}: {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}; are both files from the same release?")
    return [table[key] for key in keys]


def _read_cars_annotations(path: Path) -> tuple[list[str], list[int], list[str]]:
    """(image paths, class ids 1-196, class names) of the devkit's ``cars_annos.mat``."""
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError as error:
        raise ImportError(f"reading Cars196's {path.name} needs scipy, which is not installed: pip install scipy"
                          ) from error
    try:
        mat = loadmat(str(path), squeeze_me=True)
    except (MatReadError, ValueError, IndexError) as error:  # IndexError: a file shorter than a MATLAB header
        raise ValueError(f"Cars196: cannot read {path} as a MATLAB file ({error}); download the devkit's "
                         "cars_annos.mat again") from error
    try:
        annotations = mat["annotations"].reshape(-1)
        paths = [str(value) for value in annotations["relative_im_path"]]
        class_ids = [int(value) for value in annotations["class"]]
        names = [str(value) for value in mat["class_names"].reshape(-1)]
    except (KeyError, ValueError, AttributeError) as error:
        raise ValueError(f"Cars196: {path} is not the devkit's cars_annos.mat: expected a struct array "
                         f"'annotations' with the fields relative_im_path and class, and a cell array 'class_names' "
                         f"(found {sorted(key for key in mat if not key.startswith('__'))}; {error!r})") from error
    return paths, class_ids, names


def _build(listing: _Listing) -> DatasetDict:
    """The ``DatasetDict`` of a listing: images checked to exist, classes ordered by the first split that holds
    them (training classes first) then by key, the count warning."""
    files = [listing.base / path for path in listing.paths]
    missing = [file for file in files if not file.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{listing.title}: {len(missing)} of {len(files)} images listed in {listing.list_file} do not exist, "
            f"e.g. {', '.join(map(str, missing[:3]))}; extract the release's images under {listing.root}")
    split_order = list(listing.counts.split_images)
    first_split: dict[Any, int] = {}
    for key, split in zip(listing.class_keys, listing.splits):
        first_split[key] = min(first_split.get(key, len(split_order)), split_order.index(split))
    ordered = sorted(first_split, key=lambda key: (first_split[key], key))
    label_of = {key: label for label, key in enumerate(ordered)}
    extra = listing.extra_columns
    features = Features({IMAGE_COLUMN: Image(),
                         LABEL_COLUMN: ClassLabel(names=[listing.class_names[key] for key in ordered]),
                         **{name: feature for name, (_, feature) in extra.items()}})
    info = DatasetInfo(description=f"{listing.title} read from {listing.root} (gsp_hub.data.dml_benchmarks)",
                       features=features)
    splits = {}
    for split in split_order:
        rows = [row for row, name in enumerate(listing.splits) if name == split]
        if not rows:
            raise ValueError(f"{listing.title}: no image of {listing.list_file} is in the {split!r} split; is it "
                             "the official file?")
        columns = {IMAGE_COLUMN: [str(files[row]) for row in rows],
                   LABEL_COLUMN: [label_of[listing.class_keys[row]] for row in rows],
                   **{name: [values[row] for row in rows] for name, (values, _) in extra.items()}}
        splits[split] = Dataset.from_dict(columns, features=features, info=info, split=split)
    _warn_about_counts(listing, {split: len(rows) for split, rows in splits.items()}, len(ordered))
    return DatasetDict(splits)


def _warn_about_counts(listing: _Listing, split_images: Mapping[str, int], num_classes: int) -> None:
    """One UserWarning listing every count that differs from the official release (found and official)."""
    official = listing.counts
    found = {"images": (sum(split_images.values()), official.images), "classes": (num_classes, official.classes),
             **{f"{split} images": (split_images[split], count) for split, count in official.split_images.items()}}
    differing = [f"{name} {have:,} (official {want:,})" for name, (have, want) in found.items() if have != want]
    if differing:
        warnings.warn(f"{listing.title} at {listing.root}: {', '.join(differing)}: not the full official release, "
                      "so the metrics are not comparable with published ones", UserWarning, stacklevel=3)
