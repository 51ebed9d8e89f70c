"""LeTKD layer math against float64 references, and its insertion into timm students / read-only teacher taps."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F

import gsp_hub.models.cifar_resnet  # noqa: F401  (registers cifar_resnet*)
from gsp_hub.kd import (
    INTERMEDIATE,
    PENULTIMATE,
    CosineConv1x1,
    LeTKDLayer,
    TeacherTaps,
    letkd_student,
    match_grid,
    resolve_intermediate_module,
)


def test_cosine_conv_equals_scaled_cosine_einsum() -> None:
    torch.manual_seed(0)
    conv = CosineConv1x1(5, 7, init_scale=2.5)
    x = torch.randn(2, 5, 3, 4)
    x[1, :, 2, 3] = 0.0  # an all-zero location
    out = conv(x)
    x64, w64 = x.double(), conv.weight.detach().double()[:, :, 0, 0]
    cosine = torch.einsum("bchw,kc->bkhw", x64, w64) / (
        x64.norm(dim=1, keepdim=True).clamp_min(1e-12) * w64.norm(dim=1)[None, :, None, None]
    )
    torch.testing.assert_close(out.double(), 2.5 * cosine, rtol=1e-5, atol=1e-6)
    assert out.abs().max() <= 2.5 + 1e-5
    assert torch.equal(out[1, :, 2, 3], torch.zeros(7))
    assert conv.scale.requires_grad and not CosineConv1x1(5, 7, learn_scale=False).scale.requires_grad


def test_cosine_conv_gradcheck() -> None:
    conv = CosineConv1x1(3, 4, init_scale=1.5).double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    weight = conv.weight.detach().clone().requires_grad_()
    scale = conv.scale.detach().clone().requires_grad_()
    run = lambda inp, w, s: torch.func.functional_call(conv, {"weight": w, "scale": s}, (inp,))  # noqa: E731
    assert torch.autograd.gradcheck(run, (x, weight, scale))


def _reference_layer(layer: LeTKDLayer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64, train-mode BN: x + alpha * scale_v * cos(relu(bn(scale_m * cos(x, W_m))), W_v)."""
    x = x.double()
    w_match = layer.match.weight.detach().double()[:, :, 0, 0]
    w_value = layer.value.weight.detach().double()[:, :, 0, 0]
    locations = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # (L, C)
    unit = lambda m: m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)  # noqa: E731
    logits = layer.match.scale.item() * unit(locations) @ unit(w_match).T  # (L, K)
    mean, var = logits.mean(0), logits.var(0, unbiased=False)
    normalised = (logits - mean) / torch.sqrt(var + layer.bn.eps)
    assigned = torch.relu(normalised * layer.bn.weight.detach().double() + layer.bn.bias.detach().double())
    value = layer.value.scale.item() * unit(assigned) @ unit(w_value).T  # (L, C)
    out = locations + layer.alpha * value
    to_map = lambda m: m.reshape(x.shape[0], x.shape[2], x.shape[3], -1).permute(0, 3, 1, 2)  # noqa: E731
    return to_map(out), to_map(logits)


def test_letkd_layer_matches_float64_reference() -> None:
    torch.manual_seed(0)
    layer = LeTKDLayer(6, 11, alpha=0.7)
    with torch.no_grad():
        layer.bn.weight.uniform_(0.5, 1.5)
        layer.bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 6, 4, 5)
    out, logits = layer(x)
    ref_out, ref_logits = _reference_layer(layer, x)
    torch.testing.assert_close(logits.double(), ref_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    assert logits.abs().max() <= layer.match.scale.item() + 1e-5


def test_letkd_layer_gradcheck_float64() -> None:
    layer = LeTKDLayer(3, 5, alpha=1.0).double()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: layer(inp)[0], (x,))


def test_alpha_zero_is_identity_and_bad_input_raises() -> None:
    layer = LeTKDLayer(8, 16, alpha=0.0)
    x = torch.randn(2, 8, 3, 3)
    out, logits = layer(x)
    assert torch.equal(out, x) and logits.shape == (2, 16, 3, 3)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        layer(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="alpha"):
        LeTKDLayer(8, 16, alpha=-1.0)


@pytest.mark.parametrize(
    "name, kwargs, input_size, inter_module",
    [
        ("cifar_resnet20", {}, (3, 32, 32), "layer3.0"),
        ("resnet18", {}, (3, 64, 64), "layer4.0"),
        ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8}, (3, 32, 32), "blocks.11"),
    ],
)
def test_insertion_keeps_shapes_and_alpha_zero_keeps_logits(name, kwargs, input_size, inter_module) -> None:
    torch.manual_seed(0)
    bare = timm.create_model(name, num_classes=10, **kwargs).eval()
    x = torch.randn(2, *input_size)
    with torch.no_grad():
        expected = bare(x)
    assert resolve_intermediate_module(bare) == inter_module
    frozen = letkd_student(copy.deepcopy(bare), input_size=input_size, pen_codes=32, inter_codes=20,
                           alpha_pen=0.0, alpha_inter=0.0).eval()
    with torch.no_grad():
        logits, tap_logits = frozen(x, return_tap_logits=True)
    assert torch.equal(logits, expected)  # bit-identical: the wrapper and tap plumbing change nothing
    grid = frozen.grid_sizes[PENULTIMATE]
    assert tap_logits[PENULTIMATE].shape == (2, 32, *grid)
    assert tap_logits[INTERMEDIATE].shape == (2, 20, *frozen.grid_sizes[INTERMEDIATE])
    assert frozen.forward_features(x).shape == bare.forward_features(x).shape

    student = letkd_student(copy.deepcopy(bare), input_size=input_size, pen_codes=32, inter_codes=20).train()
    logits, tap_logits = student(x, return_tap_logits=True)
    assert logits.shape == expected.shape and not torch.allclose(logits, expected)
    keys = student.state_dict().keys()
    assert any(k.startswith("pen_layer.match") for k in keys)
    assert any(k.startswith(f"model.{inter_module}.layer.match") for k in keys)
    # The dense KL reaches the template weights and the backbone below each tap.
    tap_logits[INTERMEDIATE].logsumexp(1).mean().backward()
    layers = student.tap_layers
    assert layers[INTERMEDIATE].match.weight.grad is not None and layers[PENULTIMATE].match.weight.grad is None
    assert next(iter(student.model.parameters())).grad is not None


def test_tap_logits_do_not_leak_between_calls() -> None:
    student = letkd_student(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), pen_codes=8, inter_codes=8)
    tap = student.model.get_submodule(student.inter_module)
    student(torch.randn(2, 3, 32, 32))
    assert tap.logits is None
    student.forward_features(torch.randn(2, 3, 32, 32))
    assert tap.logits is None
    copy.deepcopy(student)  # no graph kept on the module, so EMA-style copies work


def test_teacher_taps_are_read_only_and_match_a_manual_forward() -> None:
    torch.manual_seed(0)
    teacher_model = timm.create_model("cifar_resnet56")
    reference = copy.deepcopy(teacher_model).eval()
    student = letkd_student(timm.create_model("resnet18", num_classes=10), input_size=(3, 64, 64),
                            pen_codes=16, inter_codes=20)
    # Teacher at 32 px (8x8 maps) supervises the resnet18 student at 64 px (2x2 maps): pooled 4x4 -> 1.
    teacher = TeacherTaps(teacher_model, grid_sizes=student.grid_sizes, with_logits=True).train()
    assert not teacher.teacher.training
    x32, x64 = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 64, 64)
    out = teacher(x32)
    with torch.no_grad():
        stem = reference.act1(reference.bn1(reference.conv1(x32)))
        first_block = reference.layer3[0](reference.layer2(reference.layer1(stem)))
        final = reference.forward_features(x32)
        torch.testing.assert_close(out.logits, reference(x32))
    expected_inter = first_block.reshape(3, 64, 2, 4, 2, 4).mean((3, 5))
    torch.testing.assert_close(out.maps[INTERMEDIATE], expected_inter)
    torch.testing.assert_close(out.maps[PENULTIMATE], F.avg_pool2d(final, 4))
    assert not out.maps[PENULTIMATE].requires_grad and not out.maps[INTERMEDIATE].requires_grad

    logits, tap_logits = student(x64, return_tap_logits=True)
    loss = logits.sum() + sum(t.sum() for t in tap_logits.values()) + sum(m.sum() for m in out.maps.values())
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher_model.parameters())
    with torch.no_grad():  # hooks changed nothing in the teacher's own outputs
        torch.testing.assert_close(teacher_model(x32), reference(x32), rtol=0, atol=0)
    teacher.remove_hooks()
    with pytest.raises(RuntimeError, match="remove_hooks"):
        teacher(x32)


def test_match_grid_and_resolution_errors() -> None:
    x = torch.randn(2, 3, 8, 6)
    torch.testing.assert_close(match_grid(x, (4, 3)), x.reshape(2, 3, 4, 2, 3, 2).mean((3, 5)))
    assert match_grid(x, (8, 6)) is x
    with pytest.raises(ValueError, match="integer multiple"):
        match_grid(x, (3, 3))
    model = timm.create_model("convnext_atto")
    assert resolve_intermediate_module(model) == "stages.3.blocks.0"
    with pytest.raises(ValueError, match="inter_module='nope'"):
        resolve_intermediate_module(model, "nope")
    with pytest.raises(ValueError, match="pen_codes"):
        letkd_student(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), pen_codes=0)
    with pytest.raises(ValueError, match="input_size"):
        letkd_student(timm.create_model("cifar_resnet20"), input_size=(32, 32))


def test_a_trained_student_loads_under_its_letkd_layers() -> None:
    """The student's own state_dict (intermediate block keys without ``block.``) loads strictly; with feed-forward
    weights 0 the tapped student then computes exactly what the trained student does."""
    torch.manual_seed(0)
    trained = timm.create_model("cifar_resnet20").eval()
    student = letkd_student(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), pen_codes=8, inter_codes=8,
                            alpha_pen=0.0, alpha_inter=0.0).eval()
    layers = copy.deepcopy({name: layer.state_dict() for name, layer in student.tap_layers.items()})
    student.load_student_weights(trained.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(student(images), trained(images))
    for name, layer in student.tap_layers.items():  # the inserted layers keep their values
        assert all(torch.equal(value, layers[name][key]) for key, value in layer.state_dict().items())
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(ValueError, match=r"missing \['layer3\.0\.conv1\.weight'\]"):
        student.load_student_weights({k: v for k, v in trained.state_dict().items() if k != "layer3.0.conv1.weight"})
    assert all(torch.equal(value, before[key]) for key, value in student.state_dict().items())
