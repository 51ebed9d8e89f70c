"""Rebuild ``gsp_hub/data/fashion_mnist_subset.npz``, the data set shipped inside the package.

Source: the original Fashion-MNIST idx files (Xiao, Rasul & Vollgraf 2017, (c) Zalando SE, MIT licence) as
installed by the Debian package ``dataset-fashion-mnist`` (``apt-get install -y dataset-fashion-mnist``)
in ``/usr/share/datasets/fashion-mnist/``.

Selection (deterministic, no random numbers): for every class 0-9, the first ``--train-per-class`` images of the
original train file and the first ``--test-per-class`` images of the original test file, in file order (the
original files are already in random order). The npz holds, as uint8 arrays:

* ``train_images`` (N_train, 28, 28), ``train_labels`` (N_train,), ``train_source_index`` (N_train,) int32 —
  row numbers in ``train-images-idx3-ubyte.gz``;
* ``test_images`` (N_test, 28, 28), ``test_labels`` (N_test,), ``test_source_index`` (N_test,) int32 —
  row numbers in ``t10k-images-idx3-ubyte.gz``.

Usage::

    python scripts/build_fmnist_subset.py                       # writes gsp_hub/data/fashion_mnist_subset.npz
    python scripts/build_fmnist_subset.py --output /tmp/x.npz   # e.g. to compare with the shipped file
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

from gsp_hub.io import atomic_file

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "gsp_hub" / "data" / "fashion_mnist_subset.npz"
MAX_BYTES = 5 * 1024 * 1024
NUM_CLASSES = 10

# idx files: (file name, header bytes to skip)
IDX_FILES = {
    "train": (("train-images-idx3-ubyte.gz", 16), ("train-labels-idx1-ubyte.gz", 8)),
    "test": (("t10k-images-idx3-ubyte.gz", 16), ("t10k-labels-idx1-ubyte.gz", 8)),
}


def read_idx(path: Path, header_bytes: int) -> np.ndarray:
    """The uint8 payload of one gzipped idx file, flat."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header_bytes)


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Row numbers of the first ``per_class`` rows of each class, in file order. labels (N,) -> (10*per_class,)."""
    picks = []
    for label in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == label)[:per_class]
        if len(rows) < per_class:
            raise ValueError(f"class {label} has only {len(rows)} images, fewer than the {per_class} asked for")
        picks.append(rows)
    return np.sort(np.concatenate(picks))


def build_subset(source_dir: Path, train_per_class: int, test_per_class: int) -> dict[str, np.ndarray]:
    """The arrays of the npz (see the module docstring)."""
    arrays: dict[str, np.ndarray] = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        (image_file, image_header), (label_file, label_header) = IDX_FILES[split]
        images = read_idx(source_dir / image_file, image_header).reshape(-1, 28, 28)
        labels = read_idx(source_dir / label_file, label_header)
        rows = first_per_class(labels, per_class)
        arrays[f"{split}_images"] = images[rows]
        arrays[f"{split}_labels"] = labels[rows]
        arrays[f"{split}_source_index"] = rows.astype(np.int32)
    return arrays


def save_npz_atomically(arrays: dict[str, np.ndarray], output: Path) -> None:
    """np.savez_compressed to a temporary file next to ``output``, then os.replace (world-readable package data)."""
    with atomic_file(output) as temporary, temporary.open("wb") as file:
        np.savez_compressed(file, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-dir", type=Path, default=DEBIAN_DIR,
                        help="folder with the four Fashion-MNIST *-ubyte.gz files (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="npz to write (default: %(default)s)")
    parser.add_argument("--train-per-class", type=int, default=600, help="images per class from the train file")
    parser.add_argument("--test-per-class", type=int, default=100, help="images per class from the test file")
    args = parser.parse_args()

    missing = [name for pair in IDX_FILES.values() for name, _ in pair if not (args.source_dir / name).is_file()]
    if missing:
        parser.error(f"missing {', '.join(missing)} in {args.source_dir}; install them with "
                     "`apt-get install -y dataset-fashion-mnist` or pass --source-dir")

    arrays = build_subset(args.source_dir, args.train_per_class, args.test_per_class)
    save_npz_atomically(arrays, args.output)
    size = args.output.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{args.output} is {size / 2**20:.2f} MiB, above the 5 MiB budget: lower the per-class counts")
    print(f"wrote {args.output}: {len(arrays['train_labels'])} train + {len(arrays['test_labels'])} test images, "
          f"{size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
