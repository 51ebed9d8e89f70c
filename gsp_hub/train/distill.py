"""The configuration of a distillation run (`gsp-hub distill`): one typed dataclass, from defaults, YAML and flags.

Precedence: dataclass defaults < ``--config run.yaml`` < explicit flags; the resolved configuration is saved next
to the run as ``distill_config.yaml`` (:meth:`DistillConfig.save`, reloaded by ``DistillConfig.from_yaml``). The
run itself is :func:`gsp_hub.train.distill_loop.distill`. ``teacher``, ``teacher_weights`` and ``dataset`` have
no default: a distillation needs a trained teacher on the student's label set, e.g. CIFAR-10::

    DistillConfig(teacher="cifar_resnet56", teacher_weights="../shared/data/cifar10-resnets/resnet56.safetensors",
                  dataset="../shared/data/cifar10-jpeg", student="cifar_resnet20", method="letkd2")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from gsp_hub.train.config import RunConfig, option

__all__ = ["DISTILL_CONFIG_FILE_NAME", "METHODS", "DistillConfig"]

DISTILL_CONFIG_FILE_NAME = "distill_config.yaml"
METHODS = ("vanilla", "kd", "letkd1", "letkd2")


@dataclass
class DistillConfig(RunConfig):
    """Everything a distillation run depends on (see each field's ``help``); ``teacher``, ``teacher_weights`` and
    ``dataset`` have no default."""

    FILE_NAME: ClassVar[str] = DISTILL_CONFIG_FILE_NAME
    KIND: ClassVar[str] = "distillation"

    # models
    teacher: str = option("", "timm name of the teacher, e.g. cifar_resnet56 (required)", group="model")
    teacher_weights: str = option("", "teacher weights: a safetensors state_dict (e.g. ../shared/data/cifar10-resnets/"
                                  "resnet56.safetensors) or a gsp_hub export folder (required)", group="model")
    student: str = option("cifar_resnet20", "timm name of the student", group="model")
    student_weights: str = option("", "start the student from these weights instead of a random init (fine-tuning):"
                                  " a safetensors state_dict (e.g. ../shared/data/cifar10-resnets/resnet20."
                                  "safetensors) or a gsp_hub export folder; letKD layers still start fresh",
                                  group="model")
    method: str = option("letkd1", "vanilla (CE), kd (Hinton, T=4), letkd1 (penultimate KD layer), letkd2 (+ the "
                         "intermediate layer)", group="model", choices=METHODS)
    img_size: int = option(32, "square input size in pixels", group="model")
    num_codes: int = option(4096, "letKD penultimate codewords K (k-means on the teacher's last map)", group="model")
    subclasses_per_class: int = option(8, "letKD-2 sub-classes per class (intermediate K = classes x this)",
                                       group="model")
    lda_dim: int = option(60, "letKD-2 LDA dimensions (capped at classes - 1 and the teacher's channels)",
                          group="model")
    alpha_pen: float = option(1.0, "letKD feed-forward weight of the penultimate layer", group="model")
    alpha_inter: float = option(1.0, "letKD-2 feed-forward weight of the intermediate layer", group="model")
    target_batches: int = option(0, "letKD targets: fit on the first N non-augmented train batches (0: all)",
                                 group="model")
    kd_temperature: float = option(4.0, "Hinton KD temperature", group="model")

    # data
    dataset: str = option("", "data set with its own train/test splits: a local Hub-layout folder (e.g. "
                          "../shared/data/cifar10-jpeg), a .parquet file or a Hub id (required)", group="data")
    max_train_images: int = option(0, "use a seeded random subset of this many train images (0: all)", group="data")
    max_test_images: int = option(0, "use a seeded random subset of this many test images (0: all)", group="data")
    image_column: str | None = option(None, "image column (default: detected)", group="data")
    label_column: str | None = option(None, "label column (default: detected)", group="data")
    verify_images: bool = option(False, "decode every image once before training to find corrupt files",
                                 group="data")
    augment: str = option("cifar", "training augmentation: cifar (random crop with 4 px reflect padding + flip) or "
                          "timm (timm's RandomResizedCrop recipe)", group="data", choices=("cifar", "timm"))
    batch_size: int = option(64, "training images per step and process", group="data")
    eval_batch_size: int = option(256, "images per evaluation batch and process", group="data")
    num_workers: int = option(0, "DataLoader worker processes", group="data")

    # optimisation
    optimizer: str = option("sgd", "sgd (momentum 0.9, Nesterov, as LeTKD) or adamw", group="optimisation",
                            choices=("sgd", "adamw"))
    lr: float = option(0.05, "initial learning rate", group="optimisation")
    weight_decay: float = option(5e-4, "weight decay (every parameter, as LeTKD)", group="optimisation")
    scheduler: str = option("cosine", "learning-rate schedule over all steps", group="optimisation",
                            choices=("cosine", "constant"))
    warmup_steps: int = option(0, "linear learning-rate warm-up steps", group="optimisation")
    epochs: int = option(240, "passes over the training split (LeTKD: 240)", group="optimisation")
    max_steps: int = option(0, "stop after this many steps (0: no limit); the schedule still spans --epochs",
                            group="optimisation")
    grad_accum: int = option(1, "gradient accumulation micro-steps per optimizer step", group="optimisation")
    mixed_precision: str = option("no", "autocast precision", group="optimisation", choices=("no", "bf16"))
    seed: int = option(0, "seed of weights, data order, augmentation and targets", group="optimisation")

    # run
    output_dir: str = option("runs/distill", "run folder: model/, metrics.json, checkpoints/, logs/, curves.png",
                             group="run")
    overwrite: bool = option(False, "start a new run even if --output-dir holds one", group="run")
    resume: str | None = option(None, "continue a run: 'latest' or a checkpoint folder", group="run")
    save_every: int = option(0, "also save a checkpoint every N steps (0: only at the end of each epoch)",
                             group="run")
    checkpoints_total_limit: int = option(2, "checkpoints kept on disk (oldest deleted first)", group="run")
    eval_every: int = option(1, "evaluate top-1 every N epochs (and always at the end)", group="run")
    eval_at_start: bool = option(False, "evaluate the untrained student first", group="run")
    eval_teacher: bool = option(True, "measure the teacher's top-1 on the test split once (in metrics.json)",
                                group="run")
    log_every: int = option(10, "log the training loss every N steps", group="run")
    cpu: bool = option(False, "run on the CPU even if a GPU is available", group="run")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ValueError for values no run can use (the required-input checks are in :meth:`check_inputs`)."""
        positive = ("img_size", "num_codes", "subclasses_per_class", "lda_dim", "batch_size", "eval_batch_size",
                    "epochs", "grad_accum", "checkpoints_total_limit", "eval_every", "log_every")
        non_negative = ("target_batches", "max_train_images", "max_test_images", "num_workers", "warmup_steps",
                        "max_steps", "seed", "save_every")
        for name in positive + non_negative:
            value, minimum = getattr(self, name), 1 if name in positive else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
        for name in ("lr", "weight_decay", "kd_temperature", "alpha_pen", "alpha_inter"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), (int, float)) \
                    or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}.")
        if self.kd_temperature == 0:
            raise ValueError("kd_temperature must be > 0, got 0.")
        self.check_choices()

    def check_inputs(self) -> None:
        """The required inputs are given and exist (checked before any work): teacher, teacher_weights, dataset."""
        missing = [flag for flag, value in (("--teacher", self.teacher), ("--teacher-weights", self.teacher_weights),
                                            ("--dataset", self.dataset)) if not value]
        if missing:
            raise ValueError(
                f"distillation needs {', '.join(missing)}; e.g. --teacher cifar_resnet56 --teacher-weights "
                "../shared/data/cifar10-resnets/resnet56.safetensors --dataset ../shared/data/cifar10-jpeg."
            )
        if not Path(self.teacher_weights).exists():
            raise FileNotFoundError(
                f"--teacher-weights {self.teacher_weights}: no such file or folder; pass a safetensors state_dict of "
                f"{self.teacher} or a gsp_hub export folder."
            )
        import timm

        from gsp_hub.models.registry import unknown_model_error

        if self.student_weights and not Path(self.student_weights).exists():
            raise FileNotFoundError(
                f"--student-weights {self.student_weights}: no such file or folder; pass a safetensors state_dict of "
                f"{self.student} or a gsp_hub export folder, or leave it empty for a random init."
            )
        if self.teacher not in timm.list_models() and not Path(self.teacher_weights).is_dir():
            raise unknown_model_error(self.teacher, "--teacher")
        if self.student not in timm.list_models():
            raise unknown_model_error(self.student, "--student")

    @property
    def is_letkd(self) -> bool:
        return self.method.startswith("letkd")
