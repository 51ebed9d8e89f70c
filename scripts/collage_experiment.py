"""TIN-Collage: does GSP learn to pool the label tile and ignore the three nuisance tiles? (issue 8)

Protocol (:func:`gsp_hub.data.build_tin_collage`): 128x128 collages of four Tiny-ImageNet tiles, one of the label
class in a random cell, three of the background classes 160-199; train on labels 0-79 (train split), test
leave-one-out on labels 80-159 (valid split).

1. Cache: the frozen ImageNet EfficientNet-Lite0 maps (B, 16, 1280) of every collage, once, in fp16 safetensors
   chunks (``train_zoo.cache_maps``).
2. Heads on the cached maps with ``train_zoo.train_head`` (fresh per-location embedding, PCA init, MultiSimilarity,
   m-per-class batches, AdamW), one run per (variant, seed), the same seeds for every variant (paired), a fixed
   number of epochs and no model selection (the last epoch is reported). Default variants: GAP, GSP (mu 0.25,
   gamma 20), GSP + ZSR; ``--variant`` adds or replaces them.
3. Report: R@1/2/4, MAP@R, R-precision on the test collages (mean +- std over seeds, paired differences vs GAP),
   the GSP pooling-weight mass on the target tile (uniform = 0.25), the frozen 1280-d GAP baseline and the oracle
   (the frozen map averaged over the 4 locations of the target tile). Prints a markdown table, writes JSON.

    python scripts/collage_experiment.py --cache-dir /work/cache/collage --out benchmarks/collage_results.json

caches (about 5 min at 1 thread on a busy 2-core machine: 20,000 train + 4,000 test collages) and trains the
default variants (1.5-3 min per head). ``--variant NAME:field=value,...`` trains other recipes (HeadRecipe fields),
``--val-classes N`` measures on held-out train labels instead of the test set (to choose variants honestly), and
``--merge old.json`` (without ``--variant``) reports earlier runs together, paired by seed.
``--finetune-from-block 5`` caches the maps at the input of EfficientNet-Lite0's block 5 (8x8x112) instead and
trains the rest of the backbone (blocks 5-6, conv_head; BN statistics frozen; lr x ``--backbone-lr-scale``) with
every head: the cheapest backbone fine-tuning (0.5 s per batch of 64 at 1 thread), same protocol otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from gsp_hub.data import build_tin_collage, collage_location_cells, load_image_dataset
from gsp_hub.io import write_json
from gsp_hub.metrics import retrieval_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_zoo import (
    CHUNK_SIZE,
    FeatureSplit,
    HeadRecipe,
    add_head_recipe_arguments,
    add_source_arguments,
    build_model,
    cache_maps,
    load_cache,
    local_features,
    train_head,
)

IMAGE_SIZE = 128
REPORTED = ("recall@1", "recall@2", "recall@4", "map@r", "r_precision", "target_mass")
HEADERS = {"recall@1": "R@1", "recall@2": "R@2", "recall@4": "R@4", "map@r": "MAP@R", "r_precision": "R-prec",
           "target_mass": "target-tile weight"}
DEFAULT_VARIANTS = ("gap:pool=avg", "gsp:pool=gsp,zsr_weight=0", "gsp+zsr:pool=gsp,zsr_weight=0.1")


@dataclass(frozen=True)
class Variant:
    """A named head recipe: the base recipe with some fields overridden (``name:field=value,...``)."""

    name: str
    overrides: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, _, body = text.partition(":")
        items = [item.split("=", 1) for item in body.split(",") if item]
        overrides = {item[0]: item[1] for item in items if len(item) == 2 and item[1]}
        known = {f.name for f in fields(HeadRecipe)}
        unknown = sorted(set(overrides) - known)
        if not name or unknown or len(overrides) != len(items):
            raise ValueError(f"--variant {text!r}: expected NAME:field=value,... with fields from {sorted(known)}; "
                             f"unknown {unknown}. Example: --variant 'gsp+zsr0.3:pool=gsp,zsr_weight=0.3'")
        return cls(name, overrides)

    def recipe(self, base: HeadRecipe, seed: int) -> HeadRecipe:
        """``base`` with the overrides (cast to the field types) and ``seed``."""
        types = {f.name: type(getattr(base, f.name)) for f in fields(HeadRecipe)}
        return replace(base, seed=seed, **{k: types[k](v) for k, v in self.overrides.items()})


# ---------------------------------------------------------------------------------------------------------- cache
def cached_split(args: argparse.Namespace, split: str, per_class: int | None) -> tuple[FeatureSplit, torch.Tensor]:
    """Cached frozen maps of a collage split, computed on the first call: (FeatureSplit (M, 16, 1280) fp16 /
    labels (M,), target_cell (M,)); rows in the builder's order. With ``--finetune-from-block N`` the maps are the
    input of backbone block N instead (M, C, h, w)."""
    source = load_image_dataset(args.data_dir, verify_images=False, progress=False)
    collage = build_tin_collage(source, split=split, images_per_class=per_class, seed=args.collage_seed,
                                progress=True)
    tag = f"{split}_seed{args.collage_seed}_n{per_class or 'all'}" + (
        f"_block{args.finetune_from_block}" if args.finetune_from_block else "")
    folder = Path(args.cache_dir) / f"collage_lite0_{IMAGE_SIZE}px" / tag
    rows = np.arange(len(collage))
    start = time.time()
    cache_maps(collage, rows, folder, IMAGE_SIZE, args.backbone_weights, f"cache collage {split}",
               from_block=args.finetune_from_block)
    print(f"cached collage {split} ({len(collage)} images) in {folder} ({time.time() - start:.0f} s)", flush=True)
    features, labels = load_cache(folder, num_chunks=math.ceil(len(collage) / CHUNK_SIZE))
    if not torch.equal(labels, torch.as_tensor(collage["label"])):
        raise RuntimeError(f"{folder} holds maps of other collages (labels differ); delete it and re-run")
    return FeatureSplit(features, labels), torch.as_tensor(collage["target_cell"])


# -------------------------------------------------------------------------------------------------------- measure
def target_cell_mask(target_cell: torch.Tensor, num_locations: int) -> torch.Tensor:
    """(M,) target cells -> (M, N) bool, True at the map locations inside the target tile."""
    cells = torch.as_tensor(collage_location_cells(math.isqrt(num_locations)))
    return cells[None, :] == target_cell[:, None]


@torch.no_grad()
def target_mass(model: torch.nn.Module, split: FeatureSplit, target_cell: torch.Tensor,
                batch_size: int = 500) -> float:
    """Mean pooling-weight mass on the target tile over the split (GSP weights (M, N); 0.25 for GAP = uniform)."""
    masses = []
    for features, cells in zip(split.features.split(batch_size), target_cell.split(batch_size)):
        tokens = local_features(model, features)
        part = target_cell_mask(cells, tokens.shape[1])
        _, aux = model.forward_head(tokens, pre_logits=True, return_aux=True)
        if aux is None:
            return part.float().mean().item()  # uniform pooling: the tile's share of the locations
        masses.append((aux.weights * part).sum(1))
    return torch.cat(masses).mean().item()


@torch.no_grad()
def frozen_references(test: FeatureSplit, target_cell: torch.Tensor,
                      frozen: torch.nn.Module) -> dict[str, dict[str, float]]:
    """Untrained references on the 1280-d frozen map (of the untrained ``frozen`` model's backbone, when the cache
    holds earlier maps): GAP over all 16 locations, and the oracle (target tile only)."""
    features = torch.cat([local_features(frozen, part) for part in test.features.split(500)])  # (M, N, 1280)
    mask = target_cell_mask(target_cell, features.shape[1]).float()
    oracle = (features * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return {
        "frozen GAP (1280-d)": {**retrieval_metrics(features.mean(1), test.labels), "target_mass": 0.25},
        "oracle: target tile only (1280-d)": {**retrieval_metrics(oracle, test.labels), "target_mass": 1.0},
    }


def run(variant: Variant, base: HeadRecipe, seed: int, backbone_weights: str | None, train: FeatureSplit,
        test: FeatureSplit, target_cell: torch.Tensor) -> dict[str, object]:
    """Train one head (no selection: last epoch) and measure it: test metrics + target-tile mass + history."""
    recipe = variant.recipe(base, seed)
    start = time.time()
    model, history, last = train_head(recipe, backbone_weights, train, None, test)
    metrics = {**{k: v for k, v in last.items() if k != "epoch"}, "target_mass": target_mass(model, test, target_cell)}
    print(f"== {variant.name} seed {seed}: R@1 {100 * metrics['recall@1']:.2f}  MAP@R {100 * metrics['map@r']:.2f}  "
          f"target mass {metrics['target_mass']:.3f}  ({time.time() - start:.0f} s)", flush=True)
    return {"variant": variant.name, "seed": seed, "recipe": asdict(recipe), "metrics": metrics, "history": history,
            "seconds": time.time() - start}


# --------------------------------------------------------------------------------------------------------- report
def summarise(runs: list[dict], variants: list[str], reference: str,
              keys: tuple[str, ...] = REPORTED) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and metric of ``keys``: mean, std (ddof 1) over seeds, and paired difference vs ``reference``
    (mean, std, wins = seeds where the variant is higher)."""
    by = {(r["variant"], r["seed"]): r["metrics"] for r in runs}
    seeds = sorted(set.intersection(*({r["seed"] for r in runs if r["variant"] == name} for name in variants)))
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in variants:
        summary[name] = {}
        for key in keys:
            values = np.array([by[(name, s)][key] for s in seeds])
            diffs = values - np.array([by[(reference, s)][key] for s in seeds])
            summary[name][key] = {
                "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(seeds) > 1 else 0.0,
                "diff_mean": float(diffs.mean()), "diff_std": float(diffs.std(ddof=1)) if len(seeds) > 1 else 0.0,
                "wins": int((diffs > 0).sum()), "n": len(seeds),
            }
    return summary


def markdown(summary: dict, references: dict[str, dict[str, float]], reference: str,
             keys: tuple[str, ...] = REPORTED) -> str:
    """The results table: metrics in %, mean ± std over seeds; paired R@1 / MAP@R differences vs ``reference``."""
    head = ["head"] + [HEADERS[k] for k in keys] + [f"ΔR@1 vs {reference} (wins)", f"ΔMAP@R vs {reference}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, stats in summary.items():
        cells = [f"{stats[k]['mean']:.3f} ± {stats[k]['std']:.3f}" if k == "target_mass"
                 else f"{100 * stats[k]['mean']:.2f} ± {100 * stats[k]['std']:.2f}" for k in keys]
        r1, mapr = stats["recall@1"], stats["map@r"]
        paired = ["–", "–"] if name == reference else [
            f"{100 * r1['diff_mean']:+.2f} ± {100 * r1['diff_std']:.2f} ({r1['wins']}/{r1['n']})",
            f"{100 * mapr['diff_mean']:+.2f} ± {100 * mapr['diff_std']:.2f}",
        ]
        lines.append("| " + " | ".join([name] + cells + paired) + " |")
    for name, metrics in references.items():
        cells = [f"{metrics[k]:.2f}" if k == "target_mass" else f"{100 * metrics[k]:.2f}" for k in keys]
        lines.append("| " + " | ".join([name] + cells + ["–", "–"]) + " |")
    return "\n".join(lines)


def report(runs: list[dict], names: list[str], references: dict[str, dict[str, float]], command: str,
           out: str | None, label: str, keys: tuple[str, ...] = REPORTED) -> None:
    """Print the table of ``runs`` (paired vs ``names[0]``) and write everything to the JSON ``out``."""
    summary = summarise(runs, names, names[0], keys)
    table = markdown(summary, references, names[0], keys)
    print(f"{label}:\n{table}", flush=True)
    if out:
        write_json(Path(out), {"command": command, "seeds": sorted({r["seed"] for r in runs}), "summary": summary,
                               "references": references, "table": table, "runs": runs}, indent=1)


def add_seeded_run_arguments(parser: argparse.ArgumentParser, default_variants: tuple[str, ...]) -> None:
    """--out, --seeds, --variant, --merge and --threads (shared with ``tin_fidelity.py``)."""
    parser.add_argument("--out", default=None, help="JSON results file (every run, its history, the summary)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="head seeds, the same for every variant (paired)")
    parser.add_argument("--variant", action="append", default=None,
                        help=f"NAME:field=value,... over the base recipe (repeatable); default {default_variants}; "
                             "the first variant is the reference of the paired differences")
    parser.add_argument("--merge", action="append", default=[],
                        help="JSON of an earlier run (repeatable): its runs join the report, its variants first; "
                             "with --merge and no --variant nothing is trained")
    parser.add_argument("--threads", type=int, default=1)


def runs_and_variants(args: argparse.Namespace,
                      default_variants: tuple[str, ...]) -> tuple[list[dict], list[Variant], list[str]]:
    """(runs of the --merge files, variants to train, every variant name in report order)."""
    merged = [run for path in args.merge for run in json.loads(Path(path).read_text(encoding="utf-8"))["runs"]]
    variants = [Variant.parse(text) for text in (args.variant or ([] if merged else default_variants))]
    merged_names, new_names = list(dict.fromkeys(r["variant"] for r in merged)), [v.name for v in variants]
    if len(set(new_names)) != len(new_names) or set(new_names) & set(merged_names):
        raise ValueError(f"--variant names must be unique and differ from the merged runs' {merged_names}; got "
                         f"{new_names}")
    return merged, variants, merged_names + new_names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    parser.add_argument("--stage", choices=("cache", "all"), default="all")
    parser.add_argument("--collage-seed", type=int, default=0, help="seed of the collage builder")
    parser.add_argument("--train-per-class", type=int, default=None, help="train collages per class (default all 250)")
    parser.add_argument("--test-per-class", type=int, default=None, help="test collages per class (default all 50)")
    add_head_recipe_arguments(parser, transport_ratio=0.25, gamma=20.0, epochs=5)
    parser.add_argument("--val-classes", type=int, default=0,
                        help="N > 0: train on train labels 0..79-N and measure on the train collages of the last N "
                             "labels instead of the test set (to choose variants without looking at the test set)")
    parser.add_argument("--finetune-from-block", type=int, default=0,
                        help="N > 0: fine-tune EfficientNet-Lite0's blocks N.. (of 0-6), conv_head and bn2 with the "
                             "head, on maps cached at the input of block N (5: the stride-32 stages, 8x8 -> 4x4)")
    parser.add_argument("--backbone-lr-scale", type=float, default=0.1,
                        help="with --finetune-from-block: the backbone layers learn at --lr x this")
    add_seeded_run_arguments(parser, DEFAULT_VARIANTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    merged, variants, names = runs_and_variants(args, DEFAULT_VARIANTS)
    seeds = [int(s) for s in args.seeds.split(",")]
    test, target_cell = cached_split(args, "test", args.test_per_class)
    need_train = bool(variants) or args.stage == "cache"
    train, train_cells = cached_split(args, "train", args.train_per_class) if need_train else (test, target_cell)
    if args.stage == "cache":
        return 0
    if args.val_classes:  # choose variants without the test set: hold out the last train classes
        if not variants:
            raise ValueError("--val-classes needs --variant (it trains on part of the train collages)")
        held = train.labels >= 80 - args.val_classes
        test, target_cell = FeatureSplit(train.features[held], train.labels[held]), train_cells[held]
        train = FeatureSplit(train.features[~held], train.labels[~held])
    base = HeadRecipe(
        pool="avg", image_size=IMAGE_SIZE, train_per_class=len(train.labels) // len(train.labels.unique()),
        val_classes=args.val_classes, embed_dim=args.embed_dim, embed_init="pca", loss=args.loss, zsr_weight=0.0,
        num_prototypes=args.num_prototypes, transport_ratio=args.transport_ratio, gamma=args.gamma,
        classes_per_batch=args.classes_per_batch, images_per_class=args.images_per_class, lr=args.lr,
        weight_decay=args.weight_decay, epochs=args.epochs, seed=seeds[0],
        finetune_from_block=args.finetune_from_block, backbone_lr_scale=args.backbone_lr_scale,
    )
    references = frozen_references(test, target_cell, build_model(base, args.backbone_weights))
    command = "python scripts/collage_experiment.py " + " ".join(argv if argv is not None else sys.argv[1:])
    runs: list[dict] = list(merged)
    if not variants:
        report(runs, names, references, command, args.out, "merged runs")
    for done, seed in enumerate(seeds if variants else [], start=1):  # seed-major: paired after every seed
        for variant in variants:
            runs.append(run(variant, base, seed, args.backbone_weights, train, test, target_cell))
        report(runs, names, references, command, args.out, f"after {done} of {len(seeds)} seeds (+ merged runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
