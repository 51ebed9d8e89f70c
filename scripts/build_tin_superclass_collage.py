"""Save the three TIN-SuperCollage splits as one ``DatasetDict`` folder, the ``--dataset`` of an end-to-end run.

The splits (:func:`gsp_hub.data.build_tin_superclass_collage_dict`): ``train`` / ``validation`` / ``test``, labels
the 16 target super-classes, test on unseen fine classes. The folder is written by ``DatasetDict.save_to_disk`` into
a temp folder that replaces ``--output`` only once complete (:func:`gsp_hub.io.atomic_directory`). Train on it with
the data set's own splits (they share the label space); from scratch (test_resnet) on CPU, proxy-anchor learns where
the default MS loss stays at chance within a few epochs::

    python scripts/build_tin_superclass_collage.py --source /path/to/tiny-imagenet-200 --output data/tinsc32 \\
        --train-per-class 100 --test-per-class 60      # 4,800 / 2,400 / 1,920 collages: a short CPU run
    gsp-hub train --dataset data/tinsc32 --split-protocol own --m-per-class 4 --batch-size 64 \\
        --loss proxy_anchor --loss-lr-scale 100 --epochs 8

``--tile-size 64`` gives 128x128 collages (add ``--img-size 128`` to the training run). The per-class options
default to every image (250 / 50 / 300: 12,000 / 2,400 / 9,600 collages).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gsp_hub.data import SUPERCOLLAGE_TILE_SIZES, build_tin_superclass_collage_dict
from gsp_hub.io import atomic_directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="the Tiny-ImageNet-200 folder (train + valid)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write (replaced if it exists)")
    parser.add_argument("--tile-size", type=int, choices=SUPERCOLLAGE_TILE_SIZES, default=32,
                        help="tile side in pixels: 32 (64x64 collages, the paper's) or 64 (128x128)")
    for split, full in (("train", 250), ("validation", 50), ("test", 300)):
        parser.add_argument(f"--{split}-per-class", type=int, default=None,
                            help=f"{split} collages per label fine class (default: every image, {full})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (tiles, cells)")
    args = parser.parse_args()
    splits = build_tin_superclass_collage_dict(
        args.source, tile_size=args.tile_size, seed=args.seed, progress=True,
        images_per_class={split: getattr(args, f"{split}_per_class") for split in ("train", "validation", "test")},
    )
    with atomic_directory(args.output) as staging:
        splits.save_to_disk(staging)
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in splits.items())
    print(f"wrote {args.output}: {sizes} collages")


if __name__ == "__main__":
    main()
