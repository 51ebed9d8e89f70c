"""TIN-Collage: the paper's CIFAR-Collage nuisance benchmark rebuilt from Tiny-ImageNet-200 tiles.

Each 128x128 image is a 2x2 grid of 64x64 Tiny-ImageNet images: one tile, in a random cell, is an image of the
label class; the three other cells hold images of the background classes 160-199, shared by every label. A
pooling that ignores the nuisance tiles should retrieve by the label tile only.

==========  ======================  ==============  ==============================
``split``   Tiny-ImageNet split     label classes   background tiles from
==========  ======================  ==============  ==============================
``train``   ``train`` (250 / cls)   0-79            ``train`` images of 160-199
``test``    ``valid`` (50 / cls)    80-159          ``valid`` images of 160-199
==========  ======================  ==============  ==============================

Zero-shot: no label class of ``test`` is seen in training; background classes are shared (they are the nuisance),
and their test tiles are other images than the training ones. The test set is used leave-one-out.

Cells are numbered row-major, ``cell = 2 * grid_row + grid_col`` (0 top-left, 3 bottom-right). The build is
deterministic: the same source, split, ``images_per_class`` and ``seed`` give byte-identical PNG images (numpy
``Generator`` streams, lossless PNG, so every tile holds the exact RGB pixels of its source image). Materialising
the 20,000 train collages takes about a minute on one core (JPEG decode + PNG encode); 4,000 test ones ~10 s.

    train = build_tin_collage("/path/to/tiny-imagenet-200", split="train", seed=0)   # 20,000 rows
    test = build_tin_collage("/path/to/tiny-imagenet-200", split="test", seed=0)     # 4,000 rows
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image, Sequence, Value
from datasets.fingerprint import Hasher
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

from gsp_hub.checks import check_int
from gsp_hub.data.loading import IMAGE_COLUMN, LABEL_COLUMN, decode_image, load_image_dataset

__all__ = [
    "COLLAGE_BACKGROUND_CLASSES",
    "COLLAGE_GRID",
    "COLLAGE_SPLITS",
    "COLLAGE_TILE_SIZE",
    "CollageSplit",
    "build_tin_collage",
    "collage_location_cells",
]

COLLAGE_TILE_SIZE = 64
COLLAGE_GRID = 2  # tiles per side: 2x2 cells
COLLAGE_BACKGROUND_CLASSES = range(160, 200)
_NUM_SOURCE_CLASSES = 200


@dataclass(frozen=True)
class CollageSplit:
    """Where a collage split takes its tiles: the Tiny-ImageNet split, the label classes, the RNG stream id."""

    source_split: str
    label_classes: range
    stream: int


COLLAGE_SPLITS: dict[str, CollageSplit] = {
    "train": CollageSplit("train", range(0, 80), 0),
    "test": CollageSplit("valid", range(80, 160), 1),
}


def build_tin_collage(
    source: str | os.PathLike[str] | DatasetDict,
    *,
    split: str = "train",
    images_per_class: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Dataset:
    """Build the TIN-Collage ``split`` from Tiny-ImageNet-200 (a folder or its loaded ``DatasetDict``).

    Args:
        source: the Tiny-ImageNet-200 folder (read with :func:`load_image_dataset`) or its ``DatasetDict``
            (splits ``train`` / ``valid``, ``label`` a 200-class ``ClassLabel``).
        split: ``'train'`` (labels 0-79, train split) or ``'test'`` (labels 80-159, valid split).
        images_per_class: collages per label class, each from a different label image (seeded choice without
            replacement); None = every image of the class (250 train, 50 test).
        seed: non-negative integer; train and test use independent streams of it.
        progress: show a progress bar while composing.

    Returns:
        ``datasets.Dataset`` of ``len(label_classes) * images_per_class`` rows, class-major, columns ``image``
        (``Image``, 128x128 RGB PNG), ``label`` (``ClassLabel`` of the 200 Tiny-ImageNet classes, the original
        ids), ``target_cell`` (int 0-3, the label tile's cell) and ``tile_rows`` (4 ints: the source-split row of
        the tile in each cell).
    """
    spec = _check_split(split)
    seed = check_int("seed", seed, minimum=0, meaning="numpy Generator seed")
    rows = tin_source_rows(source, spec.source_split)
    labels = np.asarray(rows[LABEL_COLUMN], dtype=np.int64)
    per_class = _check_images_per_class(images_per_class, labels, spec, split)
    rng = np.random.default_rng([seed, spec.stream])

    targets = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in spec.label_classes]
    )  # (M,) class-major
    count = len(targets)
    pool = np.flatnonzero((labels >= COLLAGE_BACKGROUND_CLASSES.start) & (labels < COLLAGE_BACKGROUND_CLASSES.stop))
    cells = rng.integers(0, COLLAGE_GRID**2, size=count)
    backgrounds = pool[distinct_draws(rng, len(pool), count, COLLAGE_GRID**2 - 1)]  # (M, 3)
    tile_rows = place_tiles(targets, cells, backgrounds)  # (M, 4)

    tiles = decode_tiles(rows, np.unique(tile_rows))
    encoded = [
        {"bytes": png_bytes(compose_grid([tiles[r] for r in row])), "path": None}
        for row in tqdm(tile_rows.tolist(), desc=f"TIN-Collage {split}", unit="img", disable=not progress)
    ]
    description = (
        f"TIN-Collage {split}: {count} 128x128 collages, labels {spec.label_classes.start}-"
        f"{spec.label_classes.stop - 1} from Tiny-ImageNet {spec.source_split!r}, backgrounds "
        f"{COLLAGE_BACKGROUND_CLASSES.start}-{COLLAGE_BACKGROUND_CLASSES.stop - 1}, images_per_class={per_class}, "
        f"seed={seed}"
    )
    columns = {IMAGE_COLUMN: encoded, LABEL_COLUMN: labels[targets].tolist(), "target_cell": cells.tolist(),
               "tile_rows": tile_rows.tolist()}
    return collage_dataset(columns, rows.features[LABEL_COLUMN], description,
                           ("tin-collage-v1", rows._fingerprint, split, per_class, seed))


def collage_dataset(columns: dict[str, list], label: ClassLabel, description: str, fingerprint_of: tuple,
                    extra_features: dict[str, Any] | None = None) -> Dataset:
    """A collage split as a ``Dataset``: ``columns`` image (PNG byte dicts), label (``label`` its ClassLabel),
    target_cell, any ``extra_features`` and tile_rows (4 source rows per collage). The content is a function of
    ``fingerprint_of`` (source fingerprints and the build arguments): it is hashed instead of the PNG bytes."""
    features = Features({
        IMAGE_COLUMN: Image(),
        LABEL_COLUMN: label,
        "target_cell": Value("int64"),
        **(extra_features or {}),
        "tile_rows": Sequence(Value("int64"), length=COLLAGE_GRID**2),
    })
    table = InMemoryTable.from_pydict(features.encode_batch(columns), schema=features.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=features, description=description),
                   fingerprint=Hasher.hash(fingerprint_of))


def collage_location_cells(map_size: int) -> np.ndarray:
    """Cell (0-3) of every location of a ``map_size x map_size`` map of a collage, row-major (N = map_size**2,).

    ``map_size`` must be even (each cell then covers a (map_size/2)^2 block): 4 for a 128 px EfficientNet map.
    """
    check_int("map_size", map_size, minimum=COLLAGE_GRID, meaning="the side of the feature map, e.g. 4 for 128 px at "
              "stride 32")
    if map_size % COLLAGE_GRID:
        raise ValueError(f"map_size must be an even int (so that every location lies in one of the 2x2 cells), got "
                         f"{map_size!r}; pass e.g. map_size={map_size + 1}.")
    half = map_size // COLLAGE_GRID
    grid = np.arange(map_size) // half
    return (grid[:, None] * COLLAGE_GRID + grid[None, :]).reshape(-1)


# ------------------------------------------------------------------------------------------------------- helpers
def _check_split(split: Any) -> CollageSplit:
    if not isinstance(split, str) or split not in COLLAGE_SPLITS:
        raise ValueError(f"split={split!r}: expected 'train' (labels 0-79 from the Tiny-ImageNet train split) or "
                         "'test' (labels 80-159 from the valid split); pass split='train' or split='test'")
    return COLLAGE_SPLITS[split]


def _check_images_per_class(images_per_class: Any, labels: np.ndarray, spec: CollageSplit, split: str) -> int:
    """The number of collages per label class: ``images_per_class`` checked against the smallest label class."""
    available = int(min((labels == c).sum() for c in spec.label_classes))
    if images_per_class is None:
        return available
    return check_int("images_per_class", images_per_class, minimum=1, maximum=available,
                     meaning=f"split={split!r}: the Tiny-ImageNet {spec.source_split!r} split has {available} images "
                     "in its smallest label class", fix="pass a value in that range, or None for all of them")


def tin_source_rows(source: str | os.PathLike[str] | DatasetDict, source_split: str) -> Dataset:
    """The Tiny-ImageNet ``source_split`` rows, checked to carry the 200 classes."""
    if isinstance(source, (str, os.PathLike)):
        source = load_image_dataset(source, split=source_split, verify_images=False, progress=False)
    if not isinstance(source, Mapping) or source_split not in source:
        have = list(source) if isinstance(source, Mapping) else type(source).__name__
        raise ValueError(f"source: expected the Tiny-ImageNet-200 folder or its DatasetDict with a "
                         f"{source_split!r} split, got {have}; pass the folder path (e.g. "
                         "load_image_dataset('.../tiny-imagenet-200'))")
    rows = source[source_split]
    label = rows.features.get(LABEL_COLUMN)
    if IMAGE_COLUMN not in rows.features or not isinstance(label, ClassLabel) \
            or label.num_classes != _NUM_SOURCE_CLASSES:
        raise ValueError(f"source[{source_split!r}]: expected Tiny-ImageNet-200 columns image / label with a "
                         f"{_NUM_SOURCE_CLASSES}-class ClassLabel, got features {dict(rows.features)}; load it with "
                         "gsp_hub.data.load_image_dataset")
    return rows


def distinct_draws(rng: np.random.Generator, population: int, count: int, k: int) -> np.ndarray:
    """(count, k) indices into range(population), distinct within each row (rows with repeats are redrawn)."""
    draws = rng.integers(0, population, size=(count, k))
    while True:
        ordered = np.sort(draws, axis=1)
        repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if not len(repeated):
            return draws
        draws[repeated] = rng.integers(0, population, size=(len(repeated), k))


def place_tiles(targets: np.ndarray, cells: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
    """(M, 4) source rows per cell: the target at ``cells``, the backgrounds in order in the other cells."""
    count, cells_total = len(targets), backgrounds.shape[1] + 1
    is_target = np.arange(cells_total)[None, :] == cells[:, None]  # (M, 4)
    tile_rows = np.empty((count, cells_total), dtype=np.int64)
    tile_rows[is_target] = targets
    tile_rows[~is_target] = backgrounds.reshape(-1)  # row-major fill keeps the background order per collage
    return tile_rows


def decode_tiles(rows: Dataset, wanted: np.ndarray) -> dict[int, np.ndarray]:
    """Source row -> (64, 64, 3) uint8 RGB array, for the ``wanted`` rows (decoded once each)."""
    raw = rows.select_columns([IMAGE_COLUMN]).cast_column(IMAGE_COLUMN, Image(decode=False))
    values = raw[wanted.tolist()][IMAGE_COLUMN]
    tiles = {}
    for row, value in zip(wanted.tolist(), values):
        tile = np.asarray(decode_image(value))
        if tile.shape != (COLLAGE_TILE_SIZE, COLLAGE_TILE_SIZE, 3):
            raise ValueError(f"source row {row} is {tile.shape[1]}x{tile.shape[0]}, not a "
                             f"{COLLAGE_TILE_SIZE}x{COLLAGE_TILE_SIZE} Tiny-ImageNet image")
        tiles[row] = tile
    return tiles


def compose_grid(tiles: list[np.ndarray]) -> np.ndarray:
    """Four equal (S, S) or (S, S, C) tiles in cell order (row-major) -> (2S, 2S) or (2S, 2S, C) collage."""
    rows = [np.concatenate(tiles[r * COLLAGE_GRID : (r + 1) * COLLAGE_GRID], axis=1) for r in range(COLLAGE_GRID)]
    return np.concatenate(rows, axis=0)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB uint8 array (Huffman-only deflate: fast, ~37 kB at 128x128, deterministic)."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY)
    return buffer.getvalue()
