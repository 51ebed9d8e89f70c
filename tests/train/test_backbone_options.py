"""What a run gives its backbone: --img-size for fixed-input-size backbones (ViT, Swin), output_stride 8 for CNNs that
take one; a ViT trains from the command line with no other flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from gsp_hub.cli import main
from gsp_hub.train import TrainConfig
from gsp_hub.train.metric_learning import backbone_input_kwargs, create_model


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"backbone": "resnet18"}, {"backbone_kwargs": {"output_stride": 8}}),
        ({"backbone": "resnet18", "backbone_kwargs": {"output_stride": 32}}, {"backbone_kwargs": {"output_stride": 32}}),
        ({"backbone": "mobilenetv3_small_100"}, {}),  # no output_stride argument
        ({"backbone": "vit_tiny_patch16_224", "img_size": 48}, {"img_size": 48}),
        ({"backbone": "vit_tiny_patch16_224", "img_size": 0}, {}),  # 0: the backbone's own input size
        ({"model": "gsp_vit_small_patch16_224", "img_size": 32}, {"img_size": 32}),
        ({"model": "gsp_resnet18"}, {"backbone_kwargs": {"output_stride": 8}}),
        ({"model": "hf-hub:org/name"}, {}),  # an export carries its own arguments
    ],
)
def test_backbone_input_kwargs(options: dict, expected: dict) -> None:
    assert backbone_input_kwargs(TrainConfig(**options)) == expected


def test_the_models_take_them() -> None:
    vit = create_model(TrainConfig(backbone="vit_tiny_patch16_224", img_size=32, embed_dim=8))
    cnn = create_model(TrainConfig(backbone="resnet18", embed_dim=8))
    with torch.no_grad():
        assert vit.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 2, 2, vit.num_features)
        assert cnn.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 4, 4, cnn.num_features)


def test_a_vit_trains_from_the_command_line_with_no_other_flag(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--backbone", "vit_tiny_patch16_224", "--img-size", "32", "--epochs", "1", "--max-steps",
                 "2", "--output-dir", str(run)]) == 0
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["model_args"]["backbone"] == "vit_tiny_patch16_224" and config["model_args"]["img_size"] == [32, 32]
    model = timm.create_model(f"local-dir:{run / 'model'}", pretrained=True).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, TrainConfig().embed_dim)
