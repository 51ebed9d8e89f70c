"""GSP pooling against an independent float64 computation, its limits, autocast, gradients and prototype plumbing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.special import expit, logsumexp, softmax

from gsp_hub.layers import GSP, GSPOutput, greedy_k_center

DIM, K, B, H, W = 8, 5, 3, 4, 5
N = H * W


def make_gsp(ratio: float = 0.3, gamma: float = 5.0, seed: int = 0, **options: Any) -> GSP:
    """A small GSP whose prototypes have norms 0.5 and 2 (both sides of the unit-ball projection); ``options`` are
    further GSP arguments (``head``, ``add_max_pool``: the same prototypes for every option)."""
    torch.manual_seed(seed)
    layer = GSP(DIM, num_prototypes=K, transport_ratio=ratio, gamma=gamma, memory_size=2 * K, **options)
    with torch.no_grad():
        norms = torch.tensor([0.5, 2.0]).repeat(K)[:K, None]
        layer.prototypes.copy_(layer.prototypes / layer.prototypes.norm(dim=1, keepdim=True) * norms)
    return layer


def make_features(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, N, DIM) local features whose norms lie on both sides of 1 (away from the kink of the projection)."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(B, N, DIM, generator=generator, dtype=torch.float64)
    features = features / features.norm(dim=-1, keepdim=True)
    scales = torch.where(torch.rand(B, N, 1, generator=generator) < 0.5, 0.4, 3.0).double()
    return (features * scales).to(dtype)


def reference_gsp(features: torch.Tensor, prototypes: torch.Tensor, ratio: float, gamma: float) -> dict:
    """Float64 numpy: explicit unit-ball projection, pairwise distances, Brent root of the transport constraint."""
    f = features.detach().double().numpy()
    p = prototypes.detach().double().numpy()
    f_ball = f / np.maximum(1.0, np.linalg.norm(f, axis=-1, keepdims=True))
    p_ball = p / np.maximum(1.0, np.linalg.norm(p, axis=-1, keepdims=True))
    cost = np.linalg.norm(p_ball[None, :, None, :] - f_ball[:, None, :, :], axis=-1)  # (B, K, N)
    ell = logsumexp(-gamma * cost, axis=1)
    assignment = softmax(-gamma * cost, axis=1)
    weights = np.empty_like(ell)
    for b in range(f.shape[0]):
        tau = brentq(lambda t: expit(t + ell[b]).mean() - ratio, -1e3, 1e3, xtol=1e-15, rtol=1e-15)
        weights[b] = expit(tau + ell[b]) / (f.shape[1] * ratio)
    return {
        "pooled": np.einsum("bn,bnd->bd", weights, f),
        "attributes": np.einsum("bn,bkn->bk", weights, assignment),
        "weights": weights,
    }


@pytest.mark.parametrize(("ratio", "gamma"), [(0.3, 5.0), (0.9, 20.0), (0.1, 0.5)])
def test_matches_float64_reference(ratio: float, gamma: float) -> None:
    layer = make_gsp(ratio, gamma).double()
    features = make_features(dtype=torch.float64)
    expected = reference_gsp(features, layer.prototypes, ratio, gamma)
    output = layer.transport(features)
    assert isinstance(output, GSPOutput)
    for name, value in expected.items():
        np.testing.assert_allclose(getattr(output, name).detach().numpy(), value, rtol=0, atol=1e-10)
    output32 = make_gsp(ratio, gamma).transport(features.float())
    for name, value in expected.items():
        np.testing.assert_allclose(getattr(output32, name).detach().double().numpy(), value, rtol=0, atol=2e-5)


def test_map_and_token_inputs_agree() -> None:
    layer = make_gsp()
    tokens = make_features()
    feature_map = tokens.transpose(1, 2).reshape(B, DIM, H, W)
    pooled = layer(feature_map)
    assert pooled.shape == (B, DIM)
    torch.testing.assert_close(pooled, layer(tokens), rtol=0, atol=0)


def test_convex_combination_and_simplex_outputs() -> None:
    ratio = 0.3
    layer = make_gsp(ratio, gamma=20.0)
    features = make_features()
    output = layer.transport(features)
    assert output.attributes.shape == (B, K) and output.weights.shape == (B, N)
    torch.testing.assert_close(output.weights.sum(1), torch.ones(B), rtol=0, atol=1e-6)
    torch.testing.assert_close(output.attributes.sum(1), torch.ones(B), rtol=0, atol=1e-6)
    assert output.weights.min() >= 0 and output.weights.max() <= 1 / (N * ratio) + 1e-7
    torch.testing.assert_close(output.pooled, torch.einsum("bn,bnd->bd", output.weights, features))


@pytest.mark.parametrize("options", [{}, {"head": "gmp"}, {"add_max_pool": True},
                                     {"head": "gmp", "add_max_pool": True}])
def test_gradcheck_whole_layer(options: dict) -> None:
    """Float64 gradcheck of pooled, attributes and weights w.r.t. the features and the prototype Parameter, for the
    default layer and each official variant of its pooled vector."""
    layer = make_gsp(ratio=0.4, gamma=3.0, **options).double()
    features = make_features(dtype=torch.float64)[:2, :6].requires_grad_()

    def run(x: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert prototypes is layer.prototypes  # gradcheck perturbs the Parameter in place
        output = layer.transport(x)
        return output.pooled, output.attributes, output.weights

    assert torch.autograd.gradcheck(run, (features, layer.prototypes))


def test_ratio_one_is_exact_average_pooling() -> None:
    layer = make_gsp(ratio=1.0)
    features = make_features()
    output = layer.transport(features)
    torch.testing.assert_close(output.pooled, features.mean(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(output.weights, torch.full((B, N), 1 / N), rtol=0, atol=0)


def test_ratio_just_below_one_and_small_gamma_approach_average_pooling() -> None:
    features = make_features().requires_grad_()
    pooled = make_gsp(ratio=1.0 - 1e-6, gamma=100.0)(features)
    torch.testing.assert_close(pooled, features.mean(1), rtol=0, atol=1e-5)
    pooled.square().sum().backward()
    assert torch.isfinite(features.grad).all()
    for gamma in (1e-8, 1e-6):
        torch.testing.assert_close(make_gsp(0.3, gamma)(features), features.mean(1), rtol=0, atol=1e-6)


def test_equivariance() -> None:
    layer = make_gsp(gamma=10.0)
    features = make_features()
    output = layer.transport(features)
    locations = torch.randperm(N)
    moved = layer.transport(features[:, locations])
    torch.testing.assert_close(moved.weights, output.weights[:, locations], rtol=0, atol=1e-6)
    torch.testing.assert_close(moved.pooled, output.pooled, rtol=0, atol=1e-6)
    prototypes = torch.randperm(K)
    with torch.no_grad():
        layer.prototypes.copy_(layer.prototypes[prototypes].clone())
    relabelled = layer.transport(features)
    torch.testing.assert_close(relabelled.attributes, output.attributes[:, prototypes], rtol=0, atol=1e-6)
    torch.testing.assert_close(relabelled.pooled, output.pooled, rtol=0, atol=1e-6)


@pytest.mark.parametrize("low_precision", [torch.bfloat16, torch.float16])
def test_autocast_and_half_precision_inputs(low_precision: torch.dtype) -> None:
    layer = make_gsp(gamma=5.0)
    features = make_features()
    expected = layer.transport(features)
    with torch.autocast("cpu", dtype=low_precision):
        under_autocast = layer.transport(features)
    for name in ("pooled", "attributes", "weights"):
        torch.testing.assert_close(getattr(under_autocast, name), getattr(expected, name), rtol=0, atol=1e-5)
    # Half-precision features: solved in float32, pooled returned in the input dtype.
    rounded = features.to(low_precision)
    with torch.autocast("cpu", dtype=low_precision):
        output = layer.transport(rounded)
    assert output.pooled.dtype == low_precision and output.weights.dtype == torch.float32
    reference = layer.transport(rounded.float())
    torch.testing.assert_close(output.weights, reference.weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(output.pooled.float(), reference.pooled, rtol=torch.finfo(low_precision).eps, atol=1e-3)


@pytest.mark.parametrize("low_precision", [torch.bfloat16, torch.float16])
def test_far_features_at_gamma_100_are_finite(low_precision: torch.dtype) -> None:
    """Locations at cost 2 from every prototype (exp(-200) underflows in float32) stay finite and unselected."""
    layer = make_gsp(gamma=100.0)
    axis = torch.zeros(DIM)
    axis[0] = 1.0
    with torch.no_grad():
        layer.prototypes.copy_(axis.expand(K, DIM))
    features = make_features()
    features[:, : N // 2] = -10.0 * axis  # antipodal to every prototype after projection
    features = features.to(low_precision).requires_grad_()
    output = layer.transport(features)
    assert all(torch.isfinite(t).all() for t in (output.pooled, output.attributes, output.weights))
    assert output.weights[:, : N // 2].max() < 1e-6
    output.pooled.float().sum().backward()
    assert torch.isfinite(features.grad).all() and torch.isfinite(layer.prototypes.grad).all()


def test_init_prototypes_then_one_step_trains_the_same_parameter() -> None:
    layer = make_gsp()
    parameter = layer.prototypes
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    assert not layer.initialized
    embeddings = torch.randn(4 * K, DIM, generator=torch.Generator().manual_seed(3)) * 2.0
    layer.init_prototypes_(embeddings)
    projected = embeddings / embeddings.norm(dim=1, keepdim=True).clamp(min=1.0)
    expected = greedy_k_center(projected[K:].double(), K, seeds=projected[:K].double())
    torch.testing.assert_close(layer.prototypes.detach(), expected.float(), rtol=0, atol=1e-6)
    assert layer.initialized and layer.prototypes is parameter
    assert optimizer.param_groups[0]["params"][0] is parameter

    before = parameter.detach().clone()
    output = layer.transport(make_features())
    (output.pooled.square().sum() - output.attributes[:, 0].sum()).backward()
    optimizer.step()
    assert layer.prototypes is parameter
    assert (parameter.detach() - before).abs().max() > 1e-6

    state = layer.state_dict()
    assert set(state) == {"prototypes", "initialized"}
    fresh = make_gsp(seed=1)
    fresh.load_state_dict(state)
    assert fresh.initialized and torch.equal(fresh.prototypes, parameter.detach())


def test_export_has_no_data_dependent_control_flow() -> None:
    layer = make_gsp()
    features = make_features()
    exported = torch.export.export(layer, (features,))
    torch.testing.assert_close(exported.module()(features), layer(features), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda layer: layer(torch.randn(B, DIM + 1, H, W)), r"expected local features of shape \(B, 8, H, W\)"),
        (lambda layer: layer(torch.randn(B, N, DIM + 1)), r"got shape \(3, 20, 9\)"),
        (lambda layer: layer(torch.randn(B, DIM)), r"got shape \(3, 8\)"),
        (lambda layer: layer.init_prototypes_(torch.randn(2 * K - 1, DIM)), "at least 2 \\* num_prototypes = 10"),
        (lambda layer: layer.init_prototypes_(torch.randn(2 * K, DIM + 1)), r"shape \(M, 8\), got \(10, 9\)"),
        # integer features (once truncated to zeros silently) are rejected, as torch / timm layers reject them
        (lambda layer: layer(torch.randint(-3, 4, (B, N, DIM))),
         r"x must be a floating-point tensor of local features, got dtype torch.int64; cast it with x.float\(\)"),
        (lambda layer: layer(torch.ones(B, DIM, H, W, dtype=torch.bool)), "got dtype torch.bool"),
    ],
)
def test_bad_inputs_raise(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(make_gsp())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 0}, "dim must be an int >= 1, got 0"),
        ({"num_prototypes": 0}, "num_prototypes must be an int >= 1, got 0"),
        ({"transport_ratio": 0.0}, "transport_ratio .* got 0.0"),
        ({"gamma": 0.0}, "gamma .* got 0.0"),
        ({"iters": 0}, "iters .* got 0"),
        ({"memory_size": 100}, "memory_size must be an int >= 128 \\(2 \\* num_prototypes: .*got 100"),
        # gamma beyond what the fixed-step solve resolves (at 1e6 the weights once summed to 1.94)
        ({"gamma": 1e6}, r"gamma must be a number in \(0, 100\] \(inverse entropy temperature; .*may not converge.*\), "
                         r"got 1000000.0; pass e.g. gamma=100."),
        ({"gamma": 100.001}, r"gamma must be a number in \(0, 100\]"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GSP(**({"dim": 16} | kwargs))


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.9])
def test_largest_gamma_matches_float64_reference(ratio: float) -> None:
    """gamma = 100, the largest a layer accepts: the fixed-step solve still equals the Brent-root reference."""
    layer = make_gsp(ratio, 100.0).double()
    features = make_features(dtype=torch.float64)
    expected = reference_gsp(features, layer.prototypes, ratio, 100.0)
    output, output32 = layer.transport(features), make_gsp(ratio, 100.0).transport(features.float())
    for name, value in expected.items():
        np.testing.assert_allclose(getattr(output, name).detach().numpy(), value, rtol=0, atol=1e-12)
        np.testing.assert_allclose(getattr(output32, name).detach().double().numpy(), value, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_raise_naming_the_samples(bad_value: float) -> None:
    """Like the solver, which rejects NaN costs: NaN / inf features (once a NaN row, no error) raise, for maps and
    tokens alike; features of the other samples are fine."""
    layer = make_gsp()
    features = make_features()
    features[1, 7, 3] = bad_value
    features[2, 0, 0] = bad_value
    message = r"x must contain only finite values, got NaN or inf in 2 sample\(s\) \(first: \[1, 2\]\)"
    with pytest.raises(ValueError, match=message):
        layer(features)
    with pytest.raises(ValueError, match=message):
        layer.transport(features.transpose(1, 2).reshape(B, DIM, H, W))
    assert torch.isfinite(layer(features[:1])).all()
