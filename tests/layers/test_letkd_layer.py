"""LeTKD layer math against float64 references (its insertion into timm models: tests/models/test_taps.py)."""

from __future__ import annotations

import pytest
import torch

from gsp_hub.layers.letkd import CosineConv1x1, LeTKDLayer


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
