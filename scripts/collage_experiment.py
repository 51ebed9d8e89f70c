"""TIN-Collage: does GSP learn to pool the label tile and ignore the three nuisance tiles? (issues 8, 21)

Two protocols (``--protocol``):

- ``tin-collage`` (default, :func:`gsp_hub.data.build_tin_collage`): 128x128 collages of four Tiny-ImageNet tiles,
  one of the label class in a random cell, three of the background classes 160-199; train on labels 0-79 (train
  split), test leave-one-out on labels 80-159 (valid split); no validation split (``--val-classes`` holds out train
  labels instead).
- ``superclass`` (:func:`gsp_hub.data.build_tin_superclass_collage`, the paper's CIFAR-Collage rebuilt on
  Tiny-ImageNet): labels = 16 target super-classes, nuisance tiles from 4 nuisance super-classes; train on 48 fine
  classes (12,000 collages), **validation** = the same fine classes on other images (2,400; chooses each head's
  epoch by MAP@R and, by its MAP@R, the variants), **test** = 32 unseen fine classes (9,600; reported, never chosen
  on). ``--tile-size 32`` (the paper's 64x64 collages) or ``64`` (128x128). Both are fed to the backbone at 128 px:
  Lite0's stride 32 then gives a 4x4 map, each cell 2x2 locations, as in ``tin-collage``; the 64 px collages of
  32 px tiles are upsampled (bicubic), since at 64 px the map would be 2x2, one location per cell, too coarse for
  a transport ratio below the label tile's 1/4 to pick a part of it.

1. Cache: the frozen ImageNet EfficientNet-Lite0 maps (B, 16, 1280) of every collage, once, in fp16 safetensors
   chunks (:func:`gsp_hub.train.feature_cache.cache_maps`).
2. Heads on the cached maps, trained by the run engine (:func:`gsp_hub.train.cached_head.train_cached_head`: fresh
   per-location embedding, PCA init, MultiSimilarity, m-per-class batches, AdamW; run folders under
   ``<runs-dir>/collage`` or ``<runs-dir>/supercollage_tile<size>``), one run per (variant, seed), the same seeds
   for every variant (paired), a fixed number of epochs; without a validation split no model selection (the last
   epoch is reported). Default variants: GAP, GSP (mu 0.25, gamma 20), GSP + ZSR; ``--variant`` adds or replaces
   them (e.g. ``gmp:pool=gsp,gsp_head=gmp``, ``gsp+max:pool=gsp,add_max_pool=true``,
   ``zsr-unit:pool=gsp,zsr_weight=0.1,zsr_class_embedding_init=unit``, the PyTorch port's prototypes picked among
   a proxy loss's proxies ``wk:pool=gsp,loss=proxy_anchor,loss_lr_scale=100,num_prototypes=16,gsp_init=weights_kcenter``).
   With a validation split (``superclass``) the engine exports each head's best epoch by validation MAP@R.
3. Report: R@1/2/4, MAP@R, R-precision on the test collages (mean +- std over seeds, paired differences vs GAP),
   the GSP pooling-weight mass on the target tile (uniform = 0.25), the frozen 1280-d GAP baseline and the oracle
   (the frozen map averaged over the 4 locations of the target tile). Prints a markdown table, writes JSON (each
   run's metrics also hold ``validation/...`` scores and ``validation/target_mass``, where there is a validation
   split).

    python scripts/collage_experiment.py --cache-dir /work/cache/collage --out benchmarks/collage_results.json
    python scripts/collage_experiment.py --protocol superclass --tile-size 32 --cache-dir /work/cache/collage \
        --out benchmarks/tin_superclass_collage.json

caches (about 5 min at 1 thread on a busy 2-core machine: 20,000 train + 4,000 test collages) and trains the
default variants (1.5-3 min per head). ``--variant NAME:field=value,...`` trains other recipes (CachedHeadConfig
options),
``--val-classes N`` measures on held-out train labels instead of the test set (to choose variants honestly), and
``--merge old.json`` (without ``--variant``) reports earlier runs together, paired by seed.
``--finetune-from-block 5`` caches the maps at the input of EfficientNet-Lite0's block 5 (8x8x112) instead and
trains the rest of the backbone (blocks 5-6, conv_head; BN statistics frozen; lr x ``--backbone-lr-scale``) with
every head: the cheapest backbone fine-tuning (0.5 s per batch of 64 at 1 thread), same protocol otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset

import gsp_hub
from gsp_hub.data import (
    build_tin_collage,
    build_tin_superclass_collage,
    load_image_dataset,
)
from gsp_hub.metrics import retrieval_metrics
from gsp_hub.train.baselines import target_cell_locations, target_cell_mass
from gsp_hub.train.cached_head import CachedHeadConfig, CachedHeadNetwork, FeatureSplit, build_model
from gsp_hub.train.commands import configure_logging
from gsp_hub.train.feature_cache import CHUNK_SIZE, cache_maps, load_cache
from gsp_hub.train.head_experiments import (
    Variant,
    add_head_recipe_arguments,
    add_seeded_run_arguments,
    add_source_arguments,
    head_config,
    report,
    runs_and_variants,
    runs_dir,
    train_variant,
)

IMAGE_SIZE = 128
REPORTED = ("recall@1", "recall@2", "recall@4", "map@r", "r_precision", "target_mass")
DEFAULT_VARIANTS = ("gap:pool=avg", "gsp:pool=gsp,zsr_weight=0", "gsp+zsr:pool=gsp,zsr_weight=0.1")


# ---------------------------------------------------------------------------------------------------------- cache
def build_collage(args: argparse.Namespace, split: str, per_class: int | None) -> Dataset:
    """The ``--protocol`` collages of ``split`` ('train', 'validation' (superclass only) or 'test')."""
    source = load_image_dataset(args.data_dir, verify_images=False, progress=False)
    if args.protocol == "superclass":
        return build_tin_superclass_collage(source, split=split, tile_size=args.tile_size,
                                            images_per_class=per_class, seed=args.collage_seed, progress=True)
    return build_tin_collage(source, split=split, images_per_class=per_class, seed=args.collage_seed, progress=True)


def protocol_name(args: argparse.Namespace) -> str:
    """The folder name of the ``--protocol`` caches and runs: ``collage`` or ``supercollage_tile<size>``."""
    return "collage" if args.protocol == "tin-collage" else f"supercollage_tile{args.tile_size}"


def cached_split(args: argparse.Namespace, split: str, per_class: int | None) -> tuple[FeatureSplit, torch.Tensor]:
    """Cached frozen maps of a collage split, computed on the first call: (FeatureSplit (M, 16, 1280) fp16 /
    labels (M,), target_cell (M,)); rows in the builder's order. With ``--finetune-from-block N`` the maps are the
    input of backbone block N instead (M, C, h, w)."""
    collage = build_collage(args, split, per_class)
    tag = f"{split}_seed{args.collage_seed}_n{per_class or 'all'}" + (
        f"_block{args.finetune_from_block}" if args.finetune_from_block else "")
    folder = Path(args.cache_dir) / f"{protocol_name(args)}_lite0_{IMAGE_SIZE}px" / tag
    rows = np.arange(len(collage))
    start = time.time()
    cache_maps(collage, rows, folder, IMAGE_SIZE, args.backbone_weights, f"cache collage {split}",
               from_block=args.finetune_from_block)
    print(f"cached collage {split} ({len(collage)} images) in {folder} ({time.time() - start:.0f} s)", flush=True)
    cached = load_cache(folder, num_chunks=math.ceil(len(collage) / CHUNK_SIZE))
    if not torch.equal(cached.labels, torch.as_tensor(collage["label"])):
        raise RuntimeError(f"{folder} holds maps of other collages (labels differ); delete it and re-run")
    return cached, torch.as_tensor(collage["target_cell"])


# -------------------------------------------------------------------------------------------------------- measure
@torch.no_grad()
def target_mass(network: CachedHeadNetwork, split: FeatureSplit, target_cell: torch.Tensor,
                batch_size: int = 500) -> float:
    """Mean pooling-weight mass on the target tile over the split (GSP weights (M, N); 0.25 for GAP = uniform)."""
    weights = []
    for features in split.features.split(batch_size):
        tokens = network.local_features(features)
        _, aux = network.model.forward_head(tokens, pre_logits=True, return_aux=True)
        if aux is None:  # uniform pooling: the tile's share of the locations
            return target_cell_locations(target_cell[:1], tokens.shape[1]).float().mean().item()
        weights.append(aux.weights)
    return target_cell_mass(torch.cat(weights), target_cell)


@torch.no_grad()
def frozen_references(test: FeatureSplit, target_cell: torch.Tensor,
                      frozen: CachedHeadNetwork) -> dict[str, dict[str, float]]:
    """Untrained references on the 1280-d frozen map (of the untrained ``frozen`` network's backbone, when the cache
    holds earlier maps): GAP over all 16 locations, and the oracle (target tile only)."""
    features = torch.cat([frozen.local_features(part) for part in test.features.split(500)])  # (M, N, 1280)
    mask = target_cell_locations(target_cell, features.shape[1]).float()
    oracle = (features * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return {
        "frozen GAP (1280-d)": {**retrieval_metrics(features.mean(1), test.labels), "target_mass": 0.25},
        "oracle: target tile only (1280-d)": {**retrieval_metrics(oracle, test.labels), "target_mass": 1.0},
    }


def run(variant: Variant, base: CachedHeadConfig, seed: int, train: FeatureSplit, test: FeatureSplit,
        target_cell: torch.Tensor, validation: tuple[FeatureSplit, torch.Tensor] | None) -> dict[str, Any]:
    """Train one head and measure it: test metrics + target-tile mass + history. Without ``validation`` (maps,
    target cells) the last epoch is kept, with it the best validation MAP@R (and its target mass is recorded)."""
    record = train_variant(variant, base, seed, train, test, None if validation is None else validation[0])
    network = CachedHeadNetwork(gsp_hub.load_model(record["model_dir"]), base.finetune_from_block)
    metrics = record["metrics"] = {**record["metrics"], "target_mass": target_mass(network, test, target_cell)}
    if validation is not None:
        metrics["validation/target_mass"] = target_mass(network, *validation)
    chosen_on = "" if validation is None else (f"validation MAP@R {100 * metrics['validation/map@r']:.2f} mass "
                                               f"{metrics['validation/target_mass']:.3f};  ")
    print(f"== {variant.name} seed {seed}: {chosen_on}R@1 {100 * metrics['recall@1']:.2f}  MAP@R "
          f"{100 * metrics['map@r']:.2f}  target mass {metrics['target_mass']:.3f}  ({record['seconds']:.0f} s)",
          flush=True)
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    parser.add_argument("--protocol", choices=("tin-collage", "superclass"), default="tin-collage",
                        help="tin-collage: fine labels 0-79 / 80-159, no validation split; superclass: 16 "
                             "super-class labels, train / validation (seen fine classes, other images) / test "
                             "(unseen fine classes)")
    parser.add_argument("--tile-size", type=int, choices=(32, 64), default=None,
                        help="superclass only: 32 (64x64 collages, upsampled to 128 px) or 64 (128x128); default 32")
    parser.add_argument("--stage", choices=("cache", "all"), default="all")
    parser.add_argument("--collage-seed", type=int, default=0, help="seed of the collage builder")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="train collages per label class (default all: 250)")
    parser.add_argument("--test-per-class", type=int, default=None,
                        help="test collages per label class (default all: 50; superclass: 300 per fine class)")
    add_head_recipe_arguments(parser, transport_ratio=0.25, gamma=20.0, epochs=5)
    parser.add_argument("--val-classes", type=int, default=0,
                        help="tin-collage only; N > 0: train on train labels 0..79-N and measure on the train "
                             "collages of the last N labels instead of the test set (to choose variants without "
                             "looking at the test set)")
    parser.add_argument("--finetune-from-block", type=int, default=0,
                        help="N > 0: fine-tune EfficientNet-Lite0's blocks N.. (of 0-6), conv_head and bn2 with the "
                             "head, on maps cached at the input of block N (5: the stride-32 stages, 8x8 -> 4x4)")
    parser.add_argument("--backbone-lr-scale", type=float, default=0.1,
                        help="with --finetune-from-block: the backbone layers learn at --lr x this")
    add_seeded_run_arguments(parser, DEFAULT_VARIANTS)
    args = parser.parse_args(argv)
    if args.protocol == "superclass":
        args.tile_size = args.tile_size or 32
        if args.val_classes:
            parser.error(f"--val-classes {args.val_classes}: the superclass protocol has its own validation split "
                         "(the training fine classes on other images); drop --val-classes")
    elif args.tile_size is not None:
        parser.error(f"--tile-size {args.tile_size}: only the superclass protocol has a tile size (tin-collage "
                     "tiles are 64 px); add --protocol superclass or drop --tile-size")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    configure_logging()
    merged, variants, names = runs_and_variants(args, DEFAULT_VARIANTS)
    seeds = [int(s) for s in args.seeds.split(",")]
    test, target_cell = cached_split(args, "test", args.test_per_class)
    need_train = bool(variants) or args.stage == "cache"
    train, train_cells = cached_split(args, "train", args.train_per_class) if need_train else (test, target_cell)
    validation = (cached_split(args, "validation", None) if need_train and args.protocol == "superclass"
                  else None)
    if args.stage == "cache":
        return 0
    if args.val_classes:  # choose variants without the test set: hold out the last train classes
        if not variants:
            raise ValueError("--val-classes needs --variant (it trains on part of the train collages)")
        held = train.labels >= 80 - args.val_classes
        test, target_cell = FeatureSplit(train.features[held], train.labels[held]), train_cells[held]
        train = FeatureSplit(train.features[~held], train.labels[~held])
    base = head_config(args, runs_dir(args) / protocol_name(args), pool="avg", tag=None, embed_init="pca",
                       zsr_weight=0.0, seed=seeds[0], img_size=IMAGE_SIZE, finetune_from_block=args.finetune_from_block,
                       backbone_lr_scale=args.backbone_lr_scale)
    references = frozen_references(test, target_cell, CachedHeadNetwork(build_model(base), base.finetune_from_block))
    command = "python scripts/collage_experiment.py " + " ".join(argv if argv is not None else sys.argv[1:])
    runs: list[dict] = list(merged)
    if not variants:
        report(runs, names, references, command, args.out, "merged runs", REPORTED)
    for done, seed in enumerate(seeds if variants else [], start=1):  # seed-major: paired after every seed
        for variant in variants:
            runs.append(run(variant, base, seed, train, test, target_cell, validation))
        report(runs, names, references, command, args.out, f"after {done} of {len(seeds)} seeds (+ merged runs)",
               REPORTED)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
