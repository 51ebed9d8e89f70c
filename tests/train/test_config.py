"""The run configurations: shared options declared once, validation from field metadata, ``*_kwargs`` checked
against their factories when the config is built, YAML round trips."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from gsp_hub.cli import main
from gsp_hub.train.config import RunConfig, TrainConfig
from gsp_hub.train.distill import DistillConfig


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "fast"])
def test_float_options_reject_nan_inf_bool_and_text(value) -> None:
    with pytest.raises(ValueError, match=rf"^lr must be a finite number >= 0, got {re.escape(repr(value))}"):
        TrainConfig(lr=value)
    with pytest.raises(ValueError, match=rf"^kd_temperature must be a finite number > 0, got {re.escape(repr(value))}"):
        DistillConfig(kd_temperature=value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "epochs must be an int >= 1, got 0; pass e.g. epochs=1."),
        ({"epochs": True}, "epochs must be an int >= 1, got True."),
        ({"num_workers": -1}, "num_workers must be an int >= 0, got -1"),
        ({"validation_fraction": 0.6}, "validation_fraction must be a number in [0, 0.5], got 0.6"),
        ({"validation_fraction": math.nan}, "validation_fraction must be a number in [0, 0.5], got nan"),
        ({"crop_pct": 0.0}, "crop_pct must be a finite number > 0, got 0.0"),
        ({"scheduler": "linear"}, "scheduler must be one of ('cosine', 'constant'), got 'linear'"),
        ({"pool_kwargs": ["gamma=5"]}, "pool_kwargs must be a mapping, got ['gamma=5']"),
    ],
)
def test_options_are_checked_against_their_metadata(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**values)


def test_nan_learning_rate_fails_on_the_command_line_before_any_work(tmp_path, capsys) -> None:
    output = tmp_path / "run"
    assert main(["train", "--lr", "nan", "--output-dir", str(output)]) == 2
    assert "lr must be a finite number >= 0, got nan" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    ("values", "key", "accepted"),
    [
        ({"pool_kwargs": {"num_protos": 8}}, "num_protos", "GSP accepts ['add_max_pool', 'gamma', 'head', "
                                                           "'init', 'iters', 'memory_size', 'num_prototypes', "
                                                           "'transport_ratio']"),
        ({"model": "gap_resnet18", "pool_kwargs": {"num_prototypes": 8}}, "num_prototypes", "AvgPool takes no options"),
        ({"pool": "gem", "pool_kwargs": {"q": 3}}, "q", "GeM accepts ['eps', 'p']"),
        ({"loss_kwargs": {"alpah": 1.0}}, "alpah", "accepts ['alpha', 'base', 'beta']"),
        ({"loss": "xml+ms", "loss_kwargs": {"margin": 0.1}}, "margin", "accepts ['alpha', 'base', 'beta']"),
        ({"zsr_kwargs": {"rigde": 0.1}}, "rigde", "ZeroShotRegularizer accepts ['class_embedding_init', 'margin', "
         "'ridge', 'scale']"),
        ({"loss": "xml+ms", "xml_kwargs": {"num_classes": 3}}, "num_classes",
         "XMLLoss accepts ['convex', 'margin', 'ridge', 'scale', 'target', 'weight']"),
        ({"loss": "ccp", "ccp_kwargs": {"patients": 2}}, "patients", "'patience', 'pool_size'"),
        ({"augment_kwargs": {"input_size": 64}}, "input_size", "create_transform accepts ['auto_augment'"),
    ],
)
def test_unknown_kwargs_key_fails_at_construction_naming_it_and_the_accepted_ones(values, key, accepted) -> None:
    name = next(option for option in values if option.endswith("_kwargs"))
    with pytest.raises(ValueError, match=rf"^{name} has unknown key\(s\) \['{key}'\]; .*{re.escape(accepted)}"):
        TrainConfig(**values)


def test_known_kwargs_keys_pass() -> None:
    config = TrainConfig(pool_kwargs={"num_prototypes": 8, "gamma": 2.0}, loss="xbm",
                         loss_kwargs={"base": "ms", "memory_size": 256, "alpha": 1.0},  # xbm passes **base_kwargs on
                         zsr_kwargs={"ridge": 0.1}, augment_kwargs={"scale": [0.5, 1.0], "mean": [0.5, 0.5, 0.5]},
                         backbone_kwargs={"anything_timm_takes": 1})  # timm constructors take **kwargs: unchecked
    assert config.loss_kwargs["alpha"] == 1.0
    assert TrainConfig(loss="ccp", ccp_kwargs={"patience": 2, "pool_size": 4}).ccp_kwargs["pool_size"] == 4


def test_shared_options_are_declared_once_with_each_runs_defaults() -> None:
    shared = {spec.name for spec in dataclasses.fields(RunConfig)}
    assert {"lr", "batch_size", "seed", "output_dir", "validation_fraction", "test_split"} <= shared
    for config_cls in (TrainConfig, DistillConfig):
        fields = {spec.name: spec for spec in dataclasses.fields(config_cls)}
        assert all(fields[name].metadata == next(spec for spec in dataclasses.fields(RunConfig)
                                                 if spec.name == name).metadata for name in shared)
    assert (TrainConfig().lr, TrainConfig().output_dir, DistillConfig().lr, DistillConfig().output_dir) == (
        1e-3, "runs/train", 0.05, "runs/distill")


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(embed_dim=64, loss="xbm", loss_kwargs={"memory_size": 512}, lr=2, validation_fraction=0.2,
                    split_protocol="own", train_split="fit", validation_split="dev", test_split="eval", crop_pct=None),
        DistillConfig(teacher="cifar_resnet56", method="letkd2", kd_temperature=2.5, test_split="valid"),
    ],
)
def test_yaml_save_load_round_trip(tmp_path, config: RunConfig) -> None:
    path = config.save(tmp_path)
    assert path.name == config.FILE_NAME
    assert type(config).from_yaml(path) == config
    assert list(type(config).from_yaml(path).to_dict()) == list(config.to_dict())


def test_numbers_are_stored_as_plain_python_numbers() -> None:
    import numpy as np

    config = TrainConfig(lr=1, epochs=np.int64(3))
    assert type(config.lr) is float and type(config.epochs) is int


def test_the_default_zsr_gsp_and_augmentation_options_are_accepted_by_their_factories():
    """The defaults skip the construction-time kwargs check (it would import torch and timm): check them here."""
    import timm.data

    from gsp_hub.checks import check_kwargs
    from gsp_hub.layers.pooling import check_pool_kwargs
    from gsp_hub.losses import ZeroShotRegularizer
    from gsp_hub.train.config import DEFAULT_AUGMENT_KWARGS, DEFAULT_ZSR_KWARGS, GSP_TRAINING_DEFAULTS

    check_kwargs("zsr_kwargs", DEFAULT_ZSR_KWARGS, ZeroShotRegularizer, supplied=("num_classes", "embed_dim"))
    check_pool_kwargs("gsp", GSP_TRAINING_DEFAULTS)
    check_kwargs("augment_kwargs", DEFAULT_AUGMENT_KWARGS, timm.data.create_transform,
                 supplied=("is_training", "input_size", "crop_pct", "crop_mode"))
    defaults = TrainConfig()
    assert defaults.zsr_kwargs == DEFAULT_ZSR_KWARGS
    assert defaults.augment and defaults.augment_kwargs == DEFAULT_AUGMENT_KWARGS


def test_the_default_augmentation_only_flips_so_every_tile_stays_whole_in_a_cell():
    """Independent reference: the evaluation transform of the same image, flipped by torch. Every augmented copy of
    a collage is one of its four flips (none, left-right, upside down, both), and over 64 draws all four occur."""
    import numpy as np
    import torch
    from PIL import Image

    from gsp_hub.data.transforms import create_image_transforms
    from gsp_hub.train.config import DEFAULT_AUGMENT_KWARGS

    transforms = create_image_transforms(input_size=64, crop_pct=1.0, mean=(0.5,) * 3, std=(0.5,) * 3,
                                         **DEFAULT_AUGMENT_KWARGS)
    collage = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    plain = transforms.eval(collage)
    flips = {"none": plain, "left-right": plain.flip(-1), "upside down": plain.flip(-2),
             "both": plain.flip(-1).flip(-2)}
    torch.manual_seed(0)
    seen = set()
    for _ in range(64):
        augmented = transforms.train(collage)
        matches = [name for name, flipped in flips.items() if torch.equal(augmented, flipped)]
        assert len(matches) == 1, "an augmented collage is not a flip of the evaluated one"
        seen.add(matches[0])
    assert seen == set(flips)


def test_a_gsp_pool_trains_with_the_training_defaults_and_other_pools_without_them():
    from gsp_hub.train.metric_learning import training_pool_kwargs

    assert training_pool_kwargs(TrainConfig()) == {"transport_ratio": 0.15, "gamma": 20.0}
    assert training_pool_kwargs(TrainConfig(pool_kwargs={"gamma": 5.0})) == {"transport_ratio": 0.15, "gamma": 5.0}
    assert training_pool_kwargs(TrainConfig(pool="avg")) == {}
    assert training_pool_kwargs(TrainConfig(model="gsp_resnet18")) == {}  # a named model keeps its own
