"""The distillation loop: vanilla, Hinton KD, letKD-1 and letKD-2 on the training machinery.

A :class:`~gsp_hub.train.distill.DistillConfig` describes a run; :func:`distill` runs it.
:class:`Distiller` reuses :class:`~gsp_hub.train.loop.Trainer`'s epoch / evaluation / checkpoint schedule
(``run``, ``save_checkpoint``, resume, ``metrics.json``, ``curves.png``, tensorboard) and replaces the two halves
of an epoch: a training step ``student -> CE + method loss (teacher frozen) -> backward -> SGD/AdamW step``, and a
top-1 evaluation of the student alone on the test split.

Methods (shared/spec/letkd.md):

* ``vanilla``: CE only (the teacher is only evaluated, for reference);
* ``kd``: Hinton KD, ``0.1 * CE + 0.9 * T^2 * KL`` at T = 4 on the teacher's logits;
* ``letkd1`` / ``letkd2``: a :class:`~gsp_hub.kd.LeTKDLayer` at the penultimate map (and, letkd2, after the first
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

import itertools
import time
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import timm
import torch
import torch.nn.functional as F
from accelerate.data_loader import SkipBatchSampler
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T
from tqdm.auto import tqdm

import gsp_hub.models  # noqa: F401  (registers the gsp_hub architectures, cifar_resnet* included, with timm)
from gsp_hub.data import (
    collate_image_batch,
    create_image_transforms,
    load_image_dataset,
    make_splits,
    with_image_transform,
)
from gsp_hub.kd import LeTKDTargets, collect_teacher_locations
from gsp_hub.losses.distillation import DistillLossOutput, HintonKDLoss, LeTKDLoss
from gsp_hub.models.taps import TeacherTaps
from gsp_hub.train.artifacts import MODEL_DIR_NAME, export_model
from gsp_hub.train.data import SeededBatchDataset, eval_loader, prepare_eval_loaders
from gsp_hub.train.distill import DistillConfig
from gsp_hub.train.loop import (
    CHECKPOINTS_DIR_NAME,
    Trainer,
    check_output_dir,
    create_accelerator,
    prepare_output_dir,
    tensorboard_hparams,
)
from gsp_hub.train.state import RunState

__all__ = [
    "TARGETS_FILE_NAME",
    "Distiller",
    "check_num_classes",
    "create_student",
    "distill",
    "load_teacher",
    "predict",
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


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, accelerator: Any | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes (N,) and the loader's labels (N,) of a model over ``(images, labels)`` batches (gathered
    over processes when ``accelerator`` is given); only the images go through the model."""
    model.eval()
    predictions, labels = [], []
    for images, batch_labels in loader:
        batch_predictions = model(images).argmax(1)
        if accelerator is not None:
            batch_predictions, batch_labels = accelerator.gather_for_metrics((batch_predictions, batch_labels))
        predictions.append(batch_predictions.cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(predictions), torch.cat(labels)


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


# -- the run --------------------------------------------------------------------------------------------------------
class Distiller(Trainer):
    """One distillation run from a :class:`DistillConfig`.

    Shares :class:`~gsp_hub.train.loop.Trainer`'s schedule (``run``, ``save_checkpoint``, resume, ``summary``),
    step bookkeeping (``optimizer_step``, ``end_batch``, ``end_epoch``) and ``evaluate_and_record`` (by top-1), and
    builds its own parts: data, teacher, student, targets, loss, optimizer.
    """

    def __init__(self, config: DistillConfig) -> None:
        # Trainer.__init__ builds a metric-learning run; the attributes its methods use are set here instead.
        config.check_inputs()
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.accelerator = accelerator = create_accelerator(config)
        resume_dir = check_output_dir(config, self.output_dir, run_files=(TARGETS_FILE_NAME,))
        prepare_output_dir(config, accelerator, resume_dir)
        set_seed(config.seed)
        dataset = load_image_dataset(config.dataset, image_column=config.image_column,
                                     label_column=config.label_column, verify_images=config.verify_images,
                                     progress=accelerator.is_local_main_process)
        splits = make_splits(dataset, "own", train_split=config.train_split or "train",
                             validation_split=config.validation_split, test_split=config.test_split,
                             validation_fraction=config.validation_fraction, seed=config.seed)
        self.splits = splits
        self.num_classes = splits.num_classes
        self.teacher = load_teacher(config, splits.num_classes).to(accelerator.device)
        self.model = create_student(config, splits.num_classes)
        transforms = create_image_transforms(self.model, input_size=config.img_size)
        self.data_config = transforms.data_config
        train_rows = seeded_subset(splits.train, config.max_train_images, config.seed)
        test_rows = seeded_subset(splits.test, config.max_test_images, config.seed)
        validation_rows = (None if splits.validation is None
                           else seeded_subset(splits.validation, config.max_test_images, config.seed))
        augmentation = _cifar_augmentation(self.data_config) if config.augment == "cifar" else transforms.train
        self.train_data = SeededBatchDataset(with_image_transform(train_rows, augmentation), config.seed)
        self.plain_train = with_image_transform(train_rows, transforms.eval)
        test_data = with_image_transform(test_rows, transforms.eval)
        validation_data = None if validation_rows is None else with_image_transform(validation_rows, transforms.eval)
        logger.info("data: %s (%s); using %d train / %d validation / %d test images", config.dataset, splits.summary,
                    len(train_rows), 0 if validation_rows is None else len(validation_rows), len(test_rows))
        self.criterion = self._create_criterion(resume_dir is not None).to(accelerator.device)
        taps = self.criterion.targets.taps if isinstance(self.criterion, LeTKDLoss) else ()
        self.teacher_taps = (
            TeacherTaps(self.teacher, taps, getattr(self.model, "grid_sizes", None), with_logits=config.method == "kd")
            if config.method != "vanilla" else None
        )
        self.network, self.optimizer = accelerator.prepare(self.model, self._create_optimizer())
        self.test_loader, self.validation_loader = prepare_eval_loaders(
            accelerator, test_data, validation_data, config.eval_batch_size, config.num_workers)
        self.callbacks = []  # Trainer.run calls them; distillation has none
        self.state = RunState()
        self.saved_at_step = -1
        steps = len(train_rows) // (config.batch_size * accelerator.num_processes)
        self.batches_per_epoch = steps - steps % config.grad_accum
        if self.batches_per_epoch == 0:
            raise ValueError(f"the train split has {len(train_rows)} images, fewer than one batch of "
                             f"{config.batch_size} x {accelerator.num_processes} processes; lower --batch-size.")
        self.steps_per_epoch = self.batches_per_epoch // config.grad_accum
        self.total_steps = config.epochs * self.steps_per_epoch
        if resume_dir is not None:
            self._load_checkpoint(resume_dir)
        self.teacher_metrics = self._evaluate_teacher() if config.eval_teacher else None
        if accelerator.is_main_process:
            config.save(self.output_dir)
        accelerator.init_trackers("gsp_hub_distill", config=tensorboard_hparams(config))
        logger.info("teacher %s -> student %s (%s, %d parameters); %d steps per epoch of %d images, %d epochs",
                    config.teacher, config.student, config.method, sum(p.numel() for p in self.model.parameters()),
                    self.steps_per_epoch, config.batch_size, config.epochs)

    # -- parts ----------------------------------------------------------------------------------------------------
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
        path = self.output_dir / TARGETS_FILE_NAME
        if accelerator.is_main_process and not (resuming and path.is_file()):
            started = time.perf_counter()
            teacher = TeacherTaps(self.teacher, tuple(self.model.grid_sizes), self.model.grid_sizes)
            # Rows are often stored by class: a seeded shuffle makes the first --target-batches cover every class.
            plain = self.plain_train.shuffle(seed=config.seed)
            loader = eval_loader(plain, config.batch_size, config.num_workers)
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

    def _create_optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad], "initial_lr": config.lr,
                   "lr": config.lr}]
        if config.optimizer == "sgd":
            return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
        return torch.optim.AdamW(groups, weight_decay=config.weight_decay)

    def _stateful(self) -> dict[str, Any]:
        return {"run": self.state}  # the letKD targets live in TARGETS_FILE_NAME (and the model in the checkpoint)

    # -- evaluation -----------------------------------------------------------------------------------------------
    def _top1(self, model: nn.Module, loader: DataLoader) -> float:
        with torch.random.fork_rng(devices=[]):
            predictions, labels = predict(model, tqdm(loader, desc="evaluate", leave=False,
                                                      disable=not self.accelerator.is_local_main_process),
                                          self.accelerator)
        return float((predictions == labels).float().mean())

    def _evaluate_teacher(self) -> dict[str, float]:
        top1 = self._top1(self.teacher, self.test_loader)
        logger.info("teacher %s: top-1 %.4f on the test split", self.config.teacher, top1)
        return {"top1": top1}

    best_metric: ClassVar[str] = "top1"

    def compute_metrics(self, loader: DataLoader) -> dict[str, float]:
        """The student's top-1 accuracy on one evaluation split."""
        return {"top1": self._top1(self.network, loader)}

    def describe_metrics(self, metrics: dict[str, float]) -> str:
        """The top-1 accuracy as a log-line fragment."""
        return f"top-1 {metrics['top1']:.4f}"

    def export_best(self, metrics: dict[str, float]) -> None:
        directory = self.output_dir / MODEL_DIR_NAME
        dataset = {"id": self.config.dataset, "split": "test", "name": f"{self.config.dataset} (test split)"}
        export_model(self.model, directory, metrics=metrics, dataset=dataset, recipe=self.config.to_dict(),
                     data_config=self.data_config, selected_by=self.selected_by)
        logger.info("new best top-1 %.4f: student exported to %s", metrics["top1"], directory)

    # -- training -------------------------------------------------------------------------------------------------
    def _loss(self, images: torch.Tensor, labels: torch.Tensor) -> DistillLossOutput:
        if isinstance(self.criterion, LeTKDLoss):
            logits, tap_logits = self.network(images, return_tap_logits=True)
            return self.criterion(logits, labels, tap_logits, self.teacher_taps(images).maps)
        logits = self.network(images)
        if isinstance(self.criterion, HintonKDLoss):
            return self.criterion(logits, labels, self.teacher_taps(images).logits)
        loss = F.cross_entropy(logits, labels)
        return DistillLossOutput(loss, {"ce": loss.detach()})

    def train_one_epoch(self) -> bool:
        """Train the rest of the current epoch; returns False when ``max_steps`` stopped it before its end."""
        config, accelerator, state = self.config, self.accelerator, self.state
        self.train_data.set_epoch(state.epoch)
        batches = _epoch_batches(len(self.train_data), config.batch_size, seed=config.seed, epoch=state.epoch,
                                 num_replicas=accelerator.num_processes, rank=accelerator.process_index)
        loader = DataLoader(self.train_data, batch_sampler=SkipBatchSampler(batches, state.batch_in_epoch),
                            collate_fn=collate_image_batch, num_workers=config.num_workers,
                            generator=torch.Generator().manual_seed(config.seed + state.epoch))
        bar = self.epoch_progress_bar()
        self.network.train()
        for images, labels in itertools.islice(loader, self.batches_per_epoch - state.batch_in_epoch):
            images, labels = images.to(accelerator.device), labels.to(accelerator.device)
            with accelerator.accumulate(self.network):
                out = self._loss(images, labels)
                accelerator.backward(out.loss)
                self.optimizer_step()
            if self.end_batch(out.loss, bar, partial(self._distill_log_values, out)):
                break
        return self.end_epoch(bar)

    def _distill_log_values(self, out: DistillLossOutput) -> dict[str, float]:
        """Tensorboard scalars of a step: loss, learning rate and the loss parts."""
        return {"train/loss": out.loss.item(), "train/lr": self.optimizer.param_groups[0]["lr"],
                **{f"train/{name}": float(value) for name, value in out.parts.items()}}

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "method": self.config.method, "teacher": self.teacher_metrics,
                "checkpoints_dir": str(self.output_dir / CHECKPOINTS_DIR_NAME)}


def distill(config: DistillConfig) -> dict[str, Any]:
    """Run the distillation described by ``config``; returns the summary also written to ``metrics.json``:
    ``best`` (by top-1, exported to ``<output_dir>/model``), ``last``, ``history``, ``teacher`` (its top-1)."""
    config.validate()
    return Distiller(config).run()
