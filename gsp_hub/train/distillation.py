"""The distillation task: vanilla, Hinton KD, letKD-1 and letKD-2, run by the engine (:mod:`gsp_hub.train.engine`).

A :class:`~gsp_hub.train.distill.DistillConfig` describes a run; :func:`distill` runs it. The task supplies a
training step ``student -> CE + method loss (teacher frozen)`` and a top-1 evaluation of the student alone (the
validation split chooses the exported student, the test split is reported); the engine does the rest (backward,
SGD/AdamW step, schedule, checkpoints, resume, ``metrics.json``, ``curves.png``, tensorboard).

Methods (shared/spec/letkd.md):

* ``vanilla``: CE only (the teacher is only evaluated, for reference);
* ``kd``: Hinton KD, ``0.1 * CE + 0.9 * T^2 * KL`` at T = 4 on the teacher's logits;
* ``letkd1`` / ``letkd2``: a :class:`~gsp_hub.layers.LeTKDLayer` at the penultimate map (and, letkd2, after the first
  block of the last stage), CE + dense KL to the teacher targets. The targets (k-means codebook, LDA sub-class
  decisions) are fitted once on the non-augmented train split and saved as ``letkd_targets.safetensors`` in the
  run folder; a resumed run loads them.

The teacher (``--teacher`` + ``--teacher-weights``) and a starting student (``--student-weights``) load through
:func:`gsp_hub.hub.load_model`: a safetensors file of the named architecture, or any other spec it accepts (an
export or run folder, a Hub id, a zoo tag). A letKD student is the timm architecture ``letkd_student`` (the student
with its LeTKD layers, :mod:`gsp_hub.models.letkd`).

Run folder: ``model/`` (best student by top-1, a timm Hub export for every method), ``metrics.json``,
``distill_config.yaml``, ``checkpoints/``, ``logs/``, ``curves.png``. Evaluating a distilled student needs
neither the teacher nor labels: ``gsp_hub.load_model(run_dir)(images).argmax(1)``, or
``timm.create_model(f"local-dir:{run_dir}/model", pretrained=True)``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import timm
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.data_loader import SkipBatchSampler
from accelerate.logging import get_logger
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T
from tqdm.auto import tqdm

import gsp_hub.models  # noqa: F401  (registers the gsp_hub architectures, cifar_resnet* included, with timm)
from gsp_hub.data import (
    DatasetSplits,
    collate_image_batch,
    create_image_transforms,
    load_image_dataset,
    make_splits,
    with_image_transform,
)
from gsp_hub.kd import LeTKDTargets, collect_teacher_locations
from gsp_hub.losses.distillation import DistillLossOutput, HintonKDLoss, LeTKDLoss
from gsp_hub.models.taps import TeacherTaps
from gsp_hub.train.artifacts import export_model
from gsp_hub.train.callbacks import BatchOutputs, Callback
from gsp_hub.train.config import describe_dataset
from gsp_hub.train.data import SeededBatchDataset, eval_loader, loader_options
from gsp_hub.train.distill import DistillConfig
from gsp_hub.train.engine import CHECKPOINTS_DIR_NAME, Task, Trainer, TrainingStep
from gsp_hub.train.evaluation import predict

__all__ = [
    "TARGETS_FILE_NAME",
    "DistillationTask",
    "check_num_classes",
    "create_student",
    "distill",
    "load_teacher",
    "seeded_subset",
]

logger = get_logger(__name__)

TARGETS_FILE_NAME = "letkd_targets.safetensors"


# -- models ---------------------------------------------------------------------------------------------------------
def check_num_classes(model: nn.Module, num_classes: int, source: str) -> nn.Module:
    """``model``, after checking that it predicts ``num_classes`` classes (ValueError naming ``source`` if not)."""
    predicted = int(getattr(model, "num_classes", 0))
    if predicted != num_classes:
        raise ValueError(f"{source} predicts {predicted} classes but the data set has {num_classes}; distil on the "
                         "model's label set.")
    return model


def _load_trained(config: DistillConfig, role: Literal["teacher", "student"], num_classes: int) -> nn.Module:
    """``--teacher-weights`` / ``--student-weights`` loaded (:meth:`DistillConfig.weights_source`), eval mode: a
    safetensors file builds its architecture for ``num_classes``; it must predict ``num_classes`` classes."""
    source = config.weights_source(role)
    model = source.load(num_classes=num_classes) if source.weights is not None else source.load()
    return check_num_classes(model, num_classes, f"--{role}-weights {source.spec}")


def load_teacher(config: DistillConfig, num_classes: int) -> nn.Module:
    """The frozen teacher (eval mode, no gradients) of ``--teacher`` / ``--teacher-weights``."""
    return _load_trained(config, "teacher", num_classes).requires_grad_(False)


def create_student(config: DistillConfig, num_classes: int) -> nn.Module:
    """``timm.create_model(config.student)`` (random init, or ``config.student_weights``); for letkd1 / letkd2 the
    ``letkd_student`` architecture around it, with freshly initialised LeTKD layers."""
    if not config.is_letkd:
        if config.student_weights:
            return _load_trained(config, "student", num_classes).train()
        return timm.create_model(config.student, num_classes=num_classes)
    student = timm.create_model(
        "letkd_student", student=config.student, num_classes=num_classes,
        input_size=(3, config.img_size, config.img_size), pen_codes=config.num_codes,
        inter_codes=num_classes * config.subclasses_per_class if config.method == "letkd2" else 0,
        alpha_pen=config.alpha_pen, alpha_inter=config.alpha_inter,
    )
    if config.student_weights:
        with torch.random.fork_rng(devices=[]):  # loading draws no random numbers: the same run as without weights
            trained = _load_trained(config, "student", num_classes)
        student.load_student_weights(trained.state_dict())
    return student


# -- data -----------------------------------------------------------------------------------------------------------
def seeded_subset(dataset: Dataset, size: int, seed: int) -> Dataset:
    """A seeded random subset of ``size`` rows (all rows when ``size`` is 0 or larger than the split)."""
    if not size or size >= len(dataset):
        return dataset
    return dataset.select(np.sort(np.random.default_rng(seed).permutation(len(dataset))[:size]))


def _cifar_augmentation(data_config: dict[str, Any]) -> T.Compose:
    """LeTKD's CIFAR training transform: random crop with 4 px reflect padding, horizontal flip, normalisation."""
    size = data_config["input_size"][-1]
    return T.Compose([
        T.RandomCrop(size, padding=4, padding_mode="reflect"),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(data_config["mean"], data_config["std"]),
    ])


def _epoch_batches(num_rows: int, batch_size: int, *, seed: int, epoch: int, num_replicas: int, rank: int
                   ) -> list[list[int]]:
    """This process's shuffled index batches of ``epoch`` (a function of ``(seed, epoch)``; last partial dropped)."""
    order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    steps = num_rows // (batch_size * num_replicas)
    return order[: steps * batch_size * num_replicas].view(steps, num_replicas, batch_size)[:, rank].tolist()


# -- the task -------------------------------------------------------------------------------------------------------
class DistillationTask(Task):
    """One distillation run of a :class:`DistillConfig`: ``Trainer(DistillationTask(config))``.

    After :meth:`build`: ``teacher`` (frozen), ``model`` (the student, exported), ``criterion`` (CE, Hinton KD or
    letKD), ``teacher_taps`` (None for vanilla).
    """

    name = "gsp_hub_distill"
    best_metric = "top1"
    run_files = (TARGETS_FILE_NAME,)

    def __init__(self, config: DistillConfig) -> None:
        self.config = config
        self.teacher_metrics: dict[str, float] | None = None

    def load_data(self, accelerator: Accelerator) -> DatasetSplits:
        config = self.config
        config.check_inputs()
        dataset = load_image_dataset(config.dataset, image_column=config.image_column,
                                     label_column=config.label_column, verify_images=config.verify_images,
                                     progress=accelerator.is_local_main_process)
        self.splits = make_splits(dataset, "own", train_split=config.train_split or "train",
                                  validation_split=config.validation_split, test_split=config.test_split,
                                  validation_fraction=config.validation_fraction, seed=config.seed)
        return self.splits

    def build(self, accelerator: Accelerator, *, resuming: bool) -> None:
        config, splits = self.config, self.splits
        self.accelerator = accelerator
        self.num_classes = splits.num_classes
        self.teacher = load_teacher(config, splits.num_classes).to(accelerator.device)
        self.model = self.network = create_student(config, splits.num_classes)
        transforms = create_image_transforms(self.model, input_size=config.img_size)
        self.data_config = transforms.data_config
        train_rows = seeded_subset(splits.train, config.max_train_images, config.seed)
        test_rows = seeded_subset(splits.test, config.max_test_images, config.seed)
        validation_rows = (None if splits.validation is None
                           else seeded_subset(splits.validation, config.max_test_images, config.seed))
        augmentation = _cifar_augmentation(self.data_config) if config.augment == "cifar" else transforms.train
        self.train_data = SeededBatchDataset(with_image_transform(train_rows, augmentation), config.seed)
        self.plain_train = with_image_transform(train_rows, transforms.eval)
        self.test_data = with_image_transform(test_rows, transforms.eval)
        self.validation_data = (None if validation_rows is None
                                else with_image_transform(validation_rows, transforms.eval))
        logger.info("data: %s (%s); using %d train / %d validation / %d test images", describe_dataset(config.dataset),
                    splits.summary, len(train_rows), 0 if validation_rows is None else len(validation_rows),
                    len(test_rows))
        self.criterion = self._create_criterion(resuming).to(accelerator.device)
        taps = self.criterion.targets.taps if isinstance(self.criterion, LeTKDLoss) else ()
        self.teacher_taps = (
            TeacherTaps(self.teacher, taps, getattr(self.model, "grid_sizes", None), with_logits=config.method == "kd")
            if config.method != "vanilla" else None
        )

    def _create_criterion(self, resuming: bool) -> nn.Module:
        config = self.config
        if config.method == "vanilla":
            return nn.CrossEntropyLoss()
        if config.method == "kd":
            return HintonKDLoss(config.kd_temperature)
        return LeTKDLoss(self._letkd_targets(resuming))

    def _letkd_targets(self, resuming: bool) -> LeTKDTargets:
        """Fit the teacher targets once (main process) and save them in the run folder; a resumed run reloads."""
        config, accelerator = self.config, self.accelerator
        path = Path(config.output_dir) / TARGETS_FILE_NAME
        if accelerator.is_main_process and not (resuming and path.is_file()):
            started = time.perf_counter()
            teacher = TeacherTaps(self.teacher, tuple(self.model.grid_sizes), self.model.grid_sizes)
            # Rows are often stored by class: a seeded shuffle makes the first --target-batches cover every class.
            plain = self.plain_train.shuffle(seed=config.seed)
            loader = eval_loader(plain, config.batch_size, config.num_workers, accelerator.device)
            batches = ((images.to(accelerator.device), labels) for images, labels in loader)
            locations = collect_teacher_locations(teacher, tqdm(batches, desc="teacher locations", leave=False),
                                                  max_batches=config.target_batches or None)
            teacher.remove_hooks()
            LeTKDTargets.fit(locations, self.num_classes, num_codes=config.num_codes, lda_dim=config.lda_dim,
                             subclasses_per_class=config.subclasses_per_class, seed=config.seed).save(path)
            logger.info("letKD targets fitted on %d locations in %.1f s, saved to %s",
                        len(next(iter(locations.values())).labels), time.perf_counter() - started, path)
        accelerator.wait_for_everyone()
        return LeTKDTargets.load(path)

    def create_optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad], "initial_lr": config.lr,
                   "lr": config.lr}]
        if config.optimizer == "sgd":
            return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
        return torch.optim.AdamW(groups, weight_decay=config.weight_decay)

    # -- training -------------------------------------------------------------------------------------------------
    def batches_per_epoch(self, num_processes: int) -> int:
        return len(self.train_data) // (self.config.batch_size * num_processes)

    def train_batches(self, epoch: int, *, skip: int, num_replicas: int, rank: int) -> Iterable[Any]:
        config = self.config
        self.train_data.set_epoch(epoch)
        batches = _epoch_batches(len(self.train_data), config.batch_size, seed=config.seed, epoch=epoch,
                                 num_replicas=num_replicas, rank=rank)
        return DataLoader(self.train_data, batch_sampler=SkipBatchSampler(batches, skip),
                          collate_fn=collate_image_batch, generator=torch.Generator().manual_seed(config.seed + epoch),
                          **loader_options(config.num_workers, self.accelerator.device))

    def training_step(self, network: nn.Module, batch: Any, step: int) -> TrainingStep:
        images, labels = (tensor.to(self.accelerator.device) for tensor in batch)
        if isinstance(self.criterion, LeTKDLoss):
            logits, tap_logits = network(images, return_tap_logits=True)
            out = self.criterion(logits, labels, tap_logits, self.teacher_taps(images).maps)
        elif isinstance(self.criterion, HintonKDLoss):
            logits = network(images)
            out = self.criterion(logits, labels, self.teacher_taps(images).logits)
        else:
            logits = network(images)
            loss = F.cross_entropy(logits, labels)
            out = DistillLossOutput(loss, {"ce": loss.detach()})
        outputs = BatchOutputs(step=step, embeddings=logits.detach(), labels=labels, attributes=None,
                               loss=float(out.loss.detach()))
        return TrainingStep(out.loss, outputs, partial(self._log_values, out))

    @staticmethod
    def _log_values(out: DistillLossOutput) -> dict[str, float]:
        """Tensorboard scalars of a step: the loss and its parts."""
        return {"train/loss": out.loss.item(), **{f"train/{name}": float(value) for name, value in out.parts.items()}}

    # -- evaluation -----------------------------------------------------------------------------------------------
    def evaluate(self, network: nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
        """Top-1 accuracy of ``network`` (the student, or the teacher) on one evaluation split."""
        with torch.random.fork_rng(devices=[]):
            predictions, labels = predict(network, tqdm(loader, desc="evaluate", leave=False,
                                                        disable=not accelerator.is_local_main_process), accelerator)
        return {"top1": float((predictions == labels).float().mean())}

    def describe_metrics(self, metrics: Mapping[str, float]) -> str:
        return f"top-1 {metrics['top1']:.4f}"

    def describe(self) -> str:
        config = self.config
        return (f"teacher {config.teacher} -> student {config.student} ({config.method}, "
                f"{sum(p.numel() for p in self.model.parameters())} parameters)")

    def on_prepared(self, trainer: Trainer) -> None:
        """Evaluate the teacher on the test split once (``--eval-teacher``), for the report."""
        if self.config.eval_teacher:
            self.teacher_metrics = self.evaluate(self.teacher, trainer.test_loader, trainer.accelerator)
            logger.info("teacher %s: top-1 %.4f on the test split", self.config.teacher, self.teacher_metrics["top1"])

    def export(self, directory: Path, metrics: Mapping[str, float], selected_by: str) -> Path:
        dataset = describe_dataset(self.config.dataset)
        return export_model(self.model, directory, metrics=metrics,
                            dataset={"id": dataset, "split": "test", "name": f"{dataset} (test split)"},
                            recipe=self.config.to_dict(), data_config=self.data_config, selected_by=selected_by)

    def summary(self) -> dict[str, Any]:
        return {"method": self.config.method, "teacher": self.teacher_metrics,
                "checkpoints_dir": str(Path(self.config.output_dir) / CHECKPOINTS_DIR_NAME)}


def distill(config: DistillConfig, callbacks: Iterable[Callback] = ()) -> dict[str, Any]:
    """Run the distillation described by ``config`` (with extra ``callbacks``); returns the summary also written to
    ``metrics.json``: ``best`` (chosen by validation top-1, exported to ``<output_dir>/model``), ``last``,
    ``history``, ``teacher`` (its top-1), ``method``."""
    config.validate()
    return Trainer(DistillationTask(config), callbacks).run()
