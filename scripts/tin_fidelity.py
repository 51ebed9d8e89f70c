"""Plain Tiny-ImageNet-200 zero-shot fidelity rows (issue 8): frozen baseline vs GAP vs GSP vs GSP + ZSR, paired seeds.

The zoo protocol of ``train_zoo.py`` (its cached frozen EfficientNet-Lite0 maps, classes 0-89 to train, 90-99 held
out to select the epoch by MAP@R, leave-one-out test on the 5,000 valid images of classes 100-199), repeated for
several head seeds with every variant (the same seed gives every head the same batches: paired differences).
Reports the selected epoch's test metrics as mean ± std over seeds and paired differences vs the first variant,
next to the untrained frozen baseline; writes every run to a JSON file. Nothing is exported.

    python scripts/tin_fidelity.py --cache-dir /work/cache/zoo --seeds 0,1,2,3,4 --out benchmarks/tin_fidelity.json

needs the cache of ``train_zoo.py --stage cache`` with the same ``--image-size`` / ``--train-per-class``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collage_experiment import add_seeded_run_arguments, report, runs_and_variants
from train_zoo import (
    HeadRecipe,
    add_cached_split_arguments,
    add_head_recipe_arguments,
    add_source_arguments,
    frozen_baseline,
    split_features,
    train_head,
)

KEYS = ("recall@1", "recall@2", "recall@4", "map@r", "r_precision")
DEFAULT_VARIANTS = ("gap:pool=avg", "gsp:pool=gsp,zsr_weight=0", "gsp+zsr:pool=gsp,zsr_weight=0.1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    add_cached_split_arguments(parser, train_per_class=250)
    parser.add_argument("--embed-init", choices=("pca", "whiten", "random"), default="whiten")
    add_head_recipe_arguments(parser, transport_ratio=0.3, gamma=5.0, epochs=6)
    parser.set_defaults(embed_dim=512, lr=1e-4)
    add_seeded_run_arguments(parser, DEFAULT_VARIANTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    merged, variants, names = runs_and_variants(args, DEFAULT_VARIANTS)
    train, val, test = split_features(args)
    references = {"frozen GAP (1280-d, untrained)": frozen_baseline(test)}
    base = HeadRecipe(
        pool="avg", image_size=args.image_size, train_per_class=args.train_per_class, val_classes=args.val_classes,
        embed_dim=args.embed_dim, embed_init=args.embed_init, loss=args.loss, zsr_weight=0.0,
        num_prototypes=args.num_prototypes, transport_ratio=args.transport_ratio, gamma=args.gamma,
        classes_per_batch=args.classes_per_batch, images_per_class=args.images_per_class, lr=args.lr,
        weight_decay=args.weight_decay, epochs=args.epochs, seed=0,
    )
    command = "python scripts/tin_fidelity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    runs: list[dict] = list(merged)
    if not variants:
        report(runs, names, references, command, args.out, "merged runs", KEYS)
    seeds = [int(s) for s in args.seeds.split(",")] if variants else []
    for done, seed in enumerate(seeds, start=1):  # seed-major: paired after every seed
        for variant in variants:
            recipe = variant.recipe(base, seed)
            start = time.time()
            _, history, best = train_head(recipe, args.backbone_weights, train, val, test)
            print(f"== {variant.name} seed {seed}: selected epoch {best['epoch']}, R@1 {100 * best['recall@1']:.2f}"
                  f"  MAP@R {100 * best['map@r']:.2f}  ({time.time() - start:.0f} s)", flush=True)
            runs.append({"variant": variant.name, "seed": seed, "recipe": asdict(recipe), "metrics": best,
                         "history": history, "seconds": time.time() - start})
        report(runs, names, references, command, args.out, f"after {done} of {len(seeds)} seeds (+ merged runs)",
               KEYS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
