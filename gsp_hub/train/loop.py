"""The metric-learning training loop: accelerate, m-per-class batches, base loss + ZSR, exact resume.

One straight line per step: m-per-class batch -> model (embeddings, prototype attributes) -> all-gather over
processes -> (1 - w)·base + w·ZSR (or XML, CCP) -> backward -> AdamW step -> callbacks (GSP prototype warm-up; CCP
proxy schedule, :mod:`gsp_hub.train.ccp_callback`). Every ``eval_every`` epochs the validation and test splits
are embedded, gathered with ``gather_for_metrics`` and scored with :func:`gsp_hub.metrics.retrieval_metrics`. The
validation split chooses: the model of the best validation MAP@R is exported in Hub format (without a validation
split, the last one), and CCP's plateau rule watches validation MAP@R. The test split is only reported.

Exact resume: the sampler and the augmentation are functions of ``(seed, epoch, batch)``, the learning rate a
function of the step, and a checkpoint holds the model, optimizer, RNG states (accelerate), the loss module, the
callbacks and the position in the epoch (:mod:`gsp_hub.train.state`). A run stopped after N steps and resumed
reaches bit-identical weights on the CPU to a run that never stopped.
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import timm
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from torch import Tensor, nn
from tqdm.auto import tqdm

import gsp_hub.models  # noqa: F401  (registers the gsp_hub architectures with timm)
from gsp_hub.losses import CCPLoss, GSPLoss, LossTerms, XMLLoss, ZeroShotRegularizer, create_loss
from gsp_hub.metrics import retrieval_metrics
from gsp_hub.models.registry import unknown_model_error
from gsp_hub.io import write_json
from gsp_hub.train.artifacts import METRICS_FILE_NAME, MODEL_DIR_NAME, export_model
from gsp_hub.train.callbacks import BatchOutputs, Callback, PrototypeInitCallback, needs_prototype_init
from gsp_hub.train.ccp_callback import create_ccp_callback
from gsp_hub.train.config import RunConfig, TrainConfig, describe_dataset
from gsp_hub.train.data import (
    VALIDATION_PREFIX,
    RunData,
    batches_per_epoch,
    load_dataset_splits,
    load_run_data,
    prepare_eval_loaders,
    train_loader,
)
from gsp_hub.train.distributed import gather_with_grad
from gsp_hub.train.state import RunState, load_training_state, save_training_state

__all__ = [
    "CHECKPOINTS_DIR_NAME",
    "CURVES_FILE_NAME",
    "LOGS_DIR_NAME",
    "EmbeddingsAndAttributes",
    "Trainer",
    "check_output_dir",
    "checkpoint_numbers",
    "compute_loss",
    "create_accelerator",
    "create_loss_module",
    "create_model",
    "create_optimizer",
    "create_xml_loss",
    "embed_split",
    "learning_rate_factor",
    "prepare_output_dir",
    "tensorboard_hparams",
    "train",
]

logger = get_logger(__name__)  # logs on the main process only

CHECKPOINTS_DIR_NAME = "checkpoints"
LOGS_DIR_NAME = "logs"
CURVES_FILE_NAME = "curves.png"
# What every run writes into its folder, besides its config file (anything else there belongs to someone else).
RUN_FILE_NAMES = frozenset({MODEL_DIR_NAME, METRICS_FILE_NAME, CHECKPOINTS_DIR_NAME, LOGS_DIR_NAME, CURVES_FILE_NAME})


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


def create_model(config: TrainConfig) -> nn.Module:
    """``timm.create_model(config.model, ...)`` with the backbone, pooling and embedding options of ``config``."""
    kwargs: dict[str, Any] = dict(embed_dim=config.embed_dim, backbone_pretrained=config.pretrained,
                                  **config.pool_kwargs)
    if config.pool is not None:
        kwargs["pool"] = config.pool
    if config.backbone_kwargs:
        kwargs["backbone_kwargs"] = dict(config.backbone_kwargs)
    if config.model == "metric_net":
        if not timm.is_model(config.backbone):
            raise unknown_model_error(config.backbone, "--backbone")
        kwargs["backbone"] = config.backbone
    try:
        return timm.create_model(config.model, **kwargs)
    except TypeError as error:
        raise ValueError(
            f"cannot build model={config.model!r} (backbone={config.backbone!r}, backbone_kwargs="
            f"{config.backbone_kwargs}, pool={config.pool!r}, pool_kwargs={config.pool_kwargs}): {error}. "
            "Remove the option the backbone or pool does not take (e.g. --backbone-kwargs with no value for "
            "backbones without output_stride)."
        ) from error
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise unknown_model_error(config.model, "--model") from error
        raise


def uses_attributes(model: nn.Module) -> bool:
    """True when the model's pooling yields prototype attributes (the input of ZSR)."""
    return hasattr(getattr(model, "pool", None), "transport")


def create_xml_loss(config: TrainConfig, num_classes: int, model: nn.Module) -> XMLLoss:
    """``loss='xml+BASE'``: the XML cross-batch prototype loss (options ``config.xml_kwargs``) around BASE."""
    if not uses_attributes(model):
        raise ValueError(f"--loss {config.loss} needs prototype attributes from the pooling: use --pool proto (or "
                         f"gsp), got --pool {config.pool}.")
    embed_dim = int(model.num_features)
    base = create_loss(config.loss.removeprefix("xml+"), num_classes=num_classes, embed_dim=embed_dim,
                       **config.loss_kwargs)
    try:
        return XMLLoss(base, num_classes, embed_dim, **config.xml_kwargs)
    except TypeError as error:
        raise ValueError(f"xml_kwargs={config.xml_kwargs}: {error}; XML takes weight, ridge, scale, margin, target, "
                         "convex.") from error


def create_loss_module(config: TrainConfig, num_classes: int, model: nn.Module) -> GSPLoss:
    """Base loss ``config.loss`` plus ZSR (weight ``config.zsr_weight``) when the pooling yields attributes;
    ``xml+BASE`` builds :func:`create_xml_loss` instead of ZSR."""
    if config.loss.startswith("xml+"):
        return create_xml_loss(config, num_classes, model)
    base = create_loss(config.loss, num_classes=num_classes, embed_dim=int(model.num_features), **config.loss_kwargs)
    regularizer = None
    if uses_attributes(model) and config.zsr_weight > 0:
        try:
            regularizer = ZeroShotRegularizer(num_classes, int(model.num_features), **config.zsr_kwargs)
        except TypeError as error:
            raise ValueError(f"zsr_kwargs={config.zsr_kwargs}: {error}; ZSR takes ridge, scale, margin.") from error
    return GSPLoss(base, regularizer, weight=config.zsr_weight if regularizer is not None else 0.0)


def create_optimizer(config: TrainConfig, model: nn.Module, loss_fn: nn.Module) -> torch.optim.AdamW:
    """AdamW over the model (``lr``) and the loss parameters (``lr * loss_lr_scale``); ``initial_lr`` per group."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "initial_lr": config.lr}]
    loss_parameters = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_parameters:
        groups.append({"params": loss_parameters, "initial_lr": config.lr * config.loss_lr_scale})
    for group in groups:
        group["lr"] = group["initial_lr"]
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine") -> float:
    """Multiplier of the initial learning rate at optimizer step ``step`` (0-based): linear warm-up, then
    constant or a cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


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
    )
    return terms, outputs


@torch.no_grad()
def embed_split(network: nn.Module, loader: torch.utils.data.DataLoader, accelerator: Accelerator,
                *, channels_last: bool = False, description: str = "embed") -> tuple[Tensor, Tensor]:
    """Embeddings (N, D) and labels (N,) of a prepared evaluation loader, gathered from every process."""
    network.eval()
    embeddings, labels = [], []
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, batch_labels in tqdm(loader, desc=description, leave=False,
                                     disable=not accelerator.is_local_main_process):
        output = network(images.to(memory_format=memory_format))
        batch_embeddings = output[0] if isinstance(output, tuple) else output
        batch_embeddings, batch_labels = accelerator.gather_for_metrics((batch_embeddings.float(), batch_labels))
        embeddings.append(batch_embeddings.cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(embeddings), torch.cat(labels)


def evaluate(network: nn.Module, loader: torch.utils.data.DataLoader, accelerator: Accelerator,
             config: TrainConfig) -> dict[str, float]:
    """Retrieval metrics of an evaluation split (leave-one-out, cosine); leaves every RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        embeddings, labels = embed_split(network, loader, accelerator, channels_last=config.channels_last)
    return retrieval_metrics(embeddings, labels)


class Trainer:
    """One training run: builds everything from a :class:`TrainConfig` (data, model, loss, optimizer, accelerator,
    resumed state), then :meth:`run` trains and evaluates; :meth:`train_one_epoch` and :meth:`evaluate_and_record`
    are the two halves of an epoch (used alone by benchmarks)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.accelerator = accelerator = create_accelerator(config)
        resume_dir = check_output_dir(config, self.output_dir)
        splits = load_dataset_splits(config, num_processes=accelerator.num_processes,
                                     progress=accelerator.is_local_main_process)
        if splits.validation is None and config.loss == "ccp":
            raise ValueError("--loss ccp watches validation MAP@R for its plateau rule, but the run has no validation "
                             "split; set --validation-fraction > 0 (or name a --validation-split).")
        prepare_output_dir(config, accelerator, resume_dir)  # the checks passed: only now is anything removed
        set_seed(config.seed)
        logger.info("data: %s (%s)", describe_dataset(config.dataset), splits.summary)
        self.splits = splits
        self.model = create_model(config)
        self.data: RunData = load_run_data(config, splits, self.model)
        self.loss_fn = create_loss_module(config, splits.num_classes, self.model).to(accelerator.device)
        self.callbacks: list[Callback] = []
        if self.loss_fn.regularizer is not None and needs_prototype_init(self.model.pool):
            self.callbacks.append(PrototypeInitCallback(self.model.pool))
        optimizer = create_optimizer(config, self.model, self.loss_fn)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.network, self.optimizer = accelerator.prepare(EmbeddingsAndAttributes(self.model), optimizer)
        self.test_loader, self.validation_loader = prepare_eval_loaders(
            accelerator, self.data.test, self.data.validation, config.eval_batch_size, config.num_workers)
        if isinstance(self.loss_fn.base_loss, CCPLoss):  # --loss ccp: proxy init, proximal term, projections
            self.callbacks.append(create_ccp_callback(config, self.model, self.loss_fn.base_loss, optimizer,
                                                      self.network, splits.train, accelerator))
        self.state = RunState()
        self.saved_at_step = -1
        self.batches_per_epoch = batches_per_epoch(self.data, config, accelerator.num_processes)
        self.steps_per_epoch = self.batches_per_epoch // config.grad_accum
        self.total_steps = config.epochs * self.steps_per_epoch
        if resume_dir is not None:
            self._load_checkpoint(resume_dir)
        if accelerator.is_main_process:
            config.save(self.output_dir)
        accelerator.init_trackers("gsp_hub", config=tensorboard_hparams(config))
        logger.info(
            "model: %s (%s, pool %s, %d parameters); loss: %s; %d processes x %d micro-batches of %d per epoch, "
            "%d optimizer steps per epoch, %d epochs; device %s, mixed precision %s",
            config.model, self.model.backbone.pretrained_cfg.get("architecture"), self.model.pool_name,
            sum(p.numel() for p in self.model.parameters()),
            self.loss_fn, accelerator.num_processes, self.batches_per_epoch, config.batch_size,
            self.steps_per_epoch, config.epochs, accelerator.device, config.mixed_precision,
        )

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _stateful(self) -> dict[str, Any]:
        objects: dict[str, Any] = {"run": self.state, "loss": self.loss_fn}
        objects.update({f"callback_{i}": callback for i, callback in enumerate(self.callbacks)})
        return objects

    def save_checkpoint(self) -> None:
        path = self.accelerator.save_state()
        if self.accelerator.is_main_process:
            save_training_state(path, self._stateful())
        self.accelerator.wait_for_everyone()
        self.saved_at_step = self.state.step
        logger.info("step %d: checkpoint saved to %s", self.state.step, path)

    def _load_checkpoint(self, directory: Path) -> None:
        self.accelerator.load_state(str(directory))
        load_training_state(directory, self._stateful())
        numbers = checkpoint_numbers(self.output_dir / CHECKPOINTS_DIR_NAME)
        self.accelerator.project_configuration.iteration = max(numbers, default=-1) + 1
        self.saved_at_step = self.state.step
        logger.info("resumed from %s: epoch %d, batch %d of the epoch, step %d", directory, self.state.epoch,
                    self.state.batch_in_epoch, self.state.step)

    # -- evaluation -------------------------------------------------------------------------------------------
    best_metric: ClassVar[str] = "map@r"  # the validation metric (higher is better) that picks the exported model

    def compute_metrics(self, loader: torch.utils.data.DataLoader) -> dict[str, float]:
        """The metrics of the current model on one evaluation split: retrieval metrics (leave-one-out, cosine)."""
        return evaluate(self.network, loader, self.accelerator, self.config)

    @property
    def selected_by(self) -> str:
        """How the exported model is chosen, in words (metrics.json, logs)."""
        if self.validation_loader is None:
            return "the last evaluation (no validation split: nothing is chosen)"
        return f"the best validation {self.best_metric} ({self.splits.describe('validation')})"

    def describe_metrics(self, metrics: dict[str, float]) -> str:
        """The headline metrics as a log-line fragment."""
        return f"R@1 {metrics['recall@1']:.4f}, MAP@R {metrics['map@r']:.4f}"

    def evaluate_and_record(self) -> dict[str, float]:
        """Evaluate, append the row to the history (train loss since the last evaluation included), log it, and
        export the model when ``best_metric`` improves; returns the metrics."""
        started = time.perf_counter()
        metrics = self.compute_metrics(self.test_loader)
        validation = None if self.validation_loader is None else self.compute_metrics(self.validation_loader)
        state = self.state
        row: dict[str, Any] = {
            "epoch": round(state.epoch + state.batch_in_epoch / self.batches_per_epoch, 4),
            "step": state.step,
            "train_loss": state.loss_sum / state.loss_count if state.loss_count else None,
            **metrics,
            **{f"{VALIDATION_PREFIX}{key}": value for key, value in (validation or {}).items()},
        }
        state.history.append(row)
        state.loss_sum, state.loss_count = 0.0, 0
        if state.step == 0 and state.initial is None:
            state.initial = row
        self.accelerator.log({f"test/{key}": value for key, value in metrics.items()}, step=state.step)
        if validation is not None:
            self.accelerator.log({f"validation/{key}": value for key, value in validation.items()}, step=state.step)
        logger.info("step %d (epoch %.2f): test %s%s (evaluated in %.1f s)", state.step, row["epoch"],
                    self.describe_metrics(metrics),
                    "" if validation is None else f"; validation {self.describe_metrics(validation)}",
                    time.perf_counter() - started)
        selection_key = f"{VALIDATION_PREFIX}{self.best_metric}"
        if state.step > 0 and (validation is None or state.best is None
                               or row[selection_key] > state.best[selection_key]):
            state.best = row
            if self.accelerator.is_main_process:
                self.export_best(metrics)
        for callback in self.callbacks:
            callback.on_evaluate(validation or {}, state.step)
        self.accelerator.wait_for_everyone()
        return metrics

    def export_best(self, metrics: dict[str, float]) -> None:
        """Export the chosen model with its test ``metrics`` (the card says which split chose it)."""
        splits = self.splits
        test_classes = (f"test classes {splits.num_classes + splits.num_validation_classes}-"
                        f"{splits.num_classes + splits.num_validation_classes + splits.num_test_classes - 1}"
                        if splits.protocol == "zero-shot" else "test split")
        dataset = describe_dataset(self.config.dataset)
        path = export_model(
            self.model,
            self.output_dir / MODEL_DIR_NAME,
            metrics=metrics,
            dataset={"id": dataset, "split": "test", "name": f"{dataset} ({test_classes})"},
            recipe=self.config.to_dict(),
            data_config=self.data.data_config,
            selected_by=self.selected_by,
        )
        logger.info("model chosen by %s exported to %s (test MAP@R %.4f)", self.selected_by, path, metrics["map@r"])

    # -- training ---------------------------------------------------------------------------------------------
    def epoch_progress_bar(self) -> tqdm:
        """The progress bar of the current epoch (main process only), starting at the batches already done."""
        return tqdm(total=self.batches_per_epoch, initial=self.state.batch_in_epoch,
                    desc=f"epoch {self.state.epoch + 1}", unit="batch",
                    disable=not self.accelerator.is_local_main_process)

    def optimizer_step(self) -> None:
        """Set the learning rate of the current step (warm-up, schedule) in every group, step and clear gradients."""
        config = self.config
        factor = learning_rate_factor(self.state.step, self.total_steps, config.warmup_steps, config.scheduler)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        self.optimizer.step()
        self.optimizer.zero_grad()

    def end_batch(self, loss: Tensor, bar: tqdm, log_values: Callable[[], dict[str, float]]) -> bool:
        """Bookkeeping after a micro-batch whose ``loss`` was backpropagated: position, loss sums, progress; after an
        optimizer step also logging (``log_values()`` every ``log_every`` steps) and a checkpoint every
        ``save_every`` steps. Returns True when ``max_steps`` is reached (the epoch stops)."""
        config, state = self.config, self.state
        state.batch_in_epoch += 1
        state.loss_sum += loss.item()
        state.loss_count += 1
        bar.update(1)
        if not self.accelerator.sync_gradients:
            return False
        state.step += 1
        bar.set_postfix(loss=f"{loss.item():.4f}", step=state.step)
        if state.step % config.log_every == 0:
            self.accelerator.log(log_values(), step=state.step)
        if config.save_every and state.step % config.save_every == 0:
            self.save_checkpoint()
        return bool(config.max_steps) and state.step >= config.max_steps

    def end_epoch(self, bar: tqdm) -> bool:
        """Close the epoch's bar; True (and the next epoch starts) unless ``max_steps`` stopped it before its end."""
        bar.close()
        state = self.state
        if state.batch_in_epoch < self.batches_per_epoch:
            return False
        state.epoch += 1
        state.batch_in_epoch = 0
        return True

    def train_one_epoch(self) -> bool:
        """Train the rest of the current epoch; returns False when ``max_steps`` stopped it before its end."""
        config, accelerator, state = self.config, self.accelerator, self.state
        loader = train_loader(self.data, config, epoch=state.epoch, skip_batches=state.batch_in_epoch,
                              num_replicas=accelerator.num_processes, rank=accelerator.process_index)
        remaining = self.batches_per_epoch - state.batch_in_epoch
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        bar = self.epoch_progress_bar()
        self.network.train()
        started, images_seen = time.perf_counter(), 0
        for images, labels in itertools.islice(loader, remaining):
            images = images.to(accelerator.device, memory_format=memory_format)
            labels = labels.to(accelerator.device)
            with accelerator.accumulate(self.network):
                embeddings, attributes = self.network(images)
                if not getattr(self.model.pool, "initialized", True):
                    attributes = None  # prototypes not initialised yet: ZSR is skipped
                terms, outputs = compute_loss(self.loss_fn, embeddings, labels, attributes, state.step)
                penalties = [penalty for callback in self.callbacks if (penalty := callback.loss_penalty()) is not None]
                accelerator.backward(terms.total + sum(penalties))
                self.optimizer_step()
            for callback in self.callbacks:
                callback.on_train_batch(outputs)
            images_seen += len(outputs.labels)
            rate = images_seen / (time.perf_counter() - started)
            if self.end_batch(terms.total, bar, partial(self._train_log_values, terms, rate)):
                break
        return self.end_epoch(bar)

    def _train_log_values(self, terms: LossTerms, images_per_second: float) -> dict[str, float]:
        """Tensorboard scalars of a step: losses, learning rate, throughput."""
        values = {"train/loss": terms.total.item(), "train/base_loss": terms.base.item(),
                  "train/lr": self.optimizer.param_groups[0]["lr"], "train/images_per_second": images_per_second}
        if terms.regularizer is not None:
            values["train/zsr_loss"] = terms.regularizer.item()
        return values

    def run(self) -> dict[str, Any]:
        config, state = self.config, self.state
        if config.eval_at_start and not state.history:
            self.evaluate_and_record()
        for callback in self.callbacks:
            callback.on_train_start()
        while state.epoch < config.epochs and not (config.max_steps and state.step >= config.max_steps):
            if not self.train_one_epoch():
                break
            if state.epoch % config.eval_every == 0 or state.epoch == config.epochs:
                self.evaluate_and_record()
            self.save_checkpoint()
        if not state.history or state.history[-1]["step"] != state.step:
            self.evaluate_and_record()
        if self.saved_at_step != state.step and state.step > 0:
            self.save_checkpoint()
        summary = self.summary()
        if self.accelerator.is_main_process:
            write_json(self.output_dir / METRICS_FILE_NAME, summary)
            from gsp_hub.viz import plot_training_curves

            plot_training_curves(state.history, self.output_dir / CURVES_FILE_NAME)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        logger.info("done: %d steps; outputs in %s", state.step, self.output_dir)
        return summary

    def summary(self) -> dict[str, Any]:
        state = self.state
        return {
            "best": state.best,
            "last": state.history[-1] if state.history else None,
            "initial": state.initial,
            "history": state.history,
            "steps": state.step,
            "epochs": state.epoch + state.batch_in_epoch / self.batches_per_epoch,
            "model_dir": str(self.output_dir / MODEL_DIR_NAME) if state.best else None,
            "selected_by": self.selected_by,
            "splits": {name: self.splits.describe(name) for name in ("train", "validation", "test")},
        }


def train(config: TrainConfig) -> dict[str, Any]:
    """Run the training described by ``config``; returns the metrics summary also written to ``metrics.json``:
    ``best`` (the evaluation chosen by validation MAP@R, exported to ``<output_dir>/model``; its bare metric keys are
    test metrics, ``validation/...`` the validation ones), ``last``, ``initial`` (untrained), ``history``,
    ``selected_by`` and ``splits`` (the classes of each split)."""
    config.validate()
    return Trainer(config).run()


def create_accelerator(config: RunConfig) -> Accelerator:
    """The run's Accelerator (CPU unless a GPU is there and ``config.cpu`` is off) with tensorboard logging into
    ``<output_dir>/logs`` and numbered checkpoints in ``<output_dir>/checkpoints`` (``checkpoints_total_limit`` kept).
    ``config``: any run configuration with ``output_dir``, ``cpu``, ``mixed_precision``, ``grad_accum``,
    ``checkpoints_total_limit``."""
    output_dir = Path(config.output_dir)
    return Accelerator(
        cpu=config.cpu or not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with="tensorboard",
        project_config=ProjectConfiguration(
            project_dir=str(output_dir),
            logging_dir=str(output_dir / LOGS_DIR_NAME),
            automatic_checkpoint_naming=True,
            total_limit=config.checkpoints_total_limit,
        ),
    )


def prepare_output_dir(config: RunConfig, accelerator: Accelerator, resume_dir: Path | None) -> None:
    """After :func:`check_output_dir` and the data checks: clear an overwritten run's checkpoints and logs, and wait
    for every rank."""
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process and resume_dir is None and config.overwrite:
        for name in (CHECKPOINTS_DIR_NAME, LOGS_DIR_NAME):
            shutil.rmtree(output_dir / name, ignore_errors=True)
    accelerator.wait_for_everyone()  # every rank has checked the folder before rank 0 writes into it


def checkpoint_numbers(directory: Path) -> list[int]:
    """The numbers i of the ``checkpoint_<i>`` folders in ``directory``."""
    if not directory.is_dir():
        return []
    return [int(match.group(1)) for path in directory.iterdir() if (match := re.fullmatch(r"checkpoint_(\d+)",
                                                                                           path.name))]


def check_output_dir(config: RunConfig, output_dir: Path, run_files: Collection[str] = ()) -> Path | None:
    """Check the output folder against --resume / --overwrite, and that it can be written and holds no files but a
    run's (:data:`RUN_FILE_NAMES`, the config file, ``run_files``); reads only. Returns the checkpoint folder to
    resume from."""
    check_writable_folder(output_dir, "--output-dir")
    checkpoints = output_dir / CHECKPOINTS_DIR_NAME
    if config.resume:
        if config.resume != "latest":
            path = Path(config.resume)
            if not path.is_dir():
                raise FileNotFoundError(f"--resume {config.resume}: no such checkpoint folder; pass 'latest' or a "
                                        f"folder like {checkpoints / 'checkpoint_0'}.")
            return path
        numbers = checkpoint_numbers(checkpoints)
        if not numbers:
            raise FileNotFoundError(f"--resume latest: no checkpoint in {checkpoints}; check --output-dir, or start "
                                    "a new run without --resume.")
        return checkpoints / f"checkpoint_{max(numbers)}"
    if ((output_dir / config.FILE_NAME).exists() or checkpoints.exists()) and not config.overwrite:
        raise ValueError(f"--output-dir {output_dir} already holds a run; pass --resume latest to continue it, "
                         "--overwrite to start over in it, or another --output-dir.")
    known = RUN_FILE_NAMES | {config.FILE_NAME, *run_files}
    foreign = sorted(path.name for path in output_dir.iterdir() if path.name not in known) \
        if output_dir.is_dir() else []
    if foreign and not config.overwrite:
        raise ValueError(f"--output-dir {output_dir} holds files that are not part of a gsp_hub run ({foreign[:5]}); "
                         "choose a new or empty --output-dir (or pass --overwrite to write beside them).")
    return None


def check_writable_folder(path: Path, argument: str) -> None:
    """ValueError unless ``path`` is a folder (or can become one) that this process can create files in. Probes
    with a temporary file in the nearest existing folder, removed at once (root ignores permission bits)."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{argument} {path}: {existing} is a file, not a folder; choose another {argument}.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"{argument} {path} cannot be written ({existing}: {error.strerror}); choose a writable "
                         f"{argument}.") from error


def tensorboard_hparams(config: RunConfig) -> dict[str, Any]:
    """The config as tensorboard hyperparameters (scalars and strings only)."""
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value)
            for key, value in config.to_dict().items()}
