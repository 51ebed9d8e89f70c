"""The run engine: one training loop for every kind of run, driven by a :class:`Task` that supplies the parts.

:class:`Trainer` owns what every run shares: the accelerate ``Accelerator`` (devices, processes, mixed precision,
gradient accumulation), the run folder and its checks, the step / epoch loop with its progress bar, the learning-rate
schedule (``torch.optim.lr_scheduler.LambdaLR``, prepared by accelerate), the evaluation cadence on the validation
and test splits, model selection on validation, checkpoints and exact resume, tensorboard logging (each logged step's
throughput and wait for data), ``metrics.json`` and ``curves.png``, and on the CPU the reuse of freed host memory
(:mod:`gsp_hub.train.host_memory`). A task supplies the parts of one kind of run — metric learning
(:class:`~gsp_hub.train.metric_learning.MetricLearningTask`), distillation
(:class:`~gsp_hub.train.distillation.DistillationTask`), a head on cached feature maps
(:class:`~gsp_hub.train.cached_head.CachedHeadTask`) — and callbacks (:class:`~gsp_hub.train.callbacks.Callback`)
add behaviour without editing the loop: the task's own (GSP prototype warm-up, CCP's projection schedule) and the
user's (``Trainer(task, callbacks=[...])``).

A step::

    batch -> task.training_step(network, batch) -> loss (+ callback penalties) -> backward -> optimizer step
          -> scheduler step -> callbacks.on_train_batch(outputs)

Order of work: the run folder is checked and the task loads its data (:meth:`Task.load_data`, where the label
checks raise) before anything is written or built; only then does the main process take the folder's run lock
(:mod:`gsp_hub.train.run_lock`: a second run on the same folder stops there, with one clear error) and is an
overwritten run cleared and the model built. The lock is held until :meth:`Trainer.run` returns or raises.

Exact resume: the task's batches are functions of ``(seed, epoch, batch)``, and a checkpoint holds the model,
optimizer, scheduler and RNG states (accelerate), the position in the epoch, the task's stateful parts and the
callbacks (:mod:`gsp_hub.train.state`, no pickle of ours). A run stopped after N steps and resumed reaches
bit-identical weights on the CPU to a run that never stopped.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gsp_hub.io import write_json
from gsp_hub.train.artifacts import METRICS_FILE_NAME, MODEL_DIR_NAME
from gsp_hub.train.callbacks import BatchOutputs, Callback
from gsp_hub.train.checkpoints import (
    CheckpointError,
    CheckpointWriter,
    checkpoint_numbers,
    checkpoint_problem,
    latest_checkpoint,
)
from gsp_hub.train.config import RunConfig
from gsp_hub.train.data import VALIDATION_PREFIX, prepare_eval_loaders
from gsp_hub.train.host_memory import freed_memory_reused
from gsp_hub.train.run_lock import RUN_LOCK_NAME, hold_run_lock
from gsp_hub.train.state import RunState, Stateful, load_training_state, save_training_state

__all__ = [
    "CHECKPOINTS_DIR_NAME",
    "CURVES_FILE_NAME",
    "LOGS_DIR_NAME",
    "RUN_FILE_NAMES",
    "DescribedSplits",
    "Task",
    "Trainer",
    "TrainingStep",
    "WaitTimer",
    "check_output_dir",
    "check_writable_folder",
    "create_accelerator",
    "learning_rate_factor",
    "prepare_output_dir",
    "tensorboard_hparams",
]

logger = get_logger(__name__)  # logs on the main process only
Item = TypeVar("Item")

CHECKPOINTS_DIR_NAME = "checkpoints"
LOGS_DIR_NAME = "logs"
CURVES_FILE_NAME = "curves.png"
# What every run writes into its folder, besides its config file (anything else there belongs to someone else).
RUN_FILE_NAMES = frozenset({MODEL_DIR_NAME, METRICS_FILE_NAME, CHECKPOINTS_DIR_NAME, LOGS_DIR_NAME, CURVES_FILE_NAME})
_DISCARDED_PREFIX = ".gsp_hub-discarded-"  # a replaced run's files, moved aside before they are deleted


class DescribedSplits(Protocol):
    """What the engine reads of a task's splits (:class:`~gsp_hub.data.DatasetSplits`, or the cached-feature splits
    of :class:`~gsp_hub.train.cached_head.CachedHeadTask`): each split's classes in words."""

    def describe(self, split: str) -> str:
        """``split`` ('train', 'validation', 'test') in words, e.g. ``"classes 3-4 (Dress, Coat)"``; ``"none"``
        when the run has no such split."""
        ...


@dataclass(frozen=True)
class TrainingStep:
    """What :meth:`Task.training_step` returns for one micro-batch.

    Attributes:
        loss: the scalar to backpropagate (before the callbacks' penalties).
        outputs: the batch as the callbacks see it (gathered over processes, detached).
        log_values: tensorboard scalars of the step (called only on logging steps).
    """

    loss: Tensor
    outputs: BatchOutputs
    log_values: Callable[[], dict[str, float]]


class Task(ABC):
    """The parts of one kind of run; :class:`Trainer` calls them in this order.

    1. :meth:`load_data` — before anything is written or built: load and split the data, run every check that needs
       only the labels; return the splits.
    2. :meth:`build` — the model (:attr:`model`, exported) and what trains it (:attr:`network`, prepared by
       accelerate; often the model itself), the loss, the evaluation datasets (:attr:`test_data`,
       :attr:`validation_data`).
    3. :meth:`create_optimizer` over the parameter groups (each with ``initial_lr``).
    4. :meth:`callbacks` — the callbacks the task's parts need, made once the network and optimizer are prepared.
    5. Per epoch :meth:`train_batches`, per micro-batch :meth:`training_step`; per evaluation :meth:`evaluate`;
       on a new selected model :meth:`export`.

    Class attributes: ``name`` (the tensorboard project), ``best_metric`` (the validation metric, higher is better,
    that chooses the exported model) and ``run_files`` (files the task writes into the run folder).
    """

    name: ClassVar[str] = "gsp_hub"
    best_metric: ClassVar[str]
    run_files: ClassVar[tuple[str, ...]] = ()

    config: RunConfig
    model: nn.Module
    network: nn.Module
    test_data: Any
    validation_data: Any | None

    @abstractmethod
    def load_data(self, accelerator: Accelerator) -> DescribedSplits:
        """Load and split the data and run the checks that need only the labels (nothing written or built yet)."""

    @abstractmethod
    def build(self, accelerator: Accelerator, *, resuming: bool) -> None:
        """Set :attr:`model`, :attr:`network`, :attr:`test_data`, :attr:`validation_data` and the loss."""

    @abstractmethod
    def create_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer over the trained parameters; every group has ``initial_lr`` (the schedule's base)."""

    def callbacks(self, trainer: Trainer) -> list[Callback]:
        """The callbacks the task's parts need (none by default)."""
        return []

    def stateful(self) -> dict[str, Stateful]:
        """Parts besides the model and optimizer whose state a checkpoint holds (e.g. a loss with parameters)."""
        return {}

    @abstractmethod
    def batches_per_epoch(self, num_processes: int) -> int:
        """Micro-batches per process and epoch (the engine rounds down to whole optimizer steps)."""

    @abstractmethod
    def train_batches(self, epoch: int, *, skip: int, num_replicas: int, rank: int) -> Iterable[Any]:
        """This process's micro-batches of ``epoch`` without the first ``skip`` (a function of seed and epoch)."""

    @abstractmethod
    def training_step(self, network: nn.Module, batch: Any, step: int) -> TrainingStep:
        """The loss of one micro-batch (not yet backpropagated) and what the callbacks see of it."""

    @abstractmethod
    def evaluate(self, network: nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
        """The metrics of the current network on one evaluation split (gathered over processes); must leave every
        RNG untouched."""

    def describe_metrics(self, metrics: Mapping[str, float]) -> str:
        """The headline metrics as a log-line fragment."""
        return ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())

    def describe(self) -> str:
        """One log line about the run's parts (model, loss, data)."""
        return type(self).__name__

    def on_prepared(self, trainer: Trainer) -> None:
        """Called once the trainer is ready (after resuming), before :meth:`Trainer.run`."""

    @abstractmethod
    def export(self, directory: Path, metrics: Mapping[str, float], selected_by: str) -> Path:
        """Write :attr:`model` with its test ``metrics`` as a Hub folder replacing ``directory``."""

    def summary(self) -> dict[str, Any]:
        """Entries the task adds to ``metrics.json``."""
        return {}


class Trainer:
    """One run of a :class:`Task`: see the module docstring.

    Args:
        task: the parts of the run (its ``config`` holds the shared run options).
        callbacks: user callbacks, called after the task's own, in order.
    """

    def __init__(self, task: Task, callbacks: Iterable[Callback] = ()) -> None:
        from gsp_hub import __version__

        config = task.config
        self.task, self.config = task, config
        self.output_dir = Path(config.output_dir)
        self.accelerator = accelerator = create_accelerator(config)
        with ExitStack() as run_lock:  # held until run() ends; released at once if the set-up fails
            resume_dir = check_output_dir(config, self.output_dir, task.run_files)
            self.splits = task.load_data(accelerator)
            if accelerator.is_main_process:  # before the first write: a second run on the folder stops here
                run_lock.enter_context(hold_run_lock(self.output_dir))
            prepare_output_dir(config, accelerator, resume_dir, task.run_files)  # checks passed: now files may go
            self.checkpoints = CheckpointWriter(accelerator, self.output_dir / CHECKPOINTS_DIR_NAME,
                                                keep=config.checkpoints_total_limit, version=__version__)
            set_seed(config.seed)
            task.build(accelerator, resuming=resume_dir is not None)
            self.model = task.model
            self.batches_per_epoch = task.batches_per_epoch(accelerator.num_processes)
            self.batches_per_epoch -= self.batches_per_epoch % config.grad_accum
            if self.batches_per_epoch == 0:
                raise ValueError(f"the train split has fewer images than one optimizer step of {config.batch_size} x "
                                 f"{config.grad_accum} x {accelerator.num_processes} process(es); lower --batch-size.")
            self.steps_per_epoch = self.batches_per_epoch // config.grad_accum
            self.total_steps = config.epochs * self.steps_per_epoch
            optimizer = task.create_optimizer()
            schedule = partial(learning_rate_factor, total_steps=self.total_steps, warmup_steps=config.warmup_steps,
                               schedule=config.scheduler)
            self.network, self.optimizer, self.scheduler = accelerator.prepare(
                task.network, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule))
            self.test_loader, self.validation_loader = prepare_eval_loaders(
                accelerator, task.test_data, task.validation_data, config.eval_batch_size, config.num_workers)
            self.callbacks: list[Callback] = [*task.callbacks(self), *callbacks]
            self.state = RunState()
            self.saved_at_step = -1
            if resume_dir is not None:
                self._load_checkpoint(resume_dir)
            if accelerator.is_main_process:
                config.save(self.output_dir)
            accelerator.init_trackers(task.name, config=tensorboard_hparams(config))
            logger.info("%s; %d processes x %d micro-batches of %d per epoch, %d optimizer steps per epoch, %d epochs; "
                        "device %s, mixed precision %s", task.describe(), accelerator.num_processes,
                        self.batches_per_epoch, config.batch_size, self.steps_per_epoch, config.epochs,
                        accelerator.device, config.mixed_precision)
            task.on_prepared(self)
            self.run_lock = run_lock.pop_all()

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _stateful(self) -> dict[str, Stateful]:
        objects: dict[str, Stateful] = {"run": self.state, **self.task.stateful()}
        objects.update({f"callback_{i}": callback for i, callback in enumerate(self.callbacks)})
        return objects

    def save_checkpoint(self) -> None:
        """Write the next numbered checkpoint crash-safely (:mod:`gsp_hub.train.checkpoints`): the live state is
        saved when this returns; the checkpoint is completed in the background (``self.checkpoints.wait()`` waits
        for it, as the next save, an export and the end of :meth:`run` do)."""
        self.checkpoints.save(lambda folder: save_training_state(folder, self._stateful()), step=self.state.step)
        self.saved_at_step = self.state.step

    def _load_checkpoint(self, directory: Path) -> None:
        self.accelerator.load_state(str(directory))
        load_training_state(directory, self._stateful())
        self.saved_at_step = self.state.step
        logger.info("resumed from %s: epoch %d, batch %d of the epoch, step %d", directory, self.state.epoch,
                    self.state.batch_in_epoch, self.state.step)

    # -- evaluation -------------------------------------------------------------------------------------------
    @property
    def selected_by(self) -> str:
        """How the exported model is chosen, in words (metrics.json, the card, logs)."""
        if self.validation_loader is None:
            return "the last evaluation (no validation split: nothing is chosen)"
        return f"the best validation {self.task.best_metric} ({self.splits.describe('validation')})"

    def compute_metrics(self, loader: DataLoader) -> dict[str, float]:
        """The task's metrics of the current network on one evaluation split."""
        return self.task.evaluate(self.network, loader, self.accelerator)

    def evaluate_and_record(self) -> dict[str, float]:
        """Evaluate the test and validation splits, append the row to the history (the train loss since the last
        evaluation included), log it, and export the model when the validation metric improves (without a
        validation split: at every evaluation). Returns the test metrics; True from a callback's ``on_evaluate``
        stops the run."""
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
        describe = self.task.describe_metrics
        logger.info("step %d (epoch %.2f): test %s%s (evaluated in %.1f s)", state.step, row["epoch"],
                    describe(metrics), "" if validation is None else f"; validation {describe(validation)}",
                    time.perf_counter() - started)
        selection_key = f"{VALIDATION_PREFIX}{self.task.best_metric}"
        if state.step > 0 and (validation is None or state.best is None
                               or row[selection_key] > state.best[selection_key]):
            state.best = row
            if self.accelerator.is_main_process:
                self.checkpoints.wait()  # a failed checkpoint stops the run before its model is published
                path = self.task.export(self.output_dir / MODEL_DIR_NAME, metrics, self.selected_by)
                logger.info("model chosen by %s exported to %s (test %s)", self.selected_by, path, describe(metrics))
        stop = [callback.on_evaluate(validation or {}, state.step) for callback in self.callbacks]
        state.stop_requested = state.stop_requested or any(stop)
        self.accelerator.wait_for_everyone()
        return metrics

    # -- training ---------------------------------------------------------------------------------------------
    def epoch_progress_bar(self) -> tqdm:
        """The progress bar of the current epoch (main process only), starting at the batches already done."""
        return tqdm(total=self.batches_per_epoch, initial=self.state.batch_in_epoch,
                    desc=f"epoch {self.state.epoch + 1}", unit="batch",
                    disable=not self.accelerator.is_local_main_process)

    def end_batch(self, step: TrainingStep, bar: tqdm) -> bool:
        """Bookkeeping after a micro-batch whose loss was backpropagated: position, loss sums, progress; after an
        optimizer step also logging (every ``log_every`` steps) and a checkpoint every ``save_every`` steps.
        Returns True when the epoch stops here (``max_steps`` reached or a callback asked to stop)."""
        config, state = self.config, self.state
        state.batch_in_epoch += 1
        state.loss_sum += step.loss.item()
        state.loss_count += 1
        bar.update(1)
        if not self.accelerator.sync_gradients:
            return False
        state.step += 1
        bar.set_postfix(loss=f"{step.loss.item():.4f}", step=state.step)
        if state.step % config.log_every == 0:
            self.log_step(step)
        if config.save_every and state.step % config.save_every == 0:
            self.save_checkpoint()
        return self.should_stop()

    def log_step(self, step: TrainingStep) -> None:
        """Log the step's loss and learning rate (tensorboard) and the training throughput since the last log or the
        start of the epoch (tensorboard and a log line): seconds per optimizer step and images per second over all
        processes, timed from the end of one logged step to the end of the next, as timm's ``train.py`` times its
        updates (data loading, logging and checkpoints in between included), and of that time the seconds per step
        spent waiting for the next batch (timm's ``Data:``; loader workers that keep up make it near 0)."""
        config, state = self.config, self.state
        now = time.perf_counter()
        seconds = now - self.throughput_since
        steps = state.step - self.throughput_step
        images_per_second = steps * config.batch_size * config.grad_accum * self.accelerator.num_processes / seconds
        learning_rate = self.optimizer.param_groups[0]["lr"]
        data_seconds_per_step = self.data_wait.seconds / steps
        self.accelerator.log({**step.log_values(), "train/lr": learning_rate,
                              "train/images_per_second": images_per_second,
                              "train/data_seconds_per_step": data_seconds_per_step}, step=state.step)
        logger.info("step %d: loss %.4f, lr %.3g, %.3f s per step, %.1f images/s, data %.3f s per step", state.step,
                    step.loss.item(), learning_rate, seconds / steps, images_per_second, data_seconds_per_step)
        self.throughput_since, self.throughput_step, self.data_wait.seconds = now, state.step, 0.0

    def end_epoch(self, bar: tqdm) -> bool:
        """Close the epoch's bar; True (and the next epoch starts) unless the epoch stopped before its end."""
        bar.close()
        state = self.state
        if state.batch_in_epoch < self.batches_per_epoch:
            return False
        state.epoch += 1
        state.batch_in_epoch = 0
        return True

    def train_one_epoch(self) -> bool:
        """Train the rest of the current epoch; returns False when it stopped before its end."""
        accelerator, state = self.accelerator, self.state
        batches = self.task.train_batches(state.epoch, skip=state.batch_in_epoch,
                                          num_replicas=accelerator.num_processes, rank=accelerator.process_index)
        bar = self.epoch_progress_bar()
        self.network.train()
        self.throughput_since, self.throughput_step = time.perf_counter(), state.step  # what log_step measures
        self.data_wait = WaitTimer()
        for batch in self.data_wait.timed(itertools.islice(batches, self.batches_per_epoch - state.batch_in_epoch)):
            with accelerator.accumulate(self.network):
                step = self.task.training_step(self.network, batch, state.step)
                penalties = [penalty for callback in self.callbacks if (penalty := callback.loss_penalty()) is not None]
                accelerator.backward(step.loss + sum(penalties))
                self.optimizer.step()
                if accelerator.sync_gradients:
                    self.scheduler.step()
                self.optimizer.zero_grad()
            stop = [callback.on_train_batch(step.outputs) for callback in self.callbacks]
            state.stop_requested = state.stop_requested or any(stop)
            if self.end_batch(step, bar):
                break
        return self.end_epoch(bar)

    def should_stop(self) -> bool:
        """True once ``max_steps`` optimizer steps are done or a callback asked to stop."""
        config, state = self.config, self.state
        return state.stop_requested or (bool(config.max_steps) and state.step >= config.max_steps)

    def run(self) -> dict[str, Any]:
        """Train and evaluate to the end (or until ``max_steps`` / a callback stops it); returns the summary also
        written to ``metrics.json``."""
        reuse = self.config.reuse_freed_memory and self.accelerator.device.type == "cpu"
        with self.run_lock, freed_memory_reused(reuse):
            return self._run()

    def _run(self) -> dict[str, Any]:
        config, state = self.config, self.state
        with self.checkpoints.finished_on_exit():
            if config.eval_at_start and not state.history:
                self.evaluate_and_record()
            for callback in self.callbacks:
                callback.on_train_start()
            while state.epoch < config.epochs and not self.should_stop():
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
        """``best`` (the evaluation that chose the exported model; its bare metric keys are test metrics,
        ``validation/...`` the validation ones), ``last``, ``initial`` (untrained), ``history``, ``steps``,
        ``epochs``, ``model_dir``, ``selected_by``, ``splits`` (the classes of each split) and the task's entries."""
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
            **self.task.summary(),
        }


@dataclass
class WaitTimer:
    """Seconds spent waiting for the items of the iterables passed through ``timed`` (the loop's data time)."""

    seconds: float = 0.0

    def timed(self, items: Iterable[Item]) -> Iterator[Item]:
        """Yield ``items``, adding to ``seconds`` the time each took to arrive (not the time the caller spends
        between items)."""
        started = time.perf_counter()
        for item in items:
            self.seconds += time.perf_counter() - started
            yield item
            started = time.perf_counter()  # the caller asks for the next item


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine") -> float:
    """Multiplier of the initial learning rate at optimizer step ``step`` (0-based): linear warm-up, then
    constant or a cosine decay to 0 at ``total_steps`` (the ``lr_lambda`` of the run's ``LambdaLR``)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def create_accelerator(config: RunConfig) -> Accelerator:
    """The run's Accelerator (CPU unless a GPU is there and ``config.cpu`` is off) with tensorboard logging into
    ``<output_dir>/logs`` (the engine writes the checkpoints itself, :mod:`gsp_hub.train.checkpoints`). The
    scheduler steps once per optimizer step (``step_scheduler_with_optimizer=False``: the engine steps it), so the
    schedule is the same for any number of processes."""
    output_dir = Path(config.output_dir)
    return Accelerator(
        cpu=config.cpu or not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        step_scheduler_with_optimizer=False,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / LOGS_DIR_NAME)),
    )


def prepare_output_dir(config: RunConfig, accelerator: Accelerator, resume_dir: Path | None,
                       run_files: Collection[str] = ()) -> None:
    """After :func:`check_output_dir` and the data checks, for a new run: remove what a replaced run (``--overwrite``)
    or a run that failed before its first checkpoint left — every file a run writes, the model first, moved aside
    in one rename each before being deleted, so none of it can be mistaken for the new run's. Waits for every rank."""
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process and resume_dir is None and output_dir.is_dir():
        ours = [MODEL_DIR_NAME, *sorted(RUN_FILE_NAMES - {MODEL_DIR_NAME}), config.FILE_NAME, *run_files]
        present = [output_dir / name for name in ours if (output_dir / name).exists()]
        leftovers = [path for path in output_dir.iterdir() if path.name.startswith(_DISCARDED_PREFIX)]
        if present:
            discarded = Path(tempfile.mkdtemp(prefix=_DISCARDED_PREFIX, dir=output_dir))
            for path in present:
                os.replace(path, discarded / path.name)
            leftovers.append(discarded)
        for path in leftovers:
            shutil.rmtree(path)
    accelerator.wait_for_everyone()  # every rank has checked the folder before rank 0 writes into it


def check_output_dir(config: RunConfig, output_dir: Path, run_files: Collection[str] = ()) -> Path | None:
    """Check the output folder against --resume / --overwrite, and that it can be written and holds no files but a
    run's (:data:`RUN_FILE_NAMES`, the config file, ``run_files``); reads only. Returns the verified checkpoint
    folder to resume from. A folder "holds a run" once it has a checkpoint folder, a model or metrics; a run that
    failed before its first checkpoint does not block a new one."""
    check_writable_folder(output_dir, "--output-dir")
    checkpoints = output_dir / CHECKPOINTS_DIR_NAME
    if config.resume:
        if config.resume != "latest":
            path = Path(config.resume)
            if not path.is_dir():
                raise FileNotFoundError(f"--resume {config.resume}: no such checkpoint folder; pass 'latest' or a "
                                        f"folder like {checkpoints / 'checkpoint_0'}.")
            problem = checkpoint_problem(path)
            if problem is not None:
                raise CheckpointError(f"--resume {path}: not a complete checkpoint: {problem}; pass 'latest' to take "
                                      "the newest complete one.")
            return path
        latest = latest_checkpoint(checkpoints)
        if latest is None:
            raise FileNotFoundError(f"--resume latest: no complete checkpoint in {checkpoints}; check --output-dir, "
                                    "or start a new run without --resume.")
        return latest
    holds_run = bool(checkpoint_numbers(checkpoints)) or any(
        (output_dir / name).exists() for name in (MODEL_DIR_NAME, METRICS_FILE_NAME))
    if holds_run and not config.overwrite:
        raise ValueError(f"--output-dir {output_dir} already holds a run; pass --resume latest to continue it, "
                         "--overwrite to start over in it, or another --output-dir.")
    known = RUN_FILE_NAMES | {config.FILE_NAME, RUN_LOCK_NAME, *run_files}
    foreign = sorted(path.name for path in output_dir.iterdir()
                     if path.name not in known and not path.name.startswith(_DISCARDED_PREFIX)) \
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
