"""Speed and exactness of the GSP head (1x1 embedding + GSP pooling).

Timed: forward + backward (including the gradient w.r.t. the backbone features) of

* ``gsp``        - our head: per-location Linear embedding + :class:`gsp_hub.layers.GSP` (16 Newton steps);
* ``gap_linear`` - global average pooling + Linear (the usual head);
* ``fixed100``   - the same head with the official solver: 100 fixed-point iterations on the scalar dual
                   t <- ratio / mean_j(s_j / (1 + t s_j)), s_j = sum_k exp(-gamma c_kj), started at t = ratio, with the
                   same implicit backward (the official analytic gradient);
* ``floor``      - the matmul floor: the per-location embedding plus the (B*N x dim) @ (dim x K) distance product.

The same pools are also timed alone on embedded tokens (B, N, dim), where the solver's share is visible.

Exactness: max_kj |plan - plan*| * N against a float64 bisection reference, for our solver and the fixed point,
in float32 (what training runs) and float64, on costs from the timed head and on uniform costs in [0, 2]
(nan: the fixed point broke down, exp(-gamma c) underflowed for a whole column in float32).

    python benchmarks/bench_gsp.py                                  # (64, 2048, 7, 7) -> 512, K = 64
    python benchmarks/bench_gsp.py --threads 1 --clock cpu          # stable figures on a shared machine
    python benchmarks/bench_gsp.py --batch 16 --repeats 5           # quicker
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gsp_hub.layers import GSP, AvgPool, TransportRoot, partial_transport, prototype_costs, to_tokens


def fixed_point_root(ell: Tensor, transport_ratio: float, iters: int) -> Tensor:
    """Official solver: ``iters`` fixed-point steps on t (no tolerance), returned as tau = log t. ell: (B, N)."""
    kernel_sums = ell.exp()  # s_j = sum_k exp(-gamma c_kj)
    t = torch.full_like(ell[:, 0], transport_ratio)
    for _ in range(iters):
        t = transport_ratio / (kernel_sums / (1.0 + t[:, None] * kernel_sums)).mean(dim=1)
    return t.log()


class FixedPointRoot(TransportRoot):
    """The official forward (fixed point) with the implicit backward it shares with our solver."""

    @staticmethod
    def forward(ctx, ell: Tensor, transport_ratio: float, iters: int) -> Tensor:  # type: ignore[override]
        tau = fixed_point_root(ell, transport_ratio, iters)
        ctx.save_for_backward(ell, tau)
        return tau


def fixed_point_factors(cost: Tensor, transport_ratio: float, gamma: float, iters: int) -> tuple[Tensor, Tensor]:
    """(transported (B, N), assignment (B, K, N)) with the fixed-point root; cost (B, K, N)."""
    logits = -gamma * cost
    ell = torch.logsumexp(logits, dim=1)
    assignment = torch.exp(logits - ell[:, None, :])
    transported = torch.sigmoid(FixedPointRoot.apply(ell, transport_ratio, iters)[:, None] + ell)
    return transported, assignment


class FixedPointGSP(GSP):
    """GSP pooling (``forward`` only) whose root comes from the official fixed point; same parameters as GSP."""

    def __init__(self, *args, fixed_iters: int = 100, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fixed_iters = fixed_iters

    def forward(self, x: Tensor) -> Tensor:
        features = to_tokens(x, self.dim)
        cost = prototype_costs(features, self.prototypes)
        transported, _ = fixed_point_factors(cost, self.transport_ratio, self.gamma, self.fixed_iters)
        weights = transported / (features.shape[1] * self.transport_ratio)
        return torch.bmm(weights[:, None, :], features).squeeze(1)


class EmbedPool(nn.Module):
    """Per-location Linear embedding of (B, C, H, W) features, then a pool: -> (B, dim)."""

    def __init__(self, channels: int, dim: int, pool: nn.Module) -> None:
        super().__init__()
        self.channels = channels
        self.embed = nn.Linear(channels, dim)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.embed(to_tokens(x, self.channels)))


class GapLinear(nn.Module):
    """Global average pooling, then Linear: (B, C, H, W) -> (B, dim)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class DistanceProduct(nn.Module):
    """The matmul at the heart of the costs: (B, N, dim) tokens @ (dim, K) prototypes -> (B, N, K)."""

    def __init__(self, dim: int, num_prototypes: int) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, dim) / math.sqrt(dim))

    def forward(self, tokens: Tensor) -> Tensor:
        return torch.matmul(tokens, self.prototypes.T)


def time_modules(
    modules: dict[str, nn.Module], x: Tensor, repeats: int, warmup: int, clock: Callable[[], float]
) -> dict[str, list[float]]:
    """Seconds per forward + backward of every module; runs are interleaved so load changes hit all of them."""
    with torch.no_grad():
        upstream = {name: torch.randn_like(module(x)) for name, module in modules.items()}
    times: dict[str, list[float]] = {name: [] for name in modules}
    for step in range(warmup + repeats):
        for name, module in modules.items():
            x.grad = None
            module.zero_grad(set_to_none=True)
            start = clock()
            module(x).backward(upstream[name])
            elapsed = clock() - start
            if step >= warmup:
                times[name].append(elapsed)
    return times


def print_times(title: str, times: dict[str, list[float]]) -> None:
    """Median and minimum per module, as ratios to ``floor`` and to ``gsp``."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    minima = {name: min(values) for name, values in times.items()}
    print(f"\n{title}")
    print(f"{'':<12} {'median ms':>10} {'min ms':>9} {'med/floor':>10} {'min/floor':>10} {'med/gsp':>8} {'min/gsp':>8}")
    for name in times:
        print(
            f"{name:<12} {medians[name] * 1e3:>10.2f} {minima[name] * 1e3:>9.2f} "
            f"{medians[name] / medians['floor']:>10.3f} {minima[name] / minima['floor']:>10.3f} "
            f"{medians[name] / medians['gsp']:>8.3f} {minima[name] / minima['gsp']:>8.3f}"
        )


def reference_plan(cost: Tensor, transport_ratio: float, gamma: float) -> Tensor:
    """Float64 plan with the root found by 200 bisection steps on tau (machine precision). cost (B, K, N)."""
    logits = -gamma * cost.double()
    ell = torch.logsumexp(logits, dim=1)
    logit_ratio = math.log(transport_ratio / (1 - transport_ratio))
    lo, hi = logit_ratio - ell.amax(1), logit_ratio - ell.amin(1)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = torch.sigmoid(mid[:, None] + ell).mean(1) < transport_ratio
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    transported = torch.sigmoid(0.5 * (lo + hi)[:, None] + ell)
    return transported[:, None, :] * torch.softmax(logits, dim=1) / cost.shape[2]


def exactness_rows(cost: Tensor, settings: list[tuple[float, float]], fixed_iters: int) -> list[str]:
    """One row per (gamma, ratio): max |plan - plan*| * N of both solvers in float32 and float64."""
    num_locations = cost.shape[2]
    rows = []
    for gamma, ratio in settings:
        reference = reference_plan(cost, ratio, gamma)
        errors = []
        for dtype in (torch.float32, torch.float64):
            ours, _ = partial_transport(cost.to(dtype), ratio, gamma)
            transported, assignment = fixed_point_factors(cost.to(dtype), ratio, gamma, fixed_iters)
            fixed = transported[:, None, :] * assignment / num_locations
            errors += [(plan.double() - reference).abs().max().item() * num_locations for plan in (ours, fixed)]
        rows.append(
            f"{gamma:>7g} {ratio:>6g} | {errors[0]:>12.2e} {errors[1]:>12.2e} | {errors[2]:>12.2e} {errors[3]:>12.2e}"
        )
    return rows


def parse_settings(text: str) -> list[tuple[float, float]]:
    return [(float(g), float(r)) for g, r in (item.split(":") for item in text.split(","))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=2048, help="backbone channels C")
    parser.add_argument("--size", type=int, default=7, help="feature map height = width")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension")
    parser.add_argument("--prototypes", type=int, default=64, help="K")
    parser.add_argument("--ratio", type=float, default=0.3, help="transport ratio of the timed heads")
    parser.add_argument("--gamma", type=float, default=5.0, help="gamma of the timed heads")
    parser.add_argument("--fixed-iters", type=int, default=100, help="iterations of the official fixed point")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall: time.perf_counter; cpu: process CPU time, robust on a shared machine (use with --threads 1)",
    )
    parser.add_argument(
        "--exact-settings", type=parse_settings, default=parse_settings("5:0.3,20:0.5,20:0.9,100:0.9"),
        help="comma-separated gamma:ratio pairs for the exactness table",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.channels, args.size, args.size).requires_grad_()
    pool_kwargs = dict(num_prototypes=args.prototypes, transport_ratio=args.ratio, gamma=args.gamma)
    pools: dict[str, nn.Module] = {
        "gsp": GSP(args.dim, **pool_kwargs),
        "fixed100": FixedPointGSP(args.dim, fixed_iters=args.fixed_iters, **pool_kwargs),
        "floor": DistanceProduct(args.dim, args.prototypes),
    }
    heads = {name: EmbedPool(args.channels, args.dim, pool) for name, pool in pools.items()}
    heads["gap_linear"] = GapLinear(args.channels, args.dim)
    print(
        f"features {tuple(x.shape)} -> {args.dim}, K = {args.prototypes}, gamma = {args.gamma}, "
        f"ratio = {args.ratio}; torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock; "
        f"{args.repeats} forward+backward passes per module (interleaved, after {args.warmup} warm-up)"
    )
    print_times(
        "head = per-location embedding + pool (floor: embedding + distance product; gap_linear: GAP + Linear)",
        time_modules(heads, x, args.repeats, args.warmup, clock),
    )
    tokens = torch.randn(args.batch, args.size * args.size, args.dim).requires_grad_()
    pools["avg"] = AvgPool(args.dim)
    print_times(
        f"pool only, on embedded tokens {tuple(tokens.shape)} (floor: distance product)",
        time_modules(pools, tokens, args.repeats, args.warmup, clock),
    )

    with torch.no_grad():
        gsp_head = heads["gsp"]
        head_cost = prototype_costs(gsp_head.embed(to_tokens(x, args.channels)), gsp_head.pool.prototypes)
    uniform_cost = 2.0 * torch.rand(head_cost.shape)
    for title, cost in (("costs of the timed head", head_cost), ("uniform costs in [0, 2]", uniform_cost)):
        print(f"\nexactness, {title} {tuple(cost.shape)}: max |plan - plan*| * N vs a float64 bisection reference")
        print(f"{'gamma':>7} {'ratio':>6} | {'ours fp32':>12} {'fixed fp32':>12} | {'ours fp64':>12} {'fixed fp64':>12}")
        for row in exactness_rows(cost, args.exact_settings, args.fixed_iters):
            print(row)


if __name__ == "__main__":
    main()
