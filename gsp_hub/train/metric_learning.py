"""The metric-learning task: m-per-class batches, base loss + ZSR (or XML, CCP), retrieval evaluation.

One straight line per step: m-per-class batch -> model (embeddings, prototype attributes) -> all-gather over
processes -> (1 - w)·base + w·ZSR (or XML, CCP) -> backward (the engine, :mod:`gsp_hub.train.engine`). The
task's callbacks: the GSP prototype warm-up (:class:`~gsp_hub.train.callbacks.PrototypeInitCallback`) when ZSR
needs prototype attributes or the pool picks its prototypes from the loss's proxies (``init='weights_kcenter'``), and
CCP's projection schedule (:mod:`gsp_hub.train.ccp_callback`) for ``--loss ccp``.
Evaluation: leave-one-out retrieval metrics (:func:`gsp_hub.metrics.retrieval_metrics`) of the validation split,
which chooses, and of the test split, which is reported (with ``query_split`` / ``gallery_split``: its queries
searching its gallery, the In-shop protocol); on collages (a ``target_cell`` column) with a pooling that has location
weights, also the pooling weight on the label tile (``target_mass``, :mod:`gsp_hub.train.baselines`). With
``eval_at_start`` the run also measures raw-pixel nearest neighbours on both splits (``baselines`` in
``metrics.json``); the exported model's card compares it with them and with the untrained model, and for a GSP
model shows its pooling weights on test images (``gsp-hub explain heatmap`` figures).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from datasets import Dataset
from torch import Tensor, nn
from torch.utils.data import DataLoader

import gsp_hub.models  # noqa: F401  (registers the gsp_hub architectures with timm)
from gsp_hub.data import IMAGE_COLUMN, LABEL_COLUMN, TARGET_CELL_COLUMN, DatasetSplits
from gsp_hub.layers import GSP
from gsp_hub.losses import CCPLoss, GSPLoss, LossTerms, XMLLoss, ZeroShotRegularizer, create_loss
from gsp_hub.models.registry import accepts_output_stride, backbone_of, unknown_model_error
from gsp_hub.train.artifacts import export_model
from gsp_hub.train.baselines import (
    TARGET_MASS_KEY,
    raw_pixel_metrics,
    raw_pixel_size,
    reports_target_mass,
    retrieval_and_target_mass,
)
from gsp_hub.train.callbacks import BatchOutputs, Callback, PrototypeInitCallback, needs_prototype_init
from gsp_hub.train.ccp_callback import create_ccp_callback
from gsp_hub.train.config import DEFAULT_OUTPUT_STRIDE, GSP_TRAINING_DEFAULTS, TrainConfig, describe_dataset
from gsp_hub.train.data import RunData, load_dataset_splits, load_run_data, train_loader
from gsp_hub.train.distributed import gather_with_grad
from gsp_hub.train.engine import Task, Trainer, TrainingStep
from gsp_hub.train.evaluation import retrieval_evaluation
from gsp_hub.train.state import RunState, Stateful

__all__ = [
    "EmbeddingsAndAttributes",
    "MetricLearningTask",
    "backbone_input_kwargs",
    "compute_loss",
    "create_loss_module",
    "create_model",
    "create_optimizer",
    "create_xml_loss",
    "describe_retrieval_metrics",
    "loss_class_weights",
    "loss_log_values",
    "train",
    "transport_map_figures",
]

logger = get_logger(__name__)  # logs on the main process only
_CELL_NAMES = ("top left", "top right", "bottom left", "bottom right")  # collage cells 0-3, row-major


class EmbeddingsAndAttributes(nn.Module):
    """Training view of a MetricNet: images (B, C, H, W) -> (embeddings (B, D), attributes (B, K) or None).

    Attributes come from pools that compute prototype assignments (``gsp``, ``proto``); other pools give None.
    Wrapping (rather than calling ``forward_head`` on the model) keeps the call inside DDP's ``forward``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        embeddings, aux = self.model.forward_head(self.model.forward_features(images), pre_logits=True,
                                                  return_aux=True)
        return embeddings, (None if aux is None else aux.attributes)


def check_model_names(config: TrainConfig) -> None:
    """ValueError with did-you-mean suggestions unless timm knows ``config.model`` (and, for metric_net, the
    backbone); needs only the config, so a run checks it before loading any data. Hub and local-folder names
    (``hf-hub:`` / ``local-dir:``) are left to timm."""
    def known(name: str) -> bool:
        return name.startswith(("hf-hub:", "local-dir:")) or timm.is_model(name)

    if not known(config.model):
        raise unknown_model_error(config.model, "--model")
    if config.model == "metric_net" and not known(config.backbone):
        raise unknown_model_error(config.backbone, "--backbone")


def backbone_input_kwargs(config: TrainConfig) -> dict[str, Any]:
    """The model's keyword arguments that follow from its backbone: ``img_size`` = ``config.img_size`` for
    fixed-input-size (ViT-family) backbones, else ``output_stride`` = :data:`DEFAULT_OUTPUT_STRIDE` in
    ``backbone_kwargs`` when the backbone takes it and ``config.backbone_kwargs`` does not set it."""
    backbone_kwargs = dict(config.backbone_kwargs)
    backbone = backbone_of(config.model, config.backbone)
    kwargs: dict[str, Any] = {}
    if backbone is not None and timm.get_pretrained_cfg(backbone).fixed_input_size:
        if config.img_size:
            kwargs["img_size"] = config.img_size
    elif (backbone is not None and "output_stride" not in backbone_kwargs
          and accepts_output_stride(backbone, DEFAULT_OUTPUT_STRIDE)):
        backbone_kwargs["output_stride"] = DEFAULT_OUTPUT_STRIDE
    if backbone_kwargs:
        kwargs["backbone_kwargs"] = backbone_kwargs
    return kwargs


def training_pool_kwargs(config: TrainConfig) -> dict[str, Any]:
    """``config.pool_kwargs`` over :data:`GSP_TRAINING_DEFAULTS` when the pooling is GSP (``--pool gsp``, or
    metric_net's default); other pools and named models' own pools get ``config.pool_kwargs`` alone."""
    trains_gsp = config.pool == "gsp" or (config.pool is None and config.model == "metric_net")
    return {**GSP_TRAINING_DEFAULTS, **config.pool_kwargs} if trains_gsp else dict(config.pool_kwargs)


def create_model(config: TrainConfig) -> nn.Module:
    """``timm.create_model(config.model, ...)`` with the backbone, pooling and embedding options of ``config``."""
    check_model_names(config)
    kwargs: dict[str, Any] = dict(embed_dim=config.embed_dim, backbone_pretrained=config.pretrained,
                                  **training_pool_kwargs(config), **backbone_input_kwargs(config))
    if config.pool is not None:
        kwargs["pool"] = config.pool
    if config.model == "metric_net":
        kwargs["backbone"] = config.backbone
    try:
        return timm.create_model(config.model, **kwargs)
    except TypeError as error:  # backbone_kwargs go to timm's constructors unchecked
        raise ValueError(
            f"cannot build model={config.model!r} (backbone={config.backbone!r}, backbone_kwargs="
            f"{config.backbone_kwargs}, pool={config.pool!r}, pool_kwargs={config.pool_kwargs}): {error}. "
            "Remove the option the backbone or pool does not take from --backbone-kwargs / --pool-kwargs."
        ) from error


def uses_attributes(model: nn.Module) -> bool:
    """True when the model's pooling yields prototype attributes (the input of ZSR)."""
    return hasattr(getattr(model, "pool", None), "transport")


def create_xml_loss(config: TrainConfig, num_classes: int, model: nn.Module) -> XMLLoss:
    """``loss='xml+BASE'``: the XML cross-batch prototype loss (options ``config.xml_kwargs``) around BASE."""
    if not uses_attributes(model):
        raise ValueError(f"--loss {config.loss} needs prototype attributes from the pooling: use --pool proto (or "
                         f"gsp), got --pool {config.pool}.")
    embed_dim = int(model.head_hidden_size)
    base = create_loss(config.loss.removeprefix("xml+"), num_classes=num_classes, embed_dim=embed_dim,
                       **config.loss_kwargs)
    return XMLLoss(base, num_classes, embed_dim, **config.xml_kwargs)


def create_loss_module(config: TrainConfig, num_classes: int, model: nn.Module) -> GSPLoss:
    """Base loss ``config.loss`` plus ZSR (weight ``config.zsr_weight``) when the pooling yields attributes;
    ``xml+BASE`` builds :func:`create_xml_loss` instead of ZSR."""
    if config.loss.startswith("xml+"):
        return create_xml_loss(config, num_classes, model)
    embed_dim = int(model.head_hidden_size)
    base = create_loss(config.loss, num_classes=num_classes, embed_dim=embed_dim, **config.loss_kwargs)
    regularizer = None
    if uses_attributes(model) and config.zsr_weight > 0:
        regularizer = ZeroShotRegularizer(num_classes, embed_dim, **config.zsr_kwargs)
    return GSPLoss(base, regularizer, weight=config.zsr_weight if regularizer is not None else 0.0)


def loss_class_weights(config: TrainConfig, loss_fn: GSPLoss) -> Tensor:
    """The class weights a GSP pool built with ``init='weights_kcenter'`` picks its prototypes from: the base loss's
    proxies (``proxy_anchor``: (Cls, D); ``ccp``: (Cls * P, D)), a Parameter read when the warm-up ends. ValueError
    for a loss without proxies."""
    proxies = loss_fn.class_weights
    if proxies is None:
        raise ValueError(
            f"--pool-kwargs init=weights_kcenter picks the GSP prototypes from the loss's class weights, but --loss "
            f"{config.loss} has none; use a proxy loss (--loss proxy_anchor or ccp) or init=memory_kcenter."
        )
    return proxies


def create_optimizer(config: TrainConfig, model: nn.Module, loss_fn: nn.Module) -> torch.optim.AdamW:
    """AdamW over the model (``lr``) and the loss parameters (``lr * loss_lr_scale``); ``initial_lr`` per group."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "initial_lr": config.lr}]
    loss_parameters = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_parameters:
        groups.append({"params": loss_parameters, "initial_lr": config.lr * config.loss_lr_scale})
    for group in groups:
        group["lr"] = group["initial_lr"]
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def compute_loss(
    loss_fn: GSPLoss, embeddings: Tensor, labels: Tensor, attributes: Tensor | None, step: int
) -> tuple[LossTerms, BatchOutputs]:
    """The loss of the global batch: this process's embeddings (b, D), labels (b,), attributes (b, K) | None are
    all-gathered (with gradients) over processes first. Returns the loss terms and the detached global batch."""
    global_embeddings = gather_with_grad(embeddings.float())
    global_labels = gather_with_grad(labels)
    global_attributes = None if attributes is None else gather_with_grad(attributes.float())
    terms = loss_fn.terms(global_embeddings, global_labels, global_attributes)
    outputs = BatchOutputs(
        step=step,
        embeddings=global_embeddings.detach(),
        labels=global_labels,
        attributes=None if global_attributes is None else global_attributes.detach(),
        loss=float(terms.total.detach()),
    )
    return terms, outputs


def describe_retrieval_metrics(metrics: Mapping[str, float]) -> str:
    """The headline retrieval metrics as a log-line fragment: ``"R@1 0.6120, MAP@R 0.2034"`` (and the target-cell
    mass when measured: ``", target-cell mass 0.312"``)."""
    text = f"R@1 {metrics['recall@1']:.4f}, MAP@R {metrics['map@r']:.4f}"
    return text if TARGET_MASS_KEY not in metrics else f"{text}, target-cell mass {metrics[TARGET_MASS_KEY]:.3f}"


def loss_log_values(terms: LossTerms) -> dict[str, float]:
    """Tensorboard scalars of a step's loss terms: the total, the base loss and ZSR (when on)."""
    values = {"train/loss": terms.total.item(), "train/base_loss": terms.base.item()}
    if terms.regularizer is not None:
        values["train/zsr_loss"] = terms.regularizer.item()
    return values


class MetricLearningTask(Task):
    """A metric-learning run of a :class:`TrainConfig` (module docstring); ``Trainer(MetricLearningTask(config))``.

    After :meth:`build`: ``model`` (the timm model, exported), ``network`` (its training view
    :class:`EmbeddingsAndAttributes`), ``loss_fn``, ``data`` (:class:`~gsp_hub.train.data.RunData`).
    """

    name = "gsp_hub"
    best_metric = "map@r"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def load_data(self, accelerator: Accelerator) -> DatasetSplits:
        config = self.config
        check_model_names(config)
        splits = load_dataset_splits(config, num_processes=accelerator.num_processes,
                                     progress=accelerator.is_local_main_process)
        if splits.validation is None and config.loss == "ccp":
            raise ValueError("--loss ccp watches validation MAP@R for its plateau rule, but the run has no validation "
                             "split; set --validation-fraction > 0 (or name a --validation-split).")
        logger.info("data: %s (%s)", describe_dataset(config.dataset), splits.summary)
        self.splits = splits
        return splits

    def build(self, accelerator: Accelerator, *, resuming: bool) -> None:
        config = self.config
        self.device = accelerator.device
        self.model = create_model(config)
        self.data: RunData = load_run_data(config, self.splits, self.model)
        self.loss_fn = create_loss_module(config, self.splits.num_classes, self.model).to(accelerator.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.network = EmbeddingsAndAttributes(self.model)
        if config.compile:
            self.network.compile()  # in place: the parameter names in checkpoints stay those of the model
        self.test_data, self.validation_data = self.data.test, self.data.validation

    def create_optimizer(self) -> torch.optim.Optimizer:
        return create_optimizer(self.config, self.model, self.loss_fn)

    def callbacks(self, trainer: Trainer) -> list[Callback]:
        """The GSP prototype warm-up when ZSR reads prototype attributes, or whenever the pool picks its prototypes
        from the loss's proxies (``init='weights_kcenter'``); CCP's schedule for ``--loss ccp``."""
        callbacks: list[Callback] = []
        pool = self.model.pool
        from_weights = getattr(pool, "init", None) == "weights_kcenter"
        if needs_prototype_init(pool) and (self.loss_fn.regularizer is not None or from_weights):
            class_weights = loss_class_weights(self.config, self.loss_fn) if from_weights else None
            callbacks.append(PrototypeInitCallback(pool, class_weights))
        if isinstance(self.loss_fn.base_loss, CCPLoss):
            callbacks.append(create_ccp_callback(self.config, self.model, self.loss_fn.base_loss,
                                                 trainer.optimizer.optimizer, trainer.network, self.splits.train,
                                                 trainer.accelerator))
        return callbacks

    def stateful(self) -> dict[str, Stateful]:
        return {"loss": self.loss_fn}  # ZSR class embeddings, proxies, the cross-batch memory

    def batches_per_epoch(self, num_processes: int) -> int:
        return len(self.splits.train) // (self.config.batch_size * num_processes)

    def train_batches(self, epoch: int, *, skip: int, num_replicas: int, rank: int) -> Iterable[Any]:
        return train_loader(self.data, self.config, epoch=epoch, skip_batches=skip, num_replicas=num_replicas,
                            rank=rank, device=self.device)

    def training_step(self, network: nn.Module, batch: Any, step: int) -> TrainingStep:
        images, labels = batch
        memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        images, labels = images.to(self.device, memory_format=memory_format), labels.to(self.device)
        embeddings, attributes = network(images)
        if not getattr(self.model.pool, "initialized", True):
            attributes = None  # prototypes not initialised yet (the warm-up callback fills them): ZSR is skipped
        terms, outputs = compute_loss(self.loss_fn, embeddings, labels, attributes, step)
        return TrainingStep(terms.total, outputs, partial(loss_log_values, terms))

    def evaluate(self, network: nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
        """Leave-one-out retrieval metrics, except on the test split of a query/gallery run (its first
        ``num_test_queries`` rows, the queries, search the others); on collages also the target-cell mass."""
        testing = loader.dataset is self.test_data
        rows = self.splits.test if testing else self.splits.validation
        num_queries = self.splits.num_test_queries if testing else 0
        if reports_target_mass(self.model, rows):
            target_cells = torch.as_tensor(np.asarray(rows[TARGET_CELL_COLUMN]))
            return retrieval_and_target_mass(self.model, loader, accelerator, target_cells,
                                             channels_last=self.config.channels_last, num_queries=num_queries)
        return retrieval_evaluation(network, loader, accelerator, channels_last=self.config.channels_last,
                                    num_queries=num_queries)

    def describe_metrics(self, metrics: Mapping[str, float]) -> str:
        return describe_retrieval_metrics(metrics)

    def on_prepared(self, trainer: Trainer) -> None:
        """Keep the run state (its ``initial`` evaluation is the card's untrained baseline); with ``eval_at_start``
        measure raw-pixel nearest neighbours on the test and validation splits."""
        self.run_state: RunState = trainer.state
        self.raw_pixels: dict[str, Any] = {}
        if not self.config.eval_at_start:
            return
        splits, size = self.splits, raw_pixel_size(self.data.data_config["input_size"])
        self.raw_pixels = {"size": list(size), "test": raw_pixel_metrics(splits.test, size, splits.num_test_queries)}
        if splits.validation is not None:
            self.raw_pixels["validation"] = raw_pixel_metrics(splits.validation, size)
        logger.info("raw-pixel nearest neighbours (%dx%d, centred, cosine): test %s%s", *size,
                    describe_retrieval_metrics(self.raw_pixels["test"]),
                    f"; validation {describe_retrieval_metrics(self.raw_pixels['validation'])}"
                    if splits.validation is not None else "")

    def describe(self) -> str:
        config, model = self.config, self.model
        return (f"model: {config.model} ({model.backbone.pretrained_cfg.get('architecture')}, pool "
                f"{model.global_pool}, {sum(p.numel() for p in model.parameters())} parameters); loss: {self.loss_fn}")

    def export(self, directory: Path, metrics: Mapping[str, float], selected_by: str) -> Path:
        splits = self.splits
        first_test = splits.num_classes + splits.num_validation_classes
        test_classes = (f"test classes {first_test}-{first_test + splits.num_test_classes - 1}"
                        if splits.protocol == "zero-shot" else "test split")
        dataset = describe_dataset(self.config.dataset)
        card: dict[str, Any] = {"baselines": self.card_baselines(metrics)}
        if TARGET_MASS_KEY in metrics:
            card["target_mass"] = metrics[TARGET_MASS_KEY]
        with tempfile.TemporaryDirectory() as scratch:
            files: dict[str, Path] = {}
            if isinstance(getattr(self.model, "pool", None), GSP):
                card["figures"] = transport_map_figures(self.model, splits.test, Path(scratch),
                                                        self.data.data_config["input_size"][-1])
                files = {figure["file"]: Path(scratch) / figure["file"] for figure in card["figures"]}
            return export_model(
                self.model, directory, metrics=metrics,
                dataset={"id": dataset, "split": "test", "name": f"{dataset} ({test_classes})"},
                recipe=self.config.to_dict(), data_config=self.data.data_config, selected_by=selected_by,
                card=card, files=files,
            )

    def card_baselines(self, metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
        """The card's baselines on the test split: raw-pixel nearest neighbours and the untrained model (when the run
        measured them), as metrics with the keys of ``metrics``."""
        baselines = {}
        if "test" in self.raw_pixels:
            height, width = self.raw_pixels["size"]
            baselines[f"raw-pixel nearest neighbours ({height}x{width})"] = self.raw_pixels["test"]
        if self.run_state.initial is not None:
            baselines["the untrained model"] = {key: value for key, value in self.run_state.initial.items()
                                                if key in metrics}
        return baselines

    def summary(self) -> dict[str, Any]:
        """``baselines``: the raw-pixel nearest neighbours of the test and validation splits (with
        ``eval_at_start``; the untrained model is the summary's ``initial``)."""
        return {"baselines": {"raw_pixels": self.raw_pixels}} if self.raw_pixels else {}


def transport_map_figures(model: nn.Module, rows: Dataset, folder: Path, input_size: int) -> list[dict[str, str]]:
    """Draw a GSP model's pooling weights on test images (``gsp-hub explain heatmap`` figures) into ``folder`` for its
    card: on collages the first image with the label tile in each cell, else the first image. Returns the card's
    ``figures`` entries, ``[{"file": "transport_map_<row>.png", "caption": ...}]``."""
    from gsp_hub.viz import explain_images  # matplotlib: only when a figure is drawn

    collages = TARGET_CELL_COLUMN in rows.column_names
    if collages:
        cells = np.asarray(rows[TARGET_CELL_COLUMN])
        picks = [int(np.flatnonzero(cells == cell)[0]) for cell in np.unique(cells)]
    else:
        picks = [0]
    examples = [rows[row] for row in picks]
    names = rows.features[LABEL_COLUMN].names
    figures = []
    for row, example in zip(picks, examples, strict=True):
        where = f", label tile {_CELL_NAMES[example[TARGET_CELL_COLUMN]]}" if collages else ""
        figures.append({"file": f"transport_map_{row}.png", "caption": (
            f"Test image {row} ({names[example[LABEL_COLUMN]]}{where}): the input, the GSP pooling weight of each "
            "feature-map location (1 = uniform), the prototype it is transported to.")})
    explain_images(model, [example[IMAGE_COLUMN] for example in examples],
                   [folder / figure["file"] for figure in figures], input_size=input_size)
    return figures


def train(config: TrainConfig, callbacks: Iterable[Callback] = ()) -> dict[str, Any]:
    """Run the metric learning described by ``config`` (with extra ``callbacks``); returns the summary also written
    to ``metrics.json`` (:meth:`gsp_hub.train.engine.Trainer.summary`)."""
    config.validate()
    return Trainer(MetricLearningTask(config), callbacks).run()
