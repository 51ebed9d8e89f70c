"""MetricNet and its timm registration: every registered model builds, runs forward + backward, and follows timm."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

import gsp_hub
from gsp_hub.hub import from_pretrained, save_pretrained
from gsp_hub.models import NAMED_MODELS, MetricNet, list_gsp_models

REQUIRED = ["gsp_resnet18", "gsp_resnet50", "gsp_tf_efficientnet_lite0", "gsp_vit_small_patch16_224", "gsp_convnext_tiny"]


def test_import_registers_required_models() -> None:
    listed = timm.list_models("gsp_*")
    assert set(REQUIRED) <= set(listed)
    assert "metric_net" in list_gsp_models()
    assert set(NAMED_MODELS) <= set(list_gsp_models())


@pytest.mark.parametrize("name", sorted(NAMED_MODELS))
def test_every_named_model_builds_from_defaults_and_trains(name: str) -> None:
    torch.manual_seed(0)
    backbone, pool = NAMED_MODELS[name]
    small_input = {"backbone_kwargs": {"img_size": 64}} if "vit" in backbone else {}
    model = timm.create_model(name, embed_dim=32, **small_input)
    assert model.global_pool == pool and model.head_hidden_size == 32
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["mean"] == timm.get_pretrained_cfg(backbone).mean
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 32) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert model.embed.weight.grad is not None and model.embed.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


def test_generic_metric_net_and_embed_dim_zero() -> None:
    model = timm.create_model("metric_net", backbone="resnet18", pool="gem", embed_dim=0)
    assert model.num_features == model.head_hidden_size == model.backbone.num_features == 512
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert timm.data.resolve_model_data_config(model)["mean"] == timm.get_pretrained_cfg("resnet18").mean


@pytest.mark.parametrize(
    "backbone, kwargs, grid",
    [
        ("resnet18", {}, (4, 4)),  # NCHW map: 128 px / 32
        ("vit_tiny_patch16_224", {"img_size": 128}, (8, 8)),  # tokens, 1 class token dropped
        ("swin_tiny_patch4_window7_224", {"img_size": 128, "window_size": 2}, (4, 4)),  # NHWC map
    ],
)
def test_local_feature_layout_and_avg_pool_equals_timm_average_pooling(
    backbone: str, kwargs: dict, grid: tuple[int, int]
) -> None:
    """Independent reference: the same backbone pooled by timm's own average pooling, then the linear embedding."""
    torch.manual_seed(0)
    model = MetricNet(backbone, pool="avg", embed_dim=16, backbone_kwargs=kwargs).eval()
    x = torch.randn(2, 3, 128, 128)
    local_features = model.forward_features(x)
    assert local_features.shape == (2, *grid, model.embed.in_features) == (2, *grid, model.num_features)
    timm_pooled = copy.deepcopy(model.backbone)
    timm_pooled.reset_classifier(0, "avg")
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.embed(timm_pooled(x)), atol=1e-5, rtol=1e-5)


def test_metric_net_on_a_cifar_resnet_backbone() -> None:
    """Regression: CifarResNet's head flattened the 8x8 map after ``reset_classifier(0, '')``, so MetricNet got
    (B, C*h*w) instead of local features."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    backbone = timm.create_model("cifar_resnet20", num_classes=0)
    backbone.reset_classifier(0, "")
    assert backbone.forward_head(backbone.forward_features(x), pre_logits=True).shape == (2, 64, 8, 8)
    backbone.reset_classifier(0, "avg")
    assert backbone.forward_head(backbone.forward_features(x), pre_logits=True).shape == (2, 64)
    model = timm.create_model("metric_net", backbone="cifar_resnet20", pool="avg", embed_dim=16).eval()
    assert model.forward_features(x).shape == (2, 8, 8, 64)
    timm_pooled = copy.deepcopy(model.backbone)
    timm_pooled.reset_classifier(0, "avg")
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.embed(timm_pooled(x)), atol=1e-5, rtol=1e-5)
    gsp = timm.create_model("metric_net", backbone="cifar_resnet20", embed_dim=16, num_prototypes=4)
    out = gsp(x)
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert gsp.backbone.conv1.weight.grad is not None


def test_forward_head_aux_and_classifier() -> None:
    torch.manual_seed(0)
    model = timm.create_model("gsp_resnet18", embed_dim=24, num_prototypes=8, num_classes=5)
    x = torch.randn(3, 3, 64, 64)
    local_features = model.forward_features(x)
    logits = model.forward_head(local_features)
    embedding, aux = model.forward_head(local_features, pre_logits=True, return_aux=True)
    assert logits.shape == (3, 5) and embedding.shape == (3, 24)
    assert isinstance(aux, gsp_hub.GSPOutput)
    assert aux.attributes.shape == (3, 8) and aux.weights.shape == (3, local_features.shape[1] * local_features.shape[2])
    torch.testing.assert_close(aux.attributes.sum(1), torch.ones(3))
    torch.testing.assert_close(aux.pooled, embedding)
    assert model.get_classifier() is model.head
    model.reset_classifier(0)
    assert model(x).shape == (3, 24) and model.num_classes == 0
    model.reset_classifier(7)
    assert model(x).shape == (3, 7)
    _, no_aux = timm.create_model("gap_resnet18", embed_dim=8).forward_head(local_features, return_aux=True)
    assert no_aux is None


def test_reset_classifier_changes_the_pooling_and_bad_arguments_raise() -> None:
    torch.manual_seed(0)
    model = timm.create_model("gsp_resnet18", embed_dim=8, num_prototypes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    gsp_pool = model.pool
    model.reset_classifier(3, global_pool="gsp")  # the same name keeps the pooling (and its trained state)
    assert model.pool is gsp_pool and model(x).shape == (2, 3)
    model.reset_classifier(0, global_pool="avg")
    assert model.global_pool == "avg" and isinstance(model.pool, gsp_hub.layers.AvgPool)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.embed(model.forward_features(x)).mean(dim=(1, 2)))
    model.reset_classifier(0, global_pool="")
    assert model(x).shape == (2, 2, 2, 8)  # no pooling: the embedded (B, h, w, D) map
    with pytest.raises(ValueError, match="no_such_pool"):
        model.reset_classifier(0, global_pool="no_such_pool")
    with pytest.raises(ValueError, match="embed_dim"):
        MetricNet("resnet18", embed_dim=-1)
    with pytest.raises(ValueError, match="no_such_pool"):
        MetricNet("resnet18", pool="no_such_pool")



@pytest.mark.parametrize(
    "options",
    [{"head": "gmp"}, {"add_max_pool": True}, {"init": "weights_kcenter", "memory_size": 1},
     {"head": "gmp", "add_max_pool": True, "init": "weights_kcenter", "memory_size": 1}],
)
def test_gsp_variants_build_through_timm_train_and_reload(options: dict, tmp_path) -> None:
    """Every official GSP variant is a pool option of metric_net: it builds, runs forward + backward (after the
    prototype init it needs) and reloads from an export with the same options and outputs."""
    torch.manual_seed(0)
    model = timm.create_model("metric_net", backbone="test_resnet", pool="gsp", embed_dim=16, num_prototypes=4,
                              **options)
    assert all(getattr(model.pool, name) == value for name, value in options.items())
    if model.pool.init == "weights_kcenter":
        model.pool.init_prototypes_from_weights_(torch.randn(6, 16))
    else:
        model.pool.init_prototypes_(torch.randn(8, 16))
    x = torch.randn(2, 3, 64, 64)
    embedding, aux = model.forward_head(model.forward_features(x), pre_logits=True, return_aux=True)
    assert embedding.shape == (2, 16) and torch.isfinite(embedding).all()
    (embedding.square().sum() + aux.attributes[:, 0].sum()).backward()
    for parameter in (model.pool.prototypes, model.embed.weight, model.backbone.conv1[0].weight):
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0

    reloaded = from_pretrained(save_pretrained(model, tmp_path / "export"))
    assert all(getattr(reloaded.pool, name) == value for name, value in options.items())
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(x), model.eval()(x))


def test_models_cli_lists_models_and_pools(capsys: pytest.CaptureFixture[str]) -> None:
    from gsp_hub.cli import main

    assert main(["models", "--filter", "gsp_"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in REQUIRED) and "gsp" in printed.splitlines()[-1]
    # the zoo models, filtered like the architectures
    assert "gsp_tf_efficientnet_lite0.tin200" in printed and "cifar_resnet20.cifar10" not in printed
