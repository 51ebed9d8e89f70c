"""The timm model contract on every gsp_hub name: what timm's own ``tests/test_models.py`` checks under its markers
``base`` (forward, backward), ``cfg`` (complete pretrained configs; ``forward_features`` / ``forward_head`` /
``reset_classifier`` shapes) and ``features`` (``features_only=True``, ``forward_intermediates``), in our words and
at small input sizes. Shape-only checks at a config's full input size run on the meta device (no compute).

Kept in step with timm 1.0.31's suite, which passes on these names too (run it from a checkout of timm's repository
with a conftest that imports gsp_hub; see the README's "timm compatibility").
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import get_model_args, get_model_input_config

from gsp_hub.models import list_gsp_models
from gsp_hub.models.zoo import ZOO

ARCHITECTURES = list_gsp_models()
# The cfg checks also cover every pretrained tag (the zoo), as timm's list_models(include_tags=True) does.
CONFIG_NAMES = timm.list_models(ARCHITECTURES, include_tags=True)
SMALL = 64  # pixels: the input side of the forward / backward / feature checks


def test_every_zoo_tag_is_checked() -> None:
    assert set(ZOO) <= set(CONFIG_NAMES) and set(ARCHITECTURES) <= set(CONFIG_NAMES)


def small_model_kwargs(name: str) -> dict[str, Any]:
    """ViT-family models have a fixed input size: timm's img_size argument makes it small."""
    return {"img_size": SMALL} if timm.get_pretrained_cfg(name).fixed_input_size else {}


def small_input(name: str, batch_size: int) -> torch.Tensor:
    channels, height, _ = timm.get_pretrained_cfg(name).input_size
    side = min(height, SMALL)
    return torch.randn(batch_size, channels, side, side)


def spatial_and_channel_axes(model: torch.nn.Module) -> tuple[tuple[int, int], int]:
    output_fmt = getattr(model, "output_fmt", "NCHW")
    return tuple(get_spatial_dim(output_fmt)), get_channel_dim(output_fmt)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_pretrained_cfg_is_complete_and_describes_the_model(name: str) -> None:
    """timm's test_model_default_cfgs: pool_size is the forward_features grid at input_size, first_conv (and the
    classifier, when the config has classes) name real weights, and the pooling can be removed (the pooled widths
    are checked by the forward test: GSP's solve does not run on the meta device)."""
    cfg = timm.get_pretrained_cfg(name)
    assert len(cfg.input_size) == 3 and len(cfg.pool_size) == 2 and isinstance(cfg.fixed_input_size, bool)
    assert cfg.first_conv and cfg.classifier and cfg.mean and cfg.std
    with torch.device("meta"):
        model = timm.create_model(name).eval()
        weights = model.state_dict()
        assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
        images = torch.empty(1, *cfg.input_size)
        spatial, channel = spatial_and_channel_axes(model)
        features = model.forward_features(images)
        assert tuple(features.shape[axis] for axis in spatial) == cfg.pool_size
        assert features.shape[channel] == model.num_features
        model.reset_classifier(0, "")
        unpooled = model(images)
        assert model.num_classes == 0
        assert unpooled.ndim == 4 and tuple(unpooled.shape[axis] for axis in spatial) == cfg.pool_size
        built_unpooled = timm.create_model(name, num_classes=0, global_pool="").eval()(images)
        assert built_unpooled.ndim == 4 and tuple(built_unpooled.shape[axis] for axis in spatial) == cfg.pool_size
    assert f"{cfg.first_conv}.weight" in weights
    if cfg.num_classes:
        assert f"{cfg.classifier}.weight" in weights


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_forward_backward_and_classifier_reset(name: str) -> None:
    """timm's test_model_forward / test_model_backward: finite outputs, a gradient for every parameter, the same
    output with gradient checkpointing; reset_classifier(0) gives the pre-logits."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=42, **small_model_kwargs(name)).train()
    images = small_input(name, batch_size=2)
    logits = model(images)
    assert logits.shape == (2, 42) and torch.isfinite(logits).all()
    logits.mean().backward()
    missing = [parameter_name for parameter_name, parameter in model.named_parameters() if parameter.grad is None]
    assert not missing
    model.eval()
    with torch.no_grad():
        reference = model(images)
        if hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing()
            torch.testing.assert_close(model(images), reference, rtol=1e-4, atol=1e-5)
        pre_logits = model.forward_head(model.forward_features(images), pre_logits=True)
        model.reset_classifier(0)
        torch.testing.assert_close(model(images), pre_logits)
    assert pre_logits.shape == (2, model.head_hidden_size)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_features_only_and_forward_intermediates_give_the_feature_info_levels(name: str) -> None:
    """timm's test_model_forward_features / test_model_forward_intermediates: every feature_info level, with its
    channels and at most ceil(size / reduction) + 1 locations per side; the final output is forward_features'."""
    torch.manual_seed(0)
    images = small_input(name, batch_size=1)
    extractor = timm.create_model(name, features_only=True, **small_model_kwargs(name)).eval()
    channels, reductions = extractor.feature_info.channels(), extractor.feature_info.reduction()
    assert len(channels) >= 3
    with torch.no_grad():
        maps = extractor(images)
    assert len(maps) == len(channels)
    for width, reduction, feature_map in zip(channels, reductions, maps):
        assert feature_map.shape[1] == width and torch.isfinite(feature_map).all()
        assert all(size <= math.ceil(images.shape[-1] / reduction) + 1 for size in feature_map.shape[-2:])

    model = timm.create_model(name, **small_model_kwargs(name)).eval()
    assert [info["num_chs"] for info in model.feature_info] == channels
    assert all(model.get_submodule(info["module"]) is not None for info in model.feature_info)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(images)
        torch.testing.assert_close(final, model.forward_features(images))
        last_two = model.forward_intermediates(images, indices=2, intermediates_only=True)
    assert [level.shape for level in intermediates] == [level.shape for level in maps]
    assert [level.shape for level in last_two] == [level.shape for level in maps[-2:]]


@pytest.mark.parametrize("name", [name for name in ARCHITECTURES if timm.get_pretrained_cfg(name).fixed_input_size])
def test_vit_backbones_take_timm_input_size_arguments(name: str) -> None:
    """img_size / dynamic_img_size reach the backbone; set_input_size resizes it and is recorded for exports."""
    torch.manual_seed(0)
    dynamic = timm.create_model(name, dynamic_img_size=True).eval()
    assert get_model_input_config(dynamic)["fixed_input_size"] is False
    with torch.no_grad():
        assert dynamic.forward_features(torch.randn(1, 3, 32, 48)).shape[1:3] == (2, 3)

    model = timm.create_model(name, img_size=32).eval()
    assert get_model_input_config(model) == {"input_size": (3, 32, 32), "fixed_input_size": True,
                                             "first_conv": "backbone.patch_embed.proj"}
    model.set_input_size(img_size=48)
    with torch.no_grad():
        resized = model(torch.randn(1, 3, 48, 48))
    assert resized.shape == (1, model.head_hidden_size)
    args = get_model_args(model)
    assert tuple(args["img_size"]) == (48, 48)
    rebuilt = timm.create_model(name, **args)
    rebuilt.load_state_dict(model.state_dict())  # the recorded arguments build the resized architecture
