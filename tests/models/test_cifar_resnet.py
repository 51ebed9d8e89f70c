"""CIFAR ResNet family: timm contract, strict loading of the shared CIFAR-10 weights, accuracy on real images."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from gsp_hub.models.cifar_resnet import CifarBasicBlock, CifarResNet, load_cifar10_weights

SHARED_DATA = Path(os.environ.get("GSP_HUB_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
WEIGHTS = SHARED_DATA / "cifar10-resnets"
TEST_PARQUET = SHARED_DATA / "cifar10-jpeg" / "data" / "test-00000-of-00001.parquet"
needs_shared_data = pytest.mark.skipif(
    not (WEIGHTS.is_dir() and TEST_PARQUET.is_file()), reason=f"shared CIFAR-10 data not found under {SHARED_DATA}"
)

# name -> (parameters with 10 classes, last-stage channels); the first four match the shared README's counts.
MODELS = {
    "cifar_resnet20": (269_722, 64),
    "cifar_resnet32": (464_154, 64),
    "cifar_resnet44": (658_586, 64),
    "cifar_resnet56": (853_018, 64),
    "cifar_resnet110": (1_727_962, 64),
    "cifar_resnet8x4": (1_166_506, 256),
    "cifar_resnet32x4": (7_366_826, 256),
}
# Top-1 on the full cifar10-jpeg test split stated in ../shared/data/cifar10-resnets/README.md.
README_TOP1 = {20: 81.03, 32: 82.56, 44: 82.67, 56: 83.20}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builds_from_defaults_forward_backward(name: str) -> None:
    num_params, channels = MODELS[name]
    model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == num_params
    assert model.num_features == channels and model.pretrained_cfg["input_size"] == (3, 32, 32)
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, channels, 8, 8)
    assert model.forward_head(features, pre_logits=True).shape == (2, channels)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_reset_classifier_and_features_only() -> None:
    model = timm.create_model("cifar_resnet20")
    model.reset_classifier(5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5) and model.get_classifier().out_features == 5
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    extractor = timm.create_model("cifar_resnet20", features_only=True)
    maps = extractor(torch.randn(2, 3, 32, 32))
    assert [m.shape[1:] for m in maps] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert extractor.feature_info.channels() == [16, 16, 32, 64]


def test_option_a_shortcut_matches_the_readme_definition() -> None:
    x = torch.randn(2, 16, 8, 8)
    block = CifarBasicBlock(16, 32, stride=2)
    assert torch.equal(block.shortcut(x), F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)))
    widening = CifarBasicBlock(32, 64, stride=1)  # x4 models: channel change at stride 1
    y = torch.randn(2, 32, 4, 4)
    assert torch.equal(widening.shortcut(y), F.pad(y, (0, 0, 0, 0, 16, 16)))


def _cifar10_test_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``step``-th test image (rows are sorted by class), preprocessed by the models' timm data config."""
    import pyarrow.parquet as pq

    table = pq.read_table(TEST_PARQUET)
    rows = table.take(list(range(0, table.num_rows, step))).to_pylist()
    config = timm.data.resolve_model_data_config(timm.create_model("cifar_resnet20"))
    transform = timm.data.create_transform(**config)
    images = [transform(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")) for row in rows]
    return torch.stack(images), torch.tensor([row["label"] for row in rows])


def _top1(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        predictions = torch.cat([model(chunk).argmax(1) for chunk in images.split(500)])
    return 100.0 * (predictions == labels).float().mean().item()


@needs_shared_data
def test_shared_weights_load_strict_and_classify_real_images() -> None:
    images, labels = _cifar10_test_batch(step=20)  # 500 images, 50 per class
    for depth in (20, 56):
        model = load_cifar10_weights(timm.create_model(f"cifar_resnet{depth}"), WEIGHTS / f"resnet{depth}.safetensors")
        accuracy = _top1(model.eval(), images, labels)
        # 500 images: binomial standard error ~1.7 points around the README's full-test figure.
        assert abs(accuracy - README_TOP1[depth]) < 5.0, (depth, accuracy)


@needs_shared_data
def test_timm_file_overlay_loads_the_same_weights() -> None:
    path = WEIGHTS / "resnet20.safetensors"
    via_timm = timm.create_model("cifar_resnet20", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    via_loader = load_cifar10_weights(timm.create_model("cifar_resnet20"), path)
    reference = via_loader.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in via_timm.state_dict().items())


@needs_shared_data
def test_load_cifar10_weights_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="blocks per stage"):
        load_cifar10_weights(timm.create_model("cifar_resnet32"), WEIGHTS / "resnet20.safetensors")
    with pytest.raises(ValueError, match="num_classes=100"):
        load_cifar10_weights(timm.create_model("cifar_resnet20", num_classes=100), WEIGHTS / "resnet20.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_cifar10_weights(timm.create_model("cifar_resnet20"), tmp_path / "missing.safetensors")
    with pytest.raises(TypeError, match="CifarResNet"):
        load_cifar10_weights(timm.create_model("resnet18"), WEIGHTS / "resnet20.safetensors")
    assert isinstance(timm.create_model("cifar_resnet20"), CifarResNet)


@pytest.mark.slow
@needs_shared_data
def test_resnet56_full_test_split_top1() -> None:
    images, labels = _cifar10_test_batch(step=1)
    model = load_cifar10_weights(timm.create_model("cifar_resnet56"), WEIGHTS / "resnet56.safetensors")
    accuracy = _top1(model.eval(), images, labels)
    assert accuracy >= 80.0 and abs(accuracy - README_TOP1[56]) < 0.5, accuracy
