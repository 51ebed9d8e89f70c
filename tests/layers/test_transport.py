"""partial_transport against an independent float64 reference, the primal optimality conditions and its limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import expit

from gsp_hub.layers import partial_transport, partial_transport_factors

GAMMAS = (0.1, 5.0, 20.0)
RATIOS = (0.1, 0.3, 0.5, 0.9)


def reference_transport(cost: torch.Tensor, ratio: float, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Float64 solution from the KKT conditions, by plain bisection on the scalar dual variable log t.

    Stationarity gives plan_kj = t e^{-gamma c_kj} / (N (1 + t s_j)) and residual_j = 1 / (N (1 + t s_j)) with
    s_j = sum_k e^{-gamma c_kj}; t is set by sum(plan) = ratio, which is increasing in log t.
    """
    c = cost.detach().double().numpy()
    num_locations = c.shape[2]
    kernel = np.exp(-gamma * c)
    log_s = np.log(kernel.sum(axis=1))  # (B, N)
    plans, residuals = [], []
    for b in range(c.shape[0]):
        lo, hi = -2000.0, 2000.0
        while True:
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if expit(mid + log_s[b]).mean() < ratio:
                lo = mid
            else:
                hi = mid
        transported = expit(mid + log_s[b])
        plans.append(transported * kernel[b] / kernel[b].sum(axis=0) / num_locations)
        residuals.append(expit(-(mid + log_s[b])) / num_locations)
    return np.stack(plans), np.stack(residuals)


def random_cost(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (2.0 * torch.rand(*shape, generator=generator, dtype=torch.float64)).to(dtype)


def two_cluster_cost(batch: int, prototypes: int, locations: int, seed: int = 0) -> torch.Tensor:
    """Adversarial costs: a few locations close to the prototypes (c ~ 0.1), all others far (c ~ 2)."""
    generator = torch.Generator().manual_seed(seed)
    cost = 1.9 + 0.1 * torch.rand(batch, prototypes, locations, generator=generator)
    cost[:, :, : locations // 7] = 0.1 * torch.rand(batch, prototypes, locations // 7, generator=generator)
    return cost


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("ratio", RATIOS)
def test_matches_float64_reference(gamma: float, ratio: float) -> None:
    cost = random_cost(3, 16, 49, seed=int(gamma * 10 + ratio * 100))
    plan_ref, residual_ref = reference_transport(cost, ratio, gamma)
    plan, residual = partial_transport(cost, ratio, gamma)
    assert plan.dtype == torch.float64
    np.testing.assert_allclose(plan.numpy(), plan_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(residual.numpy(), residual_ref, rtol=0, atol=1e-12)
    plan32, residual32 = partial_transport(cost.float(), ratio, gamma)
    assert plan32.dtype == torch.float32
    np.testing.assert_allclose(plan32.double().numpy(), plan_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(residual32.double().numpy(), residual_ref, rtol=0, atol=1e-6)


def test_reference_satisfies_primal_optimality() -> None:
    """The closed form is the minimiser: the objective gradient lies in the span of the constraint normals."""
    gamma, ratio, k, n = 5.0, 0.3, 3, 4
    cost = random_cost(1, k, n, seed=7)
    plan, residual = partial_transport(cost, ratio, gamma)
    variables = np.concatenate([plan[0].numpy().ravel(), residual[0].numpy()])
    gradient = np.concatenate([cost[0].numpy().ravel(), np.zeros(n)]) + (np.log(variables) + 1.0) / gamma
    constraints = np.zeros((n + 1, k * n + n))  # rows: mass of every location, total transported mass
    for j in range(n):
        constraints[j, [kk * n + j for kk in range(k)]] = 1.0
        constraints[j, k * n + j] = 1.0
    constraints[n, : k * n] = 1.0
    np.testing.assert_allclose(constraints @ variables, [1.0 / n] * n + [ratio], atol=1e-14)
    multipliers = np.linalg.lstsq(constraints.T, gradient, rcond=None)[0]
    np.testing.assert_allclose(constraints.T @ multipliers, gradient, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.1, 5.0, 20.0, 100.0])
def test_constraints_in_float32(gamma: float) -> None:
    ratios = (0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)
    cost = random_cost(len(ratios), 64, 49, seed=3, dtype=torch.float32)
    for index, ratio in enumerate(ratios):
        plan, residual = partial_transport(cost[index : index + 1], ratio, gamma)
        assert abs(plan.double().sum().item() - ratio) < 1e-6
        torch.testing.assert_close(plan.sum(1) + residual, torch.full_like(residual, 1 / 49), rtol=0, atol=1e-7)
        assert plan.min() >= 0 and residual.min() >= 0


def test_two_cluster_costs_at_large_gamma() -> None:
    cost = two_cluster_cost(4, 16, 49)
    for ratio in (0.05, 0.3, 0.5, 0.9):
        plan, _ = partial_transport(cost, ratio, 100.0)
        assert (plan.double().sum((1, 2)) - ratio).abs().max() < 5e-6
        plan64, _ = partial_transport(cost.double(), ratio, 100.0)
        assert (plan64.sum((1, 2)) - ratio).abs().max() < 1e-10


@pytest.mark.parametrize(("ratio", "gamma"), [(0.3, 5.0), (0.9, 20.0), (0.05, 0.5)])
def test_gradcheck(ratio: float, gamma: float) -> None:
    cost = (0.1 + random_cost(2, 3, 5, seed=1)).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: partial_transport(c, ratio, gamma), (cost,))


def test_gradgradcheck() -> None:
    """The implicit backward is itself differentiable (it is written with differentiable ops of ell and tau)."""
    cost = (0.1 + random_cost(2, 3, 5, seed=2)).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda c: partial_transport(c, 0.3, 5.0), (cost,), fast_mode=True)


def test_gradient_matches_closed_form() -> None:
    """dL/dc_kj = -gamma plan_kj [G_kj - s_j Gbar_j - (1 - s_j)(g_j + lam)] for L = <G, plan> + <g, residual>."""
    gamma, ratio = 5.0, 0.3
    cost = random_cost(4, 8, 49, seed=11).requires_grad_()
    generator = torch.Generator().manual_seed(12)
    upstream_plan = torch.randn(4, 8, 49, generator=generator, dtype=torch.float64)
    upstream_residual = torch.randn(4, 49, generator=generator, dtype=torch.float64)
    plan, residual = partial_transport(cost, ratio, gamma)
    ((plan * upstream_plan).sum() + (residual * upstream_residual).sum()).backward()

    plan, residual = plan.detach(), residual.detach()
    transported = 1.0 - 49 * residual  # (B, N)
    assignment = plan / plan.sum(1, keepdim=True)
    slope = transported * (1.0 - transported)
    mean_upstream = (assignment * upstream_plan).sum(1)
    lam = (slope * (mean_upstream - upstream_residual)).sum(1, keepdim=True) / slope.sum(1, keepdim=True)
    expected = -gamma * plan * (
        upstream_plan
        - transported[:, None] * mean_upstream[:, None]
        - ((1.0 - transported) * (upstream_residual + lam))[:, None]
    )
    relative = (cost.grad - expected).abs().max() / expected.abs().max()
    assert relative < 1e-6


def test_ratio_one_is_exact_average_pooling() -> None:
    cost = random_cost(2, 8, 49, seed=5)
    plan, residual = partial_transport(cost, 1.0, 5.0)
    torch.testing.assert_close(plan, torch.softmax(-5.0 * cost, dim=1) / 49, rtol=0, atol=1e-15)
    assert torch.equal(residual, torch.zeros_like(residual))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ratio_just_below_one_goes_through_the_solver(dtype: torch.dtype) -> None:
    cost = random_cost(2, 8, 49, seed=6, dtype=dtype).requires_grad_()
    ratio = 1.0 - 1e-6
    plan, residual = partial_transport(cost, ratio, 100.0)
    # Untransported mass is N * (1 - ratio) in total, plus the float32 root tolerance (2e-7 per location).
    assert (49 * plan.sum(1) - 1).abs().max() <= 49 * (1 - ratio + 2e-7)
    (plan.sum(1) * torch.arange(49, dtype=dtype)).sum().backward()
    assert torch.isfinite(cost.grad).all()


@pytest.mark.parametrize("gamma", [1e-8, 1e-7, 1e-6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_gamma_is_average_pooling(gamma: float, dtype: torch.dtype) -> None:
    cost = random_cost(2, 8, 49, seed=8, dtype=dtype)
    transported, assignment = partial_transport_factors(cost, 0.3, gamma)
    torch.testing.assert_close(transported, torch.full_like(transported, 0.3), rtol=0, atol=1e-6)
    torch.testing.assert_close(assignment, torch.full_like(assignment, 1 / 8), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_gamma_is_hard_selection(dtype: torch.dtype) -> None:
    """gamma = 1e4, ratio 0.3, N = 49: the 14 nearest locations at N w = 1/0.3, the 15th at 0.7/0.3, others 0."""
    cost = random_cost(1, 8, 49, seed=9, dtype=dtype)
    transported, assignment = partial_transport_factors(cost, 0.3, 1e4)
    scaled_weights = (transported[0] / 0.3).double()
    order = cost[0].amin(0).argsort()
    expected = torch.zeros(49, dtype=torch.float64)
    expected[order[:14]] = 1 / 0.3
    expected[order[14]] = 0.7 / 0.3
    torch.testing.assert_close(scaled_weights, expected, rtol=0, atol=1e-4)
    nearest = cost[0].argmin(0)
    torch.testing.assert_close(assignment[0].argmax(0), nearest)


def test_equivariance() -> None:
    cost = random_cost(2, 8, 49, seed=10)
    plan, residual = partial_transport(cost, 0.3, 5.0)
    locations, prototypes = torch.randperm(49), torch.randperm(8)
    plan_perm, residual_perm = partial_transport(cost[:, prototypes][:, :, locations], 0.3, 5.0)
    torch.testing.assert_close(plan_perm, plan[:, prototypes][:, :, locations], rtol=0, atol=1e-15)
    torch.testing.assert_close(residual_perm, residual[:, locations], rtol=0, atol=1e-15)


def far_cost(dtype: torch.dtype) -> torch.Tensor:
    cost = random_cost(2, 16, 49, seed=13, dtype=torch.float32)
    cost[:, :, 3] = 2.0  # a location far from every prototype
    cost[1] = 2.0  # a sample whose locations are all far
    return cost.to(dtype)


@pytest.mark.parametrize("low_precision", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(low_precision: torch.dtype) -> None:
    """Finite at gamma 100 with all-far columns; exact for the rounded input; within the rounding bound otherwise."""
    for gamma in (5.0, 100.0):
        cost = far_cost(torch.float32)
        rounded = cost.to(low_precision)
        plan, residual = partial_transport(rounded, 0.3, gamma)
        assert plan.dtype == torch.float32 and torch.isfinite(plan).all() and torch.isfinite(residual).all()
        plan_exact, residual_exact = partial_transport(rounded.float(), 0.3, gamma)
        torch.testing.assert_close(plan, plan_exact, rtol=0, atol=0)
        # Rounding the costs by eps moves log(plan) by at most 4 * gamma * eps (2 from softmax, 2 from the root).
        eps = (rounded.float() - cost).abs().max().item()
        plan_fp32, _ = partial_transport(cost, 0.3, gamma)
        representable = plan_fp32 > 1e-20  # far entries underflow in float32 at gamma 100
        log_gap = (plan[representable].double().log() - plan_fp32[representable].double().log()).abs().max().item()
        assert log_gap <= 4 * gamma * eps + 1e-4


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16])
def test_autocast_region_matches_float32(autocast_dtype: torch.dtype) -> None:
    cost = far_cost(torch.float32)
    plan_fp32, residual_fp32 = partial_transport(cost, 0.3, 100.0)
    with torch.autocast("cpu", dtype=autocast_dtype):
        plan, residual = partial_transport(cost, 0.3, 100.0)
    assert plan.dtype == torch.float32
    torch.testing.assert_close(plan * 49, plan_fp32 * 49, rtol=0, atol=1e-6)
    torch.testing.assert_close(residual * 49, residual_fp32 * 49, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transport_ratio": 0.0}, "transport_ratio .* got 0.0"),
        ({"transport_ratio": 1.5}, "transport_ratio .* got 1.5"),
        ({"transport_ratio": -0.2}, "transport_ratio .* got -0.2"),
        ({"transport_ratio": math.nan}, "transport_ratio .* got nan"),
        ({"gamma": 0.0}, "gamma .* got 0.0"),
        ({"gamma": -1.0}, "gamma .* got -1.0"),
        ({"gamma": math.inf}, "gamma .* got inf"),
        ({"iters": 0}, "iters .* got 0"),
        ({"cost": torch.rand(8, 49)}, r"cost .* got shape \(8, 49\)"),
        ({"cost": torch.rand(2, 1, 8, 49)}, r"cost .* got shape \(2, 1, 8, 49\)"),
        ({"cost": torch.ones(2, 8, 49, dtype=torch.int64)}, "cost .* dtype torch.int64"),
        ({"cost": torch.full((2, 8, 49), -0.5)}, "cost must be non-negative .* -0.5"),
        ({"cost": torch.full((2, 8, 49), math.nan)}, "cost must contain only finite values"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, message: str) -> None:
    arguments = {"cost": torch.rand(2, 8, 49), "transport_ratio": 0.3, "gamma": 5.0, "iters": 16} | kwargs
    with pytest.raises(ValueError, match=message):
        partial_transport(**arguments)
