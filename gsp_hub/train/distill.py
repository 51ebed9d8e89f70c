"""The configuration of a distillation run (`gsp-hub distill`): one typed dataclass, from defaults, YAML and flags.

Precedence: dataclass defaults < ``--config run.yaml`` < explicit flags; the resolved configuration is saved next
to the run as ``distill_config.yaml`` (:meth:`DistillConfig.save`, reloaded by ``DistillConfig.from_yaml``). The
run itself is :func:`gsp_hub.train.distillation.distill`. ``teacher``, ``teacher_weights`` and ``dataset`` have
no default: a distillation needs a trained teacher on the student's label set, e.g. CIFAR-10::

    DistillConfig(teacher="cifar_resnet56", teacher_weights="../shared/data/cifar10-resnets/resnet56.safetensors",
                  dataset="../shared/data/cifar10-jpeg", student="cifar_resnet20", method="letkd2")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from gsp_hub.train.config import RunConfig, option, shared_option

if TYPE_CHECKING:
    from gsp_hub.hub.loading import ModelSource

__all__ = ["DISTILL_CONFIG_FILE_NAME", "METHODS", "DistillConfig"]

DISTILL_CONFIG_FILE_NAME = "distill_config.yaml"
METHODS = ("vanilla", "kd", "letkd1", "letkd2")


@dataclass(kw_only=True)
class DistillConfig(RunConfig):
    """Everything a distillation run depends on (see each field's ``help``; the data, optimisation and run options
    are the shared :class:`~gsp_hub.train.config.RunConfig` ones); ``teacher``, ``teacher_weights`` and ``dataset``
    have no default."""

    FILE_NAME: ClassVar[str] = DISTILL_CONFIG_FILE_NAME
    KIND: ClassVar[str] = "distillation"

    # models
    teacher: str = option("", "timm name of the teacher, e.g. cifar_resnet56 (required)", group="model")
    teacher_weights: str = option("", "teacher weights: a safetensors state_dict of --teacher (e.g. ../shared/data/"
                                  "cifar10-resnets/resnet56.safetensors) or any gsp_hub.load_model spec: an export or "
                                  "run folder, a Hub id, a zoo model (required)", group="model")
    student: str = option("cifar_resnet20", "timm name of the student", group="model")
    student_weights: str = option("", "start the student from these weights instead of a random init (fine-tuning):"
                                  " a safetensors state_dict of --student (e.g. ../shared/data/cifar10-resnets/"
                                  "resnet20.safetensors) or any gsp_hub.load_model spec; letKD layers still start "
                                  "fresh",
                                  group="model")
    method: str = option("letkd1", "vanilla (CE), kd (Hinton, T=4), letkd1 (penultimate KD layer), letkd2 (+ the "
                         "intermediate layer)", group="model", choices=METHODS)
    img_size: int = option(32, "square input size in pixels", group="model", minimum=1)
    num_codes: int = option(4096, "letKD penultimate codewords K (k-means on the teacher's last map)", group="model",
                            minimum=1)
    subclasses_per_class: int = option(8, "letKD-2 sub-classes per class (intermediate K = classes x this)",
                                       group="model", minimum=1)
    lda_dim: int = option(60, "letKD-2 LDA dimensions (capped at classes - 1 and the teacher's channels)",
                          group="model", minimum=1)
    alpha_pen: float = option(1.0, "letKD feed-forward weight of the penultimate layer", group="model", minimum=0.0)
    alpha_inter: float = option(1.0, "letKD-2 feed-forward weight of the intermediate layer", group="model",
                                minimum=0.0)
    target_batches: int = option(0, "letKD targets: fit on the first N non-augmented train batches (0: all)",
                                 group="model", minimum=0)
    kd_temperature: float = option(4.0, "Hinton KD temperature", group="model", greater_than=0.0)

    # data
    dataset: str = option("", "data set with its own train/test splits: a local Hub-layout folder (e.g. "
                          "../shared/data/cifar10-jpeg), a .parquet file or a Hub id (required)", group="data")
    max_train_images: int = option(0, "use a seeded random subset of this many train images (0: all)", group="data",
                                   minimum=0)
    max_test_images: int = option(0, "use a seeded random subset of this many test (and validation) images (0: "
                                  "all)", group="data", minimum=0)
    verify_images: bool = shared_option("verify_images", False)
    augment: str = option("cifar", "training augmentation: cifar (random crop with 4 px reflect padding + flip) or "
                          "timm (timm's RandomResizedCrop recipe)", group="data", choices=("cifar", "timm"))

    # optimisation
    optimizer: str = option("sgd", "sgd (momentum 0.9, Nesterov, as LeTKD) or adamw", group="optimisation",
                            choices=("sgd", "adamw"))
    lr: float = shared_option("lr", 0.05)
    weight_decay: float = shared_option("weight_decay", 5e-4)
    epochs: int = shared_option("epochs", 240)

    # run
    output_dir: str = shared_option("output_dir", "runs/distill")
    eval_at_start: bool = shared_option("eval_at_start", False)
    eval_teacher: bool = option(True, "measure the teacher's top-1 on the test split once (in metrics.json)",
                                group="run")

    def check_inputs(self) -> None:
        """The required inputs are given and exist (checked before any work): teacher, teacher_weights, dataset."""
        missing = [flag for flag, value in (("--teacher", self.teacher), ("--teacher-weights", self.teacher_weights),
                                            ("--dataset", self.dataset)) if not value]
        if missing:
            raise ValueError(
                f"distillation needs {', '.join(missing)}; e.g. --teacher cifar_resnet56 --teacher-weights "
                "../shared/data/cifar10-resnets/resnet56.safetensors --dataset ../shared/data/cifar10-jpeg."
            )
        import timm

        from gsp_hub.models.registry import unknown_model_error

        if Path(self.teacher_weights).is_file() and self.teacher not in timm.list_models():
            raise unknown_model_error(self.teacher, "--teacher")
        self.weights_source("teacher")
        if self.student not in timm.list_models():
            raise unknown_model_error(self.student, "--student")
        if self.student_weights:
            self.weights_source("student")

    def weights_source(self, role: Literal["teacher", "student"]) -> ModelSource:
        """``--teacher-weights`` / ``--student-weights`` located by :func:`gsp_hub.hub.locate_model` (no model is
        built): a safetensors file of ``--teacher`` / ``--student``, or any other load_model spec."""
        from gsp_hub.hub.loading import locate_model

        architecture, weights = (self.teacher, self.teacher_weights) if role == "teacher" else \
            (self.student, self.student_weights)
        try:
            return locate_model(architecture, weights=weights) if Path(weights).is_file() else locate_model(weights)
        except (FileNotFoundError, ValueError) as error:
            raise type(error)(f"--{role}-weights {weights}: {error}") from error

    @property
    def is_letkd(self) -> bool:
        return self.method.startswith("letkd")
