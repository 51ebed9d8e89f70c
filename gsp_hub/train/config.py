"""The configuration of a training run: one typed dataclass, filled from defaults, a YAML file and CLI flags.

Precedence: dataclass defaults < ``--config run.yaml`` < explicit command-line flags. The resolved configuration
is saved next to every run (``train_config.yaml``) and reloads with :meth:`TrainConfig.from_yaml`. Every field
carries its help text in ``metadata["help"]``; the command line builds one flag per field from it
(:mod:`gsp_hub.train.commands`), so a new option is one field here.

The defaults are the no-argument job: a GSP model (timm ``test_resnet``, a 0.4 M-parameter ResNet, at output stride
8: 32x32 inputs give 4x4 local features) trained from scratch with multi-similarity + ZSR for 15 epochs on the
embedded Fashion-MNIST subset, zero-shot split (classes 0-4 train, 5-9 test). On that data timm's training
augmentation lowered held-out MAP@R (measured), so it is off by default (``--augment``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from gsp_hub.train.artifacts import atomic_write_text

__all__ = ["CONFIG_FILE_NAME", "RunConfig", "TrainConfig", "option"]

CONFIG_FILE_NAME = "train_config.yaml"


def option(default: Any, help: str, *, group: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with its command-line help, argument group and (optional) allowed values (the command
    line builds one flag per field from these: :func:`gsp_hub.train.commands.add_config_arguments`)."""
    metadata = {"help": help, "group": group, "choices": choices}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


class RunConfig:
    """Base of the run configurations (dataclasses of :func:`option` fields): build from a mapping or a YAML
    file, save as YAML next to the run (``FILE_NAME``). ``KIND`` names the run in error messages."""

    FILE_NAME: ClassVar[str]
    KIND: ClassVar[str]

    def check_choices(self) -> None:
        """ValueError for a field outside its ``choices`` or a ``*_kwargs`` field that is not a mapping."""
        for spec in dataclasses.fields(self):
            choices = spec.metadata.get("choices")
            if choices and getattr(self, spec.name) not in choices:
                raise ValueError(f"{spec.name} must be one of {choices}, got {getattr(self, spec.name)!r}.")
            if spec.name.endswith("_kwargs") and not isinstance(getattr(self, spec.name), dict):
                raise ValueError(f"{spec.name} must be a mapping, got {getattr(self, spec.name)!r}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Build from a mapping of field names (unknown names are an error that lists the valid ones)."""
        if not isinstance(values, dict):
            raise ValueError(f"a {cls.KIND} config must be a mapping of option names, got {type(values).__name__}.")
        known = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.KIND} option(s) {unknown}; valid options: {sorted(known)}.")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> Any:
        """Load a YAML mapping of options (e.g. a saved ``FILE_NAME``); ``overrides`` win over the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist; pass a YAML file of {cls.KIND} options.")
        import yaml  # here, not at module level: the command line imports this module to build its flags

        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"config file {path} is not valid YAML: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"config file {path} must hold a mapping of options, got {type(values).__name__}.")
        return cls.from_dict({**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``FILE_NAME`` into ``directory`` atomically; returns its path."""
        import yaml

        path = Path(directory) / self.FILE_NAME
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


@dataclass
class TrainConfig(RunConfig):
    """Everything a metric-learning run depends on (see each field's ``help``)."""

    FILE_NAME: ClassVar[str] = CONFIG_FILE_NAME
    KIND: ClassVar[str] = "training"

    # model
    model: str = option("metric_net", "timm architecture: metric_net (any --backbone) or a named gsp_*/gap_* model",
                         group="model")
    backbone: str = option("test_resnet", "timm backbone name for metric_net (named models fix their own)",
                           group="model")
    backbone_kwargs: dict[str, Any] = option(
        {"output_stride": 8},
        "keyword arguments of timm.create_model(backbone), as KEY=VALUE pairs (values parsed as YAML); the default "
        "output_stride=8 keeps a 4x4 map of local features at 32 px for ResNet/EfficientNet-style CNNs; pass the "
        "flag with no value for backbones without output_stride (ViTs)",
        group="model",
    )
    pretrained: bool = option(False, "start from the backbone's timm pretrained weights (must be in the local cache)",
                               group="model")
    pool: str | None = option(None, "pooling: gsp, avg, max, gem, ... (see `gsp-hub models`); default: the model's "
                               "own (gsp for metric_net)", group="model")
    pool_kwargs: dict[str, Any] = option(
        {},
        "keyword arguments of the pooling as KEY=VALUE pairs, e.g. for gsp: num_prototypes=64 transport_ratio=0.3 "
        "gamma=5 memory_size=1024 (pooled embeddings collected before the prototypes are initialised)",
        group="model",
    )
    embed_dim: int = option(128, "embedding width D (per-location linear embedding before pooling)", group="model")
    img_size: int = option(32, "square input size in pixels (0: the model's default data config)", group="model")
    channels_last: bool = option(False, "run the model in channels-last memory format", group="model")

    # data
    dataset: str = option("fashion-mnist-subset",
                           "data set: the embedded 'fashion-mnist-subset', a Hub id org/name, a local Hub-layout or "
                           "image folder, or a .parquet file", group="data")
    split_protocol: str = option("zero-shot", "zero-shot: first half of the classes to train, the rest to test; "
                                  "own: the data set's own train/test splits", group="data",
                                  choices=("zero-shot", "own"))
    image_column: str | None = option(None, "image column (default: detected)", group="data")
    label_column: str | None = option(None, "label column (default: detected)", group="data")
    verify_images: bool = option(True, "decode every image once before training to find corrupt files",
                                  group="data")
    skip_bad_images: bool = option(False, "drop corrupt images (with a counted warning) instead of failing",
                                    group="data")
    augment: bool = option(False, "train with timm's training augmentation (random resized crop, flip, colour "
                           "jitter; tuned by --augment-kwargs); off: training images get the evaluation transform",
                           group="data")
    augment_kwargs: dict[str, Any] = option(
        {}, "options of timm.data.create_transform(is_training=True) as KEY=VALUE pairs (scale, ratio, hflip, "
        "color_jitter, auto_augment, re_prob, ...)", group="data")
    crop_pct: float | None = option(1.0, "evaluation centre crop: resize to img_size / crop_pct, crop img_size "
                                    "(1.0 keeps the whole image; null in YAML: the model's default)", group="data")
    batch_size: int = option(64, "images per optimizer micro-step and process", group="data")
    m_per_class: int = option(16, "images of each class in a batch (batch_size / m_per_class classes per batch)",
                               group="data")
    num_workers: int = option(0, "DataLoader worker processes", group="data")
    eval_batch_size: int = option(256, "images per evaluation batch and process", group="data")

    # loss
    loss: str = option("ms", "metric-learning loss: contrastive, ms, proxy_anchor, xbm, ccp (CCP proxies with "
                       "their projection schedule), or xml+BASE (XML cross-batch prototype loss around BASE, e.g. "
                       "xml+ms; needs --pool proto or gsp)", group="loss")
    loss_kwargs: dict[str, Any] = option(
        {}, "keyword arguments of the base loss as KEY=VALUE pairs (e.g. memory_size=2048 base=ms for xbm)",
        group="loss")
    zsr_weight: float = option(0.1, "weight w of ZSR in (1 - w)·base + w·ZSR (pools with attributes only; 0: off)",
                                group="loss")
    zsr_kwargs: dict[str, Any] = option({}, "ZSR options as KEY=VALUE pairs: ridge (0.05), scale (9.5), margin (0)",
                                         group="loss")
    xml_kwargs: dict[str, Any] = option(
        {}, "XML options for --loss xml+BASE (it replaces ZSR) as KEY=VALUE pairs: weight (0.1), ridge (0.05), "
        "scale (9.5), margin (0), target (class_embeddings or sample_embeddings), convex (true)", group="loss")
    ccp_kwargs: dict[str, Any] = option(
        {}, "CCP projection schedule for --loss ccp as KEY=VALUE pairs: patience (3 evaluations without a better "
        "test MAP@R), min_delta (1e-5), lam (2e-4), lam_decay (1), restore_best_weights (true), kcenter_space "
        "(projected or raw), pool_size (samples per class; 12 below 1000 classes, else 7); CCPLoss options go to "
        "--loss-kwargs", group="loss")

    # optimisation
    epochs: int = option(15, "passes over the training split", group="optimisation")
    max_steps: int = option(0, "stop after this many optimizer steps (0: no limit); the learning-rate schedule "
                             "still spans --epochs", group="optimisation")
    lr: float = option(1e-3, "AdamW learning rate", group="optimisation")
    weight_decay: float = option(1e-4, "AdamW weight decay", group="optimisation")
    loss_lr_scale: float = option(1.0, "learning-rate multiplier of the loss parameters (proxies, ZSR class "
                                   "embeddings); proxy-anchor usually wants 100", group="optimisation")
    scheduler: str = option("cosine", "learning-rate schedule over all steps", group="optimisation",
                             choices=("cosine", "constant"))
    warmup_steps: int = option(0, "linear learning-rate warm-up steps", group="optimisation")
    grad_accum: int = option(1, "gradient accumulation micro-steps per optimizer step", group="optimisation")
    mixed_precision: str = option("no", "autocast precision of the model", group="optimisation",
                                   choices=("no", "bf16"))
    seed: int = option(0, "seed of weights, sampling and augmentation (same seed, same run)",
                        group="optimisation")

    # run
    output_dir: str = option("runs/train", "run folder: model/, metrics.json, checkpoints/, logs/, curves.png",
                              group="run")
    overwrite: bool = option(False, "start a new run even if --output-dir holds one (its files are replaced)",
                              group="run")
    resume: str | None = option(None, "continue a run: 'latest' (the newest checkpoint in --output-dir) or a "
                                 "checkpoint folder", group="run")
    save_every: int = option(0, "also save a checkpoint every N optimizer steps (0: only at the end of each epoch)",
                              group="run")
    checkpoints_total_limit: int = option(2, "checkpoints kept on disk (oldest deleted first)", group="run")
    eval_every: int = option(1, "evaluate every N epochs (and always at the end)", group="run")
    eval_at_start: bool = option(True, "evaluate the untrained model first (the baseline in metrics.json)",
                                  group="run")
    log_every: int = option(10, "log the training loss every N optimizer steps", group="run")
    cpu: bool = option(False, "train on the CPU even if a GPU is available", group="run")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for values no run can use (checked before any work is done)."""
        positive = ("embed_dim", "batch_size", "m_per_class", "eval_batch_size", "epochs", "grad_accum",
                    "checkpoints_total_limit", "eval_every", "log_every")
        non_negative = ("img_size", "num_workers", "max_steps", "warmup_steps", "save_every", "seed")
        for name in positive + non_negative:
            value = getattr(self, name)
            minimum = 1 if name in positive else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
        if self.batch_size % self.m_per_class:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of m_per_class={self.m_per_class} "
                             "(each batch holds m_per_class images of batch_size / m_per_class classes).")
        if self.batch_size // self.m_per_class < 2:
            raise ValueError(f"batch_size / m_per_class = {self.batch_size // self.m_per_class} classes per batch; "
                             "metric learning and ZSR need at least 2: raise batch_size or lower m_per_class.")
        for name in ("lr", "weight_decay", "loss_lr_scale", "zsr_weight"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a number >= 0, got {getattr(self, name)!r}.")
        if not 0.0 <= self.zsr_weight <= 1.0:
            raise ValueError(f"zsr_weight must lie in [0, 1] (convex combination), got {self.zsr_weight}.")
        if self.xml_kwargs and not self.loss.startswith("xml+"):
            raise ValueError(f"xml_kwargs={self.xml_kwargs} apply to loss='xml+BASE' only, got loss={self.loss!r}; "
                             "drop them or use e.g. --loss xml+ms.")
        if self.ccp_kwargs and self.loss != "ccp":
            raise ValueError(f"ccp_kwargs={self.ccp_kwargs} apply to loss='ccp' only, got loss={self.loss!r}; "
                             "drop them or use --loss ccp.")
        self.check_choices()
