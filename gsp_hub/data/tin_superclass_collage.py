"""TIN-SuperCollage: the GSP paper's CIFAR-Collage experiment rebuilt on Tiny-ImageNet-200 super-classes.

Each image is a 2x2 grid of Tiny-ImageNet tiles. One tile, in a random cell, is an image of a fine class of one of
the **16 target super-classes** of :mod:`gsp_hub.data.tin_superclasses`, and the image is labelled by that
super-class. The other three cells hold images of the **4 nuisance super-classes** (19 classes), never labels. As
in the paper, training uses the first 3 fine classes of every target super-class and testing the other 2: the test
fine classes are unseen, the label space (the 16 super-classes) is the same. Batches of 16 classes x m, as in the
paper, are the sampler's business (:class:`gsp_hub.data.MPerClassBatchSampler`), not this module's.

==============  ==========================  ==================================  ===============================
``split``       label fine classes          label images (collages per class)   nuisance images (per class)
==============  ==========================  ==================================  ===============================
``train``       48 (3 per super-class)      TIN ``train`` (250)                 TIN ``train``, first 3/5 (150)
``validation``  the same 48                 TIN ``valid`` (50)                  TIN ``valid`` (50)
``test``        32 (2 per super-class)      TIN ``train`` + ``valid`` (300)     TIN ``train``, last 2/5 (100)
==============  ==========================  ==================================  ===============================

That is 12,000 / 2,400 / 9,600 collages. **Validation** is the natural reading of a shared label space: all 5 fine
classes of a target super-class are in use (3 train, 2 test), so no unseen fine class is left for it; it holds
the same super-classes and the *seen* fine classes on *unseen* images (Tiny-ImageNet's ``valid`` images of the
training classes), with nuisance images of its own. It selects the model that generalises to new images of the
training classes; it never sees a test fine class. **Test** takes every image of its 32 fine classes: no other
split uses those classes, so all 300 (250 ``train`` + 50 ``valid``) are free. **Nuisance** images are disjoint
across splits: each nuisance class's ``train`` images, in source order, are cut into the first 3/5 (train) and the
last 2/5 (test); validation takes its ``valid`` images. The three nuisance tiles of a collage are distinct images.

Tiles: ``tile_size=32`` (default) reduces every 64x64 Tiny-ImageNet image to 32x32 by area averaging (the mean of
each 2x2 pixel block, rounded half up: exactly PIL's ``Image.reduce(2)``), giving 64x64 collages as the paper's
CIFAR ones; ``tile_size=64`` keeps the source pixels, giving 128x128 collages (the second row of the experiment).

Columns: ``image`` (RGB PNG), ``label`` (``ClassLabel`` of the 16 super-class names), ``target_cell`` (0-3, the
label tile's cell, row-major: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right), ``fine_label`` (the
Tiny-ImageNet class of the label tile, the source's 200-class ``ClassLabel``) and ``tile_rows`` (4 ints per cell:
rows of Tiny-ImageNet's ``train`` split followed by its ``valid`` split, so row ``r >= len(train)`` is ``valid`` row
``r - len(train)``). The build is deterministic: the same source, arguments and ``seed`` give byte-identical PNGs.

    train = build_tin_superclass_collage("/path/to/tiny-imagenet-200", split="train")   # 12,000 64x64 rows
    test = build_tin_superclass_collage("/path/to/tiny-imagenet-200", split="test", tile_size=64)   # 128x128

All three splits as one ``DatasetDict`` (:func:`build_tin_superclass_collage_dict`), e.g. to train end to end with
``gsp-hub train --dataset FOLDER --split-protocol own`` once ``scripts/build_tin_superclass_collage.py`` has saved
it: the splits share the 16 super-class labels, so the data set's *own* splits are the protocol (the zero-shot one
would split the 16 labels in two).

    splits = build_tin_superclass_collage_dict("/path/to/tiny-imagenet-200",
                                               images_per_class={"train": 50, "validation": 20, "test": 60})
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict
from tqdm.auto import tqdm

from gsp_hub.checks import check_int
from gsp_hub.data.collage import (
    COLLAGE_GRID,
    COLLAGE_TILE_SIZE,
    collage_dataset,
    compose_grid,
    decode_tiles,
    distinct_draws,
    place_tiles,
    png_bytes,
    tin_source_rows,
)
from gsp_hub.data.loading import IMAGE_COLUMN, LABEL_COLUMN, load_image_dataset
from gsp_hub.data.tin_superclasses import (
    TIN_NUISANCE_CLASSES,
    TIN_SUPERCLASS_NAMES,
    TIN_TARGET_SUPERCLASSES,
    TIN_TEST_FINE_CLASSES,
    TIN_TRAIN_FINE_CLASSES,
)

__all__ = [
    "SUPERCOLLAGE_TILE_SIZES",
    "TIN_SUPERCOLLAGE_SPLITS",
    "SuperCollageSplit",
    "area_reduce",
    "build_tin_superclass_collage",
    "build_tin_superclass_collage_dict",
]

SUPERCOLLAGE_TILE_SIZES = (32, 64)  # 64x64 collages (the paper's) or 128x128 (Tiny-ImageNet's own resolution)
_SOURCE_SPLITS = ("train", "valid")  # tile_rows index these, concatenated in this order
_FIFTHS = 5


@dataclass(frozen=True)
class SuperCollageSplit:
    """Where a split takes its tiles: label fine classes and their Tiny-ImageNet splits, nuisance images, RNG stream.

    ``nuisance_fifths`` picks fifths of every nuisance class's images in ``nuisance_source``, in source order
    (``range(0, 3)``: the first 3/5).
    """

    fine_classes: tuple[int, ...]
    label_sources: tuple[str, ...]
    nuisance_source: str
    nuisance_fifths: range
    stream: int


TIN_SUPERCOLLAGE_SPLITS: dict[str, SuperCollageSplit] = {
    "train": SuperCollageSplit(TIN_TRAIN_FINE_CLASSES, ("train",), "train", range(0, 3), 0),
    "validation": SuperCollageSplit(TIN_TRAIN_FINE_CLASSES, ("valid",), "valid", range(0, 5), 1),
    "test": SuperCollageSplit(TIN_TEST_FINE_CLASSES, ("train", "valid"), "train", range(3, 5), 2),
}

_SUPERCLASS_OF_FINE = {fine: label for label, group in enumerate(TIN_TARGET_SUPERCLASSES) for fine in group.classes}


def build_tin_superclass_collage(
    source: str | os.PathLike[str] | DatasetDict,
    *,
    split: str = "train",
    tile_size: int = 32,
    images_per_class: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Dataset:
    """Build the TIN-SuperCollage ``split`` from Tiny-ImageNet-200 (a folder or its loaded ``DatasetDict``).

    Args:
        source: the Tiny-ImageNet-200 folder (read with :func:`load_image_dataset`) or its ``DatasetDict``; both
            splits ``train`` and ``valid`` are needed (``label`` a 200-class ``ClassLabel``, 64x64 RGB images).
        split: ``'train'``, ``'validation'`` or ``'test'`` (see the module docstring for their images).
        tile_size: 32 (64x64 collages, tiles area-reduced from 64 px) or 64 (128x128, the source pixels).
        images_per_class: collages per label *fine* class, each from a different label image (seeded choice
            without replacement); None = every image (250 train, 50 validation, 300 test).
        seed: non-negative integer; the three splits use independent streams of it.
        progress: show a progress bar while composing.

    Returns:
        ``datasets.Dataset`` of ``len(fine_classes) * images_per_class`` rows, ordered by label super-class then
        fine class, columns ``image`` (``Image``, (2 tile_size)^2 RGB PNG), ``label`` (``ClassLabel`` of the 16
        super-class names), ``target_cell`` (int 0-3), ``fine_label`` (the label tile's Tiny-ImageNet class) and
        ``tile_rows`` (4 ints: the tile of each cell as a row of ``train`` followed by ``valid``).
    """
    spec = _check_split(split)
    tile_size = _check_tile_size(tile_size)
    seed = check_int("seed", seed, minimum=0, meaning="numpy Generator seed")
    sources = _tin_sources(source)
    labels, origin = _source_labels(sources)
    label_pool = _label_pool(origin, spec)
    per_class = _check_images_per_class(images_per_class, labels[label_pool], spec, split)
    rng = np.random.default_rng([seed, spec.stream])

    targets = np.concatenate([
        rng.permutation(np.flatnonzero(label_pool & (labels == fine)))[:per_class] for fine in spec.fine_classes
    ])  # (M,) ordered by super-class, then fine class
    count = len(targets)
    pool = _nuisance_rows(labels, origin == _SOURCE_SPLITS.index(spec.nuisance_source), spec.nuisance_fifths)
    cells = rng.integers(0, COLLAGE_GRID**2, size=count)
    nuisance = pool[distinct_draws(rng, len(pool), count, COLLAGE_GRID**2 - 1)]  # (M, 3)
    tile_rows = place_tiles(targets, cells, nuisance)  # (M, 4)

    wanted = np.unique(tile_rows)
    tiles = area_reduce(_decode(sources, wanted), COLLAGE_TILE_SIZE // tile_size)  # (U, S, S, 3)
    positions = np.searchsorted(wanted, tile_rows)  # (M, 4) into tiles
    encoded = [
        {"bytes": png_bytes(compose_grid(list(tiles[row]))), "path": None}
        for row in tqdm(positions, desc=f"TIN-SuperCollage {split}", unit="img", disable=not progress)
    ]
    fine_labels = labels[targets]
    side = COLLAGE_GRID * tile_size
    description = (
        f"TIN-SuperCollage {split}: {count} {side}x{side} collages labelled by 16 Tiny-ImageNet super-classes "
        f"({len(spec.fine_classes)} fine classes from {' + '.join(spec.label_sources)}), nuisance tiles from "
        f"{len(TIN_NUISANCE_CLASSES)} classes of 4 other super-classes, tile_size={tile_size}, "
        f"images_per_class={per_class}, seed={seed}"
    )
    columns = {
        IMAGE_COLUMN: encoded,
        LABEL_COLUMN: [_SUPERCLASS_OF_FINE[fine] for fine in fine_labels.tolist()],
        "target_cell": cells.tolist(),
        "fine_label": fine_labels.tolist(),
        "tile_rows": tile_rows.tolist(),
    }
    return collage_dataset(
        columns, ClassLabel(names=list(TIN_SUPERCLASS_NAMES)), description,
        ("tin-supercollage-v1", *(sources[name]._fingerprint for name in _SOURCE_SPLITS), split, tile_size,
         per_class, seed),
        extra_features={"fine_label": sources["train"].features[LABEL_COLUMN]},
    )


def build_tin_superclass_collage_dict(
    source: str | os.PathLike[str] | DatasetDict,
    *,
    tile_size: int = 32,
    images_per_class: int | Mapping[str, int | None] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> DatasetDict:
    """The three TIN-SuperCollage splits of :func:`build_tin_superclass_collage` as one ``DatasetDict``.

    Every argument is checked (against the source's class sizes too) before any collage is composed; the source is
    read once. ``DatasetDict.save_to_disk`` of the result is a ``--dataset`` folder for ``gsp-hub train
    --split-protocol own`` (``scripts/build_tin_superclass_collage.py`` writes it atomically).

    Args:
        source, tile_size, seed, progress: as for :func:`build_tin_superclass_collage` (the same ``seed`` for every
            split; each split draws from its own stream of it).
        images_per_class: collages per label fine class: None = every image; an int for every split (at most 50,
            the validation split's size); or a mapping ``{split: int | None}`` (splits left out take every image),
            e.g. ``{"train": 50, "validation": 20, "test": 60}`` for a shorter CPU run.

    Returns:
        ``DatasetDict`` with splits ``train``, ``validation``, ``test`` (the columns of
        :func:`build_tin_superclass_collage`; (2 tile_size)^2 RGB collages).
    """
    per_split = _images_per_split(images_per_class)
    tile_size = _check_tile_size(tile_size)
    seed = check_int("seed", seed, minimum=0, meaning="numpy Generator seed")
    sources = DatasetDict(_tin_sources(source))
    labels, origin = _source_labels(sources)
    for split, count in per_split.items():
        spec = TIN_SUPERCOLLAGE_SPLITS[split]
        _check_images_per_class(count, labels[_label_pool(origin, spec)], spec, split)
    return DatasetDict({
        split: build_tin_superclass_collage(sources, split=split, tile_size=tile_size, images_per_class=count,
                                            seed=seed, progress=progress)
        for split, count in per_split.items()
    })


def area_reduce(tiles: np.ndarray, factor: int) -> np.ndarray:
    """(U, S, S, C) uint8 -> (U, S/factor, S/factor, C): the mean of every factor x factor block, rounded half up.

    The same pixels as PIL's ``Image.reduce(factor)``, for a whole stack at once; ``factor`` must divide ``S``.
    """
    if factor == 1:
        return tiles
    count, side, _, channels = tiles.shape
    reduced = side // factor
    blocks = tiles.reshape(count, reduced, factor, reduced, factor, channels).sum(axis=(2, 4), dtype=np.uint32)
    return ((blocks + factor * factor // 2) // (factor * factor)).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------- helpers
def _check_split(split: Any) -> SuperCollageSplit:
    if not isinstance(split, str) or split not in TIN_SUPERCOLLAGE_SPLITS:
        raise ValueError(f"split={split!r}: expected 'train' (the 48 training fine classes, Tiny-ImageNet train "
                         "images), 'validation' (the same classes, valid images) or 'test' (the 32 unseen fine "
                         "classes); pass e.g. split='train'")
    return TIN_SUPERCOLLAGE_SPLITS[split]


def _check_tile_size(tile_size: Any) -> int:
    is_int = isinstance(tile_size, numbers.Integral) and not isinstance(tile_size, bool)
    if not is_int or tile_size not in SUPERCOLLAGE_TILE_SIZES:
        raise ValueError(f"tile_size must be 32 (64x64 collages, the paper's size; tiles area-reduced from 64 px) or "
                         f"64 (128x128, Tiny-ImageNet's own pixels), got {tile_size!r}; pass tile_size=32 or "
                         "tile_size=64")
    return int(tile_size)


def _images_per_split(images_per_class: Any) -> dict[str, Any]:
    """``{split: images_per_class}`` for every split; a mapping's keys checked (its values are checked per split)."""
    if not isinstance(images_per_class, Mapping):
        return dict.fromkeys(TIN_SUPERCOLLAGE_SPLITS, images_per_class)
    unknown = sorted(set(images_per_class) - set(TIN_SUPERCOLLAGE_SPLITS), key=str)
    if unknown:
        raise ValueError(f"images_per_class has unknown split(s) {unknown}: expected keys among "
                         f"{list(TIN_SUPERCOLLAGE_SPLITS)} (splits left out take every image); pass e.g. "
                         "images_per_class={'train': 50, 'validation': 20, 'test': 60}")
    return {split: images_per_class.get(split) for split in TIN_SUPERCOLLAGE_SPLITS}


def _check_images_per_class(images_per_class: Any, label_pool_labels: np.ndarray, spec: SuperCollageSplit,
                            split: str) -> int:
    """Collages per label fine class: ``images_per_class`` checked against the smallest fine class of the split."""
    available = int(min((label_pool_labels == fine).sum() for fine in spec.fine_classes))
    if images_per_class is None:
        return available
    return check_int("images_per_class", images_per_class, minimum=1, maximum=available,
                     meaning=f"split={split!r}: Tiny-ImageNet {' + '.join(spec.label_sources)} has {available} "
                     "images in the smallest of its label fine classes", fix="pass a value in that range, or None "
                     "for all of them")


def _tin_sources(source: str | os.PathLike[str] | DatasetDict) -> dict[str, Dataset]:
    """Tiny-ImageNet's ``train`` and ``valid`` rows, each checked to carry the 200 classes."""
    if isinstance(source, (str, os.PathLike)):
        source = load_image_dataset(source, split=list(_SOURCE_SPLITS), verify_images=False, progress=False)
    return {name: tin_source_rows(source, name) for name in _SOURCE_SPLITS}


def _source_labels(sources: Mapping[str, Dataset]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, origin), both (R,) over the rows of ``train`` followed by ``valid``: the Tiny-ImageNet class of each
    row and the index in ``_SOURCE_SPLITS`` of its split."""
    labels = np.concatenate([np.asarray(sources[name][LABEL_COLUMN], dtype=np.int64) for name in _SOURCE_SPLITS])
    origin = np.repeat(np.arange(len(_SOURCE_SPLITS)), [len(sources[name]) for name in _SOURCE_SPLITS])
    return labels, origin


def _label_pool(origin: np.ndarray, spec: SuperCollageSplit) -> np.ndarray:
    """(R,) bool: the rows of the Tiny-ImageNet splits that ``spec`` takes its label images from."""
    return np.isin(origin, [_SOURCE_SPLITS.index(name) for name in spec.label_sources])


def _nuisance_rows(labels: np.ndarray, in_source: np.ndarray, fifths: range) -> np.ndarray:
    """Rows of the nuisance classes in ``in_source`` (bool mask): the ``fifths`` of each class, in source order."""
    chosen = []
    for fine in TIN_NUISANCE_CLASSES:
        rows = np.flatnonzero(in_source & (labels == fine))
        chosen.append(rows[len(rows) * fifths.start // _FIFTHS : len(rows) * fifths.stop // _FIFTHS])
    return np.concatenate(chosen)


def _decode(sources: dict[str, Dataset], wanted: np.ndarray) -> np.ndarray:
    """(U, 64, 64, 3) uint8 pixels of the ``wanted`` rows (ascending, of ``train`` followed by ``valid``)."""
    tiles, offset = [], 0
    for name in _SOURCE_SPLITS:
        rows = sources[name]
        mine = wanted[(wanted >= offset) & (wanted < offset + len(rows))] - offset
        decoded = decode_tiles(rows, mine)
        tiles.extend(decoded[row] for row in mine.tolist())
        offset += len(rows)
    return np.stack(tiles)
