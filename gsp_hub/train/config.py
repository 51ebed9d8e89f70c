"""The configuration of a run: typed dataclasses filled from defaults, a YAML file and CLI flags.

:class:`RunConfig` declares the options every run shares (data loading, optimisation, run folder) and validates any
run config; :class:`TrainConfig` (metric learning, here) and :class:`~gsp_hub.train.distill.DistillConfig` extend it.

Precedence: dataclass defaults < ``--config run.yaml`` < explicit command-line flags. The resolved configuration
is saved next to every run (``train_config.yaml``) and reloads with :meth:`TrainConfig.from_yaml`; a data set object given in Python
(``TrainConfig(dataset=DatasetDict(...))``) is saved as a description of it, so reloading needs the object again
(``from_yaml(path, dataset=...)``). Every field
carries its help text, group, choices and bounds in its metadata (:func:`option`); the command line builds one flag
per field from it (:mod:`gsp_hub.train.commands`) and :meth:`RunConfig.validate` checks every field against it when
the config is built, so a new option is one field here. Every ``*_kwargs`` mapping is checked against the signature
of the factory it goes to at that time too (:meth:`TrainConfig.check_factory_kwargs`).

The defaults are the no-argument job: a GSP model (timm ``test_resnet``, a 0.4 M-parameter ResNet, at output stride
8: 64x64 inputs give 8x8 local features, 4x4 locations per collage cell; GSP with the training defaults of
:data:`GSP_TRAINING_DEFAULTS`) trained from scratch with multi-similarity + ZSR (class embeddings initialised
``'unit'``) for 6 epochs on the embedded Fashion-Collage (:func:`gsp_hub.data.load_fashion_collage`: one Fashion-MNIST
label tile among three MNIST digits), on its own class splits (classes 0-3 train, 4-6 validation, 7-9 test; batches
of all 4 training classes x 15 images). Greyscale images are decoded to RGB like any other (``in_chans`` stays 3).
The job also reports what it must beat: raw-pixel nearest neighbours and the untrained model, and how much of the
pooling weight lies on the label tile (:mod:`gsp_hub.train.baselines`). Training augmentation is on, as
horizontal and vertical flips only (:data:`DEFAULT_AUGMENT_KWARGS`): a flip keeps a collage's 2x2 grid, where timm's
random resized crop would move the label tile off its cell (``--augment-kwargs`` with crop options restores it,
``--no-augment`` trains on the evaluation transform).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from gsp_hub.checks import check_float, check_int, check_kwargs
from gsp_hub.io import atomic_write_text

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

    InMemoryDataset: TypeAlias = Dataset | DatasetDict | IterableDataset | IterableDatasetDict
else:
    InMemoryDataset = Any  # not imported at run time: the command line builds its flags from this module, lightly

__all__ = [
    "CONFIG_FILE_NAME",
    "DEFAULT_AUGMENT_KWARGS",
    "DEFAULT_OUTPUT_STRIDE",
    "DEFAULT_ZSR_KWARGS",
    "GSP_TRAINING_DEFAULTS",
    "IN_MEMORY_DATASET_PREFIX",
    "OPTION_GROUPS",
    "RunConfig",
    "TrainConfig",
    "describe_dataset",
    "option",
    "option_kinds",
    "shared_option",
]

CONFIG_FILE_NAME = "train_config.yaml"
OPTION_GROUPS = ("model", "data", "loss", "optimisation", "run")  # the order of the options in --help and YAML
IN_MEMORY_DATASET_PREFIX = "<in-memory "  # how a saved config records a data set object (see describe_dataset)
DEFAULT_OUTPUT_STRIDE = 8  # given to backbones that take one, unless --backbone-kwargs sets it
# GSP options a training run uses unless --pool-kwargs sets them (the layer's own: transport_ratio 0.3, gamma 5, the
# official configs'). Measured on the default job's validation classes (benchmarks/RESULTS.md, Fashion-Collage): the
# transported fraction must stay below the informative fraction of the locations (a label tile is 1/4 of the map and
# its object about 60 % of the tile), and gamma 20 selected more sharply than 5 or 10.
GSP_TRAINING_DEFAULTS: dict[str, Any] = {"transport_ratio": 0.15, "gamma": 20.0}
# ZSR class embeddings of norm ~1 (gsp_hub.losses.zsr): with the TF framework's He-normal init and few classes the
# ZSR logits start at hundreds and its gradient swamps the base loss (measured on the default job, RESULTS.md)
DEFAULT_ZSR_KWARGS: dict[str, Any] = {"class_embedding_init": "unit"}
# The training augmentation unless --augment-kwargs sets another (timm.data.create_transform options): the whole image
# (a random resized crop at scale 1 and ratio 1), flipped left-right and upside down, each with probability 0.5, no
# colour jitter (0, not None: timm's no-op jitter still draws from the RNG, and the measured runs include those
# draws). A flip keeps a collage's 2x2 grid (every tile stays whole in a cell), a crop would not. Measured on the
# default job's validation classes (benchmarks/RESULTS.md, Fashion-Collage): validation MAP@R rose in 4 of 5 paired
# seeds, and with 6 epochs instead of 4 (more epochs overfit without it) in 4 of 5 again.
DEFAULT_AUGMENT_KWARGS: dict[str, Any] = {"scale": [1.0, 1.0], "ratio": [1.0, 1.0], "hflip": 0.5, "vflip": 0.5,
                                          "color_jitter": 0}


def describe_dataset(dataset: str | os.PathLike[str] | InMemoryDataset | None) -> str | None:
    """A path, Hub id or ``None`` as it is; a data set object as a readable record of it, e.g.
    ``"<in-memory DatasetDict: splits train (96 rows), test (32 rows)>"`` (a lone ``Dataset`` is split ``train``)."""
    if dataset is None or isinstance(dataset, (str, os.PathLike)):
        return None if dataset is None else os.fspath(dataset)
    splits = dataset.items() if isinstance(dataset, Mapping) else [("train", dataset)]
    sizes = ", ".join(f"{name} ({rows.num_rows} rows)" if hasattr(rows, "num_rows") else f"{name} (streamed)"
                      for name, rows in splits)
    return f"{IN_MEMORY_DATASET_PREFIX}{type(dataset).__name__}: splits {sizes}>"


def option(default: Any, help: str, *, group: str, choices: tuple[str, ...] | None = None,
           minimum: float | None = None, maximum: float | None = None, greater_than: float | None = None) -> Any:
    """A dataclass field with its command-line help, argument group, allowed values (``choices``) and bounds
    (inclusive ``minimum`` / ``maximum``, exclusive ``greater_than``), which :meth:`RunConfig.validate` checks.
    The command line builds one flag per field from these (:func:`gsp_hub.train.commands.add_config_arguments`).
    ``default=dataclasses.MISSING``: each run config sets its own default (:func:`shared_option`)."""
    metadata = {"help": help, "group": group, "choices": choices, "minimum": minimum, "maximum": maximum,
                "greater_than": greater_than}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)  # nested lists too
    return field(default=default, metadata=metadata)


def shared_option(name: str, default: Any) -> Any:
    """The :class:`RunConfig` option ``name`` (same help, group and bounds) with a run config's own default."""
    shared = {spec.name: spec for spec in dataclasses.fields(RunConfig)}
    return option(default, **shared[name].metadata)


@functools.cache
def option_kinds(config_cls: type) -> dict[str, tuple[type, bool]]:
    """``{field name: (kind, accepts None)}`` of a run config: the kind is the annotation without ``| None``
    and without type arguments (``int``, ``float``, ``str``, ``bool``, ``dict``)."""
    kinds = {}
    for name, hint in typing.get_type_hints(config_cls).items():
        if typing.get_origin(hint) is ClassVar:
            continue
        nullable = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
        if nullable:
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        kinds[name] = (typing.get_origin(hint) or hint, nullable)
    return kinds


@dataclass(kw_only=True)
class RunConfig:
    """The options every run shares (data loading, optimisation, run folder), declared once; the run configs
    (:class:`TrainConfig`, :class:`~gsp_hub.train.distill.DistillConfig`) extend it with their own. Options whose
    default differs by run have none here (each config gives it with :func:`shared_option`).

    Build from a mapping or a YAML file, save as YAML next to the run (``FILE_NAME``). ``KIND`` names the run in
    error messages. Construction validates every option (:meth:`validate`), before any work is done.
    """

    FILE_NAME: ClassVar[str]
    KIND: ClassVar[str]

    # data
    image_column: str | None = option(None, "image column (default: detected)", group="data")
    label_column: str | None = option(None, "label column (default: detected)", group="data")
    verify_images: bool = option(dataclasses.MISSING, "decode every image once before training to find corrupt "
                                 "files", group="data")
    validation_fraction: float = option(
        0.1, "fraction held out as validation data, which chooses the model: of the training classes (zero-shot "
        "protocol; rounded up, at least 2 classes), or of each training class's rows when the data set's own splits "
        "are used and it has no validation split; a data set that comes with its own train / validation / test "
        "classes (the embedded fashion-collage) validates on its validation classes for any value > 0; 0: no "
        "validation, the last model is kept",
        group="data", minimum=0.0, maximum=0.5)
    train_split: str | None = option(None, "the data set's training split, when its own splits are used (default: "
                                     "train)", group="data")
    validation_split: str | None = option(None, "the data set's validation split, when its own splits are used "
                                          "(default: validation, valid or val, else held out from the training "
                                          "split)", group="data")
    test_split: str | None = option(None, "the data set's test split, when its own splits are used (default: "
                                    "test)", group="data")
    batch_size: int = option(64, "training images per optimizer micro-step and process", group="data", minimum=1)
    eval_batch_size: int = option(256, "images per evaluation batch and process", group="data", minimum=1)
    num_workers: int = option(0, "DataLoader worker processes", group="data", minimum=0)

    # optimisation
    lr: float = option(dataclasses.MISSING, "initial learning rate (reached after --warmup-steps, then shaped by "
                       "--scheduler)", group="optimisation", minimum=0.0)
    weight_decay: float = option(dataclasses.MISSING, "weight decay of every parameter", group="optimisation",
                                 minimum=0.0)
    scheduler: str = option("cosine", "learning-rate schedule over all steps", group="optimisation",
                            choices=("cosine", "constant"))
    warmup_steps: int = option(0, "linear learning-rate warm-up steps", group="optimisation", minimum=0)
    epochs: int = option(dataclasses.MISSING, "passes over the training split", group="optimisation", minimum=1)
    max_steps: int = option(0, "stop after this many optimizer steps (0: no limit); the learning-rate schedule "
                            "still spans --epochs", group="optimisation", minimum=0)
    grad_accum: int = option(1, "gradient accumulation micro-steps per optimizer step", group="optimisation",
                             minimum=1)
    mixed_precision: str = option("no", "autocast precision of the model", group="optimisation",
                                  choices=("no", "bf16"))
    seed: int = option(0, "seed of everything random: weights, data order, augmentation, fitted targets (same "
                       "seed, same run)", group="optimisation", minimum=0)

    # run
    output_dir: str = option(dataclasses.MISSING, "run folder: model/, metrics.json, checkpoints/, logs/, "
                             "curves.png", group="run")
    overwrite: bool = option(False, "start a new run even if --output-dir holds one (its files are replaced)",
                             group="run")
    resume: str | None = option(None, "continue a run: 'latest' (the newest checkpoint in --output-dir) or a "
                                "checkpoint folder", group="run")
    save_every: int = option(0, "also save a checkpoint every N optimizer steps (0: only at the end of each epoch)",
                             group="run", minimum=0)
    checkpoints_total_limit: int = option(2, "checkpoints kept on disk (oldest deleted first)", group="run",
                                          minimum=1)
    eval_every: int = option(1, "evaluate every N epochs (and always at the end)", group="run", minimum=1)
    eval_at_start: bool = option(dataclasses.MISSING, "evaluate the untrained model first (the baselines in "
                                 "metrics.json)", group="run")
    log_every: int = option(10, "log the training loss and throughput (images/s) every N optimizer steps",
                            group="run", minimum=1)
    cpu: bool = option(False, "run on the CPU even if a GPU is available", group="run")
    reuse_freed_memory: bool = option(True, "on the CPU (Linux, glibc), keep the host memory a step frees for the "
                                      "next step instead of returning it to the system and faulting it in again "
                                      "(ResNet-50 steps 1.1-1.3x faster); returned when the run ends", group="run")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ValueError for a value no run can use, checked before any work is done: every option against its
        kind and the bounds / choices in its metadata (ints, finite floats, mappings), then
        :meth:`check_rules`."""
        for spec in dataclasses.fields(self):
            name, value = spec.name, getattr(self, spec.name)
            kind, nullable = option_kinds(type(self))[name]
            if value is None and nullable:
                continue
            bounds = {key: spec.metadata[key] for key in ("minimum", "maximum") if spec.metadata[key] is not None}
            if kind is int:  # stored as the plain Python number (numpy scalars would not save as YAML)
                setattr(self, name, check_int(name, value, **bounds))
            elif kind is float:
                setattr(self, name, check_float(name, value, greater_than=spec.metadata["greater_than"], **bounds))
            elif kind is dict and not isinstance(value, dict):
                raise ValueError(f"{name} must be a mapping, got {value!r}; pass KEY=VALUE pairs (or a YAML "
                                 "mapping).")
            choices = spec.metadata["choices"]
            if choices and value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
        self.check_rules()

    def check_rules(self) -> None:
        """The rules between options of one kind of run (ValueError); none by default."""

    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        """The options in reading order (``--help``, the saved YAML): by group (:data:`OPTION_GROUPS`), within a
        group the run's own options before the shared ones."""
        shared = {spec.name for spec in dataclasses.fields(RunConfig)}
        return sorted(dataclasses.fields(cls),
                      key=lambda spec: (OPTION_GROUPS.index(spec.metadata["group"]), spec.name in shared))

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
        return cls.from_dict(cls.yaml_values(path, **overrides))

    @classmethod
    def yaml_values(cls, path: str | os.PathLike[str], **overrides: Any) -> dict[str, Any]:
        """The options of :meth:`from_yaml` as a mapping, not yet built into a config (e.g. to lay them over a
        recipe's, :mod:`gsp_hub.train.recipes`)."""
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
        values = {**values, **overrides}
        dataset = values.get("dataset")
        if isinstance(dataset, str) and dataset.startswith(IN_MEMORY_DATASET_PREFIX):
            raise ValueError(f"config file {path} records a data set object passed in Python ({dataset}); "
                             f"it cannot be read back from the file: pass it again, {cls.__name__}.from_yaml(path, "
                             "dataset=<the Dataset or DatasetDict>), or give a path or Hub id with --dataset.")
        return values

    def to_dict(self) -> dict[str, Any]:
        """The options as plain values (YAML-safe; mappings copied), in :meth:`option_fields` order: a data set object
        is recorded by :func:`describe_dataset`."""
        return {spec.name: describe_dataset(getattr(self, spec.name)) if spec.name == "dataset"
                else copy.deepcopy(getattr(self, spec.name)) for spec in self.option_fields()}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``FILE_NAME`` into ``directory`` atomically; returns its path."""
        import yaml

        path = Path(directory) / self.FILE_NAME
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


@dataclass(kw_only=True)
class TrainConfig(RunConfig):
    """Everything a metric-learning run depends on (see each field's ``help``)."""

    FILE_NAME: ClassVar[str] = CONFIG_FILE_NAME
    KIND: ClassVar[str] = "training"

    # model
    model: str = option("metric_net", "timm architecture: metric_net (any --backbone) or a named gsp_*/gap_* model",
                        group="model")
    backbone: str = option("test_resnet", "timm backbone name for metric_net (named models fix their own)",
                           group="model")
    # Not checked against a signature: timm's model constructors take **kwargs (each family its own options).
    backbone_kwargs: dict[str, Any] = option(
        {},
        "keyword arguments of timm.create_model(backbone), as KEY=VALUE pairs (values parsed as YAML). Backbones that "
        f"take an output_stride get output_stride={DEFAULT_OUTPUT_STRIDE} unless set here (an 8x8 map of local "
        "features at 64 px for ResNet/EfficientNet-style CNNs; output_stride=32 restores the backbone's own); "
        "fixed-input-size backbones (ViT, Swin) get --img-size as img_size",
        group="model",
    )
    pretrained: bool = option(False, "start from the backbone's timm pretrained weights (must be in the local cache)",
                              group="model")
    pool: str | None = option(None, "pooling: gsp, avg, max, gem, ... (see `gsp-hub models`); default: the model's "
                              "own (gsp for metric_net)", group="model")
    pool_kwargs: dict[str, Any] = option(
        {},
        "keyword arguments of the pooling as KEY=VALUE pairs, e.g. for gsp: num_prototypes=64 transport_ratio=0.15 "
        "gamma=20 memory_size=1024 (pooled embeddings collected before the prototypes are initialised) head=gap|gmp "
        "add_max_pool=false init=memory_kcenter|weights_kcenter; a gsp pool trains with transport_ratio=0.15 gamma=20 "
        "unless set here (the layer's own defaults, 0.3 and 5, are the official configs')",
        group="model",
    )
    embed_dim: int = option(128, "embedding width D (per-location linear embedding before pooling)", group="model",
                            minimum=1)
    img_size: int = option(64, "square input size in pixels (0: the model's default data config)", group="model",
                           minimum=0)
    channels_last: bool = option(False, "run the model in channels-last memory format", group="model")
    compile: bool = option(False, "torch.compile the model for training, in place (the first steps compile it; "
                           "checkpoints and the exported model are unchanged; GSP's transport skips its "
                           "host-side NaN check under compile)", group="model")

    # data
    dataset: str | InMemoryDataset = option(
        "fashion-collage",
        "data set: the embedded 'fashion-collage' (Fashion-MNIST label tiles among MNIST digits, its own class "
        "splits) or 'fashion-mnist-subset', a Hub id org/name (the local cache when offline), a local "
        "save_to_disk, Hub-layout, parquet or image folder (root/<class>/<image>), a .parquet file, a .csv / "
        ".jsonl table of image paths (relative to the table) and labels, with an optional split column, or a DML "
        "benchmark in its official layout: cub200:ROOT, cars196:ROOT, sop:ROOT, inshop:ROOT; in Python also a "
        "datasets.Dataset or DatasetDict object", group="data")
    split_protocol: str = option("zero-shot", "zero-shot: first half of the classes to train (or the train split's "
                                  "classes when the data set comes split by class, as the benchmarks do; its last "
                                  "--validation-fraction held out as validation classes, or the validation split's "
                                  "classes when it has its own, as fashion-collage does), the rest to test; own: the "
                                  "data set's own train/validation/test splits, same classes in all", group="data",
                                  choices=("zero-shot", "own"))
    query_split: str | None = option(None, "with --gallery-split: test by searching this split's (test-class) rows "
                                     "in the gallery split's instead of leave-one-out (In-shop: query)", group="data")
    gallery_split: str | None = option(None, "the gallery of --query-split (In-shop: gallery)", group="data")
    verify_images: bool = shared_option("verify_images", True)
    skip_bad_images: bool = option(False, "drop corrupt images (with a counted warning) instead of failing",
                                   group="data")
    augment: bool = option(True, "train with timm's training augmentation as --augment-kwargs sets it (by default "
                           "flips only, which keep a collage's cells); off: training images get the evaluation "
                           "transform", group="data")
    augment_kwargs: dict[str, Any] = option(
        DEFAULT_AUGMENT_KWARGS, "options of timm.data.create_transform(is_training=True) as KEY=VALUE pairs (scale, "
        "ratio, hflip, vflip, color_jitter, auto_augment, re_prob, ...; given, they replace the whole default, and "
        "the options left out take timm's defaults: random resized crop 0.08-1, hflip 0.5, colour jitter 0.4)",
        group="data")
    crop_pct: float | None = option(1.0, "evaluation centre crop: resize to img_size / crop_pct, crop img_size "
                                    "(1.0 keeps the whole image; null in YAML: the model's default)", group="data",
                                    greater_than=0.0)
    batch_size: int = shared_option("batch_size", 60)  # the embedded job: its 4 training classes of 15
    m_per_class: int = option(15, "images of each class in a batch (batch_size / m_per_class classes per batch)",
                              group="data", minimum=1)

    # loss
    loss: str = option("ms", "metric-learning loss: contrastive, ms, proxy_anchor, xbm, ccp (CCP proxies with "
                       "their projection schedule), or xml+BASE (XML cross-batch prototype loss around BASE, e.g. "
                       "xml+ms; needs --pool proto or gsp)", group="loss")
    loss_kwargs: dict[str, Any] = option(
        {}, "keyword arguments of the base loss as KEY=VALUE pairs (e.g. memory_size=2048 base=ms for xbm)",
        group="loss")
    zsr_weight: float = option(0.1, "weight w of ZSR in (1 - w)·base + w·ZSR (pools with attributes only; 0: off)",
                               group="loss", minimum=0.0, maximum=1.0)
    zsr_kwargs: dict[str, Any] = option(
        DEFAULT_ZSR_KWARGS, "ZSR options as KEY=VALUE pairs: ridge (0.05), scale (9.5), margin (0), "
        "class_embedding_init (unit: logits within about ±scale; he: the TF framework's, logits of hundreds with few "
        "classes)", group="loss")
    xml_kwargs: dict[str, Any] = option(
        {}, "XML options for --loss xml+BASE (it replaces ZSR) as KEY=VALUE pairs: weight (0.1), ridge (0.05), "
        "scale (9.5), margin (0), target (class_embeddings or sample_embeddings), convex (true)", group="loss")
    ccp_kwargs: dict[str, Any] = option(
        {}, "CCP projection schedule for --loss ccp as KEY=VALUE pairs: patience (3 evaluations without a better "
        "test MAP@R), min_delta (1e-5), lam (2e-4), lam_decay (1), restore_best_weights (true), kcenter_space "
        "(projected or raw), pool_size (samples per class; 12 below 1000 classes, else 7); CCPLoss options go to "
        "--loss-kwargs", group="loss")

    # optimisation (AdamW)
    lr: float = shared_option("lr", 1e-3)
    weight_decay: float = shared_option("weight_decay", 1e-4)
    loss_lr_scale: float = option(1.0, "learning-rate multiplier of the loss parameters (proxies, ZSR class "
                                  "embeddings); proxy-anchor usually wants 100", group="optimisation", minimum=0.0)
    epochs: int = shared_option("epochs", 6)

    # run
    output_dir: str = shared_option("output_dir", "runs/train")
    eval_at_start: bool = shared_option("eval_at_start", True)

    def check_rules(self) -> None:
        """Batches hold whole classes, at least 2 of them; a query split comes with a gallery split; the XML / CCP
        options need their loss; every ``*_kwargs`` key is a keyword of the factory it goes to (checked here, before
        any model is built)."""
        if self.batch_size % self.m_per_class:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of m_per_class={self.m_per_class} "
                             "(each batch holds m_per_class images of batch_size / m_per_class classes).")
        if self.batch_size // self.m_per_class < 2:
            raise ValueError(f"batch_size / m_per_class = {self.batch_size // self.m_per_class} classes per batch; "
                             "metric learning and ZSR need at least 2: raise batch_size or lower m_per_class.")
        if self.xml_kwargs and not self.loss.startswith("xml+"):
            raise ValueError(f"xml_kwargs={self.xml_kwargs} apply to loss='xml+BASE' only, got loss={self.loss!r}; "
                             "drop them or use e.g. --loss xml+ms.")
        if (self.query_split is None) != (self.gallery_split is None):
            raise ValueError(f"query_split={self.query_split!r}, gallery_split={self.gallery_split!r}: a query/gallery "
                             "test needs both (e.g. --query-split query --gallery-split gallery), or neither.")
        if self.ccp_kwargs and self.loss != "ccp":
            raise ValueError(f"ccp_kwargs={self.ccp_kwargs} apply to loss='ccp' only, got loss={self.loss!r}; "
                             "drop them or use --loss ccp.")
        self.check_factory_kwargs()

    def check_factory_kwargs(self) -> None:
        """ValueError for a ``*_kwargs`` key that its factory does not take, naming the accepted keys. The factories
        are imported only for a non-empty, non-default mapping, so that the default config stays free of torch and timm."""
        if self.pool_kwargs:
            from gsp_hub.layers.pooling import check_pool_kwargs
            from gsp_hub.models.registry import default_pool

            pool = self.pool or default_pool(self.model)
            if pool is not None:  # None: a model outside gsp_hub, which reports its own options
                check_pool_kwargs(pool, self.pool_kwargs)
        if self.loss_kwargs:
            from gsp_hub.losses.registry import check_loss_kwargs

            check_loss_kwargs(self.loss.removeprefix("xml+"), self.loss_kwargs)
        if self.zsr_kwargs and self.zsr_kwargs != DEFAULT_ZSR_KWARGS:  # (the default is checked by the tests)
            from gsp_hub.losses import ZeroShotRegularizer

            check_kwargs("zsr_kwargs", self.zsr_kwargs, ZeroShotRegularizer, supplied=("num_classes", "embed_dim"))
        if self.xml_kwargs:
            from gsp_hub.losses import XMLLoss

            check_kwargs("xml_kwargs", self.xml_kwargs, XMLLoss, supplied=("base_loss", "num_classes", "embed_dim"))
        if self.ccp_kwargs:
            from gsp_hub.train.ccp_callback import create_ccp_schedule

            create_ccp_schedule(self.ccp_kwargs)  # checks the keys and values of the schedule options
        if self.augment_kwargs and self.augment_kwargs != DEFAULT_AUGMENT_KWARGS:  # (the default: by the tests)
            import timm.data

            # create_image_transforms sets is_training and the data config (input_size from --img-size, crop_pct
            # from --crop-pct, crop_mode from the model); mean, std and interpolation may be overridden.
            check_kwargs("augment_kwargs", self.augment_kwargs, timm.data.create_transform,
                         supplied=("is_training", "input_size", "crop_pct", "crop_mode"))
