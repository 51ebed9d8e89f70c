"""swap_pooling: a gsp_hub pooling in any timm model, in place of its global pooling, every other weight kept."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from torch import nn

import gsp_hub
from gsp_hub.export import export_torch, load_torch_export
from gsp_hub.models import SwappedPool

SIZE = 64
# name -> (create_model kwargs, dotted name of the swapped pooling)
FAMILIES: dict[str, tuple[dict[str, Any], str]] = {
    "resnet18": ({}, "global_pool"),  # CNN: SelectAdaptivePool2d, NCHW, flattens
    "convnext_tiny": ({}, "head.global_pool"),  # NCHW, keeps (B, C, 1, 1) for the head's norm
    "vit_tiny_patch16_224": ({"img_size": SIZE}, "attn_pool"),  # tokens, class token left out
    "swin_tiny_patch4_window7_224": ({"img_size": SIZE, "window_size": 2}, "head.global_pool"),  # NHWC
}


def save_weights_file(name: str, path: Path) -> Path:
    """A local weights file standing in for downloaded pretrained weights (no network in tests)."""
    torch.manual_seed(1)
    torch.save(timm.create_model(name).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def pretrained_resnet(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    """resnet18 with its ImageNet pretrained config (1000 classes), loaded through timm from a local file."""
    path = save_weights_file("resnet18", tmp_path_factory.mktemp("weights") / "resnet18.pth")
    return timm.create_model("resnet18.a1_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def model_of(name: str, pretrained_resnet: nn.Module) -> tuple[nn.Module, str]:
    if name == "resnet18.a1_in1k":
        return copy.deepcopy(pretrained_resnet), "global_pool"
    kwargs, slot = FAMILIES[name]
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=7, **kwargs), slot


@pytest.mark.parametrize("name", [*FAMILIES, "resnet18.a1_in1k"])
def test_gsp_replaces_the_pooling_keeps_the_weights_and_trains(
    name: str, pretrained_resnet: nn.Module, tmp_path: Path
) -> None:
    model, slot = model_of(name, pretrained_resnet)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    assert gsp_hub.swap_pooling(model, "gsp", num_prototypes=4) is model
    swapped = model.get_submodule(slot)
    assert isinstance(swapped, SwappedPool) and isinstance(swapped.pool, gsp_hub.GSP)

    after = model.state_dict()
    assert all(torch.equal(after[key], value) for key, value in before.items())  # every weight kept
    assert all(key.startswith(f"{slot}.pool.") for key in after.keys() - before.keys())

    images = torch.randn(2, 3, SIZE, SIZE)
    logits = model.train()(images)
    assert logits.shape == (2, model.num_classes) and torch.isfinite(logits).all()
    assert model.forward_head(model.forward_features(images), pre_logits=True).shape == (2, model.head_hidden_size)
    logits.square().mean().backward()
    assert swapped.pool.prototypes.grad is not None and swapped.pool.prototypes.grad.abs().sum() > 0
    classifier = model.get_classifier()
    assert classifier.weight.grad is not None and classifier.weight.grad.abs().sum() > 0

    model.eval()
    result = export_torch(model, tmp_path / "swapped.pt2", example_inputs=images)
    assert result.path.is_file()
    new_batch = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(load_torch_export(result.path).module()(new_batch), model(new_batch),
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", [*FAMILIES, "eva02_tiny_patch14_224", "mobilenetv3_small_100"])
def test_average_pooling_swapped_in_gives_the_models_own_output(name: str) -> None:
    """Independent check of every layout: gsp_hub's avg in place of the model's own average pooling changes
    nothing (ViTs built with global_pool='avg'; EVA hands its prefix tokens to attn_pool, ViT does not)."""
    kwargs = FAMILIES.get(name, ({"img_size": 56} if name.startswith("eva") else {}, ""))[0]
    pooling = {"global_pool": "avg"} if "vit" in name or "eva" in name else {}
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, **kwargs, **pooling).eval()
    size = kwargs.get("img_size", SIZE)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(images)
        torch.testing.assert_close(gsp_hub.swap_pooling(model, "avg")(images), expected)
        torch.testing.assert_close(gsp_hub.swap_pooling(model, "avg")(images), expected)  # swapping again works


def test_models_without_one_global_pooling_and_unknown_pools_are_refused_unchanged() -> None:
    model = timm.create_model("resnet18", num_classes=5)
    with pytest.raises(ValueError, match="no_such_pool"):
        gsp_hub.swap_pooling(model, "no_such_pool")
    assert type(model.global_pool).__name__ == "SelectAdaptivePool2d"
    with pytest.raises(ValueError, match="global_pool=''"):
        gsp_hub.swap_pooling(timm.create_model("resnet18", num_classes=0, global_pool=""), "gsp")
    with pytest.raises(ValueError, match="reset_classifier"):
        gsp_hub.swap_pooling(timm.create_model("gsp_resnet18", embed_dim=8), "gsp")
