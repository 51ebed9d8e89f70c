"""Plain Tiny-ImageNet-200 zero-shot fidelity rows (issue 8): frozen baseline vs GAP vs GSP vs GSP + ZSR, paired seeds.

The zoo protocol of ``train_zoo.py`` (its cached frozen EfficientNet-Lite0 maps, classes 0-89 to train, 90-99 held
out to select the epoch by MAP@R, leave-one-out test on the 5,000 valid images of classes 100-199), repeated for
several head seeds with every variant (the same seed gives every head the same batches: paired differences).
Reports the selected epoch's test metrics as mean ± std over seeds and paired differences vs the first variant,
next to the untrained frozen baseline; writes every run to a JSON file. The heads train through the run engine
(run folders under ``<runs-dir>/tin_fidelity``); nothing is published.

    python scripts/tin_fidelity.py --cache-dir /work/cache/zoo --seeds 0,1,2,3,4 --out benchmarks/tin_fidelity.json

needs the cache of ``train_zoo.py --stage cache`` with the same ``--image-size`` / ``--train-per-class``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from gsp_hub.train.cached_head import frozen_baseline
from gsp_hub.train.commands import configure_logging
from gsp_hub.train.head_experiments import (
    add_cached_split_arguments,
    add_head_recipe_arguments,
    add_seeded_run_arguments,
    add_source_arguments,
    head_config,
    report,
    runs_and_variants,
    runs_dir,
    split_features,
    train_variant,
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
    configure_logging()
    merged, variants, names = runs_and_variants(args, DEFAULT_VARIANTS)
    train, val, test = split_features(args)
    references = {"frozen GAP (1280-d, untrained)": frozen_baseline(test)}
    base = head_config(args, runs_dir(args) / "tin_fidelity", pool="avg", tag=None, embed_init=args.embed_init,
                       zsr_weight=0.0, img_size=args.image_size)
    command = "python scripts/tin_fidelity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    runs: list[dict] = list(merged)
    if not variants:
        report(runs, names, references, command, args.out, "merged runs", KEYS)
    seeds = [int(s) for s in args.seeds.split(",")] if variants else []
    for done, seed in enumerate(seeds, start=1):  # seed-major: paired after every seed
        for variant in variants:
            run = train_variant(variant, base, seed, train, test, val)
            best = run["metrics"]
            print(f"== {variant.name} seed {seed}: selected epoch {best['epoch']:g}, R@1 {100 * best['recall@1']:.2f}"
                  f"  MAP@R {100 * best['map@r']:.2f}  ({run['seconds']:.0f} s)", flush=True)
            runs.append(run)
        report(runs, names, references, command, args.out, f"after {done} of {len(seeds)} seeds (+ merged runs)",
               KEYS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
