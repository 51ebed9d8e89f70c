"""Generalized Sum Pooling (GSP): a learnable convex combination of local features chosen by partial transport.

Local features f_j (N per sample) and K learnable prototypes are projected into the unit ball; the Euclidean costs
between them define an entropy-smoothed partial transport (:mod:`gsp_hub.layers.transport`) that moves a fraction
``transport_ratio`` of the feature mass onto the prototypes. The transported fraction of every location gives the
pooling weights ``w_j = transported_j / (N * transport_ratio)`` (sum 1), the pooled vector is ``sum_j w_j f_j`` on the
un-projected features, and the attributes ``a_k = sum_j w_j assignment_kj`` (on the simplex) feed the zero-shot
regulariser.

The official variants (shared/spec/gsp.md §1, §6, §9, §12 item 7) are options of the same layer: ``head='gmp'`` (the
PyTorch port's max over the re-weighted map), ``add_max_pool`` (the TF "conventional" configs' max-pooling branch) and
``init='weights_kcenter'`` (the PyTorch port's prototypes picked by k-center over class weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gsp_hub.checks import check_bool, check_choice, check_int
from gsp_hub.layers.ops import greedy_k_center, unit_ball
from gsp_hub.layers.pooling import register_pool, to_tokens
from gsp_hub.layers.transport import (
    GAP_RATIO_THRESHOLD,
    MAX_LAYER_GAMMA,
    check_transport_params,
    partial_transport_factors,
    solver_dtype,
    tracing,
)

__all__ = ["GSP", "GSPOutput", "HEADS", "PROTOTYPE_INITS", "prototype_costs"]

#: Poolings of the re-weighted local features: ``gap`` = sum_j w_j f_j (the TF layer, the paper's framework);
#: ``gmp`` = max_j (N w_j) f_j (the official PyTorch port).
HEADS = ("gap", "gmp")

#: Where a warm-up takes the prototypes from: ``memory_kcenter`` = k-center over a memory of pooled embeddings (the TF
#: layer); ``weights_kcenter`` = k-center over class weights, e.g. a proxy loss's proxies (the PyTorch port).
PROTOTYPE_INITS = ("memory_kcenter", "weights_kcenter")


@dataclass
class GSPOutput:
    """Result of :meth:`GSP.transport`.

    pooled: (B, dim) pooled features, in the input dtype.
    attributes: (B, K) mass of the selected features per prototype; rows sum to 1 (float32, or float64).
    weights: (B, N) pooling weights of the locations; rows sum to 1 (float32, or float64).
    """

    pooled: Tensor
    attributes: Tensor
    weights: Tensor


def prototype_costs(features: Tensor, prototypes: Tensor) -> Tensor:
    """Euclidean distances between unit-ball projections: features (B, N, D), prototypes (K, D) -> (B, K, N).

    One matrix product on the un-projected features (the projection is a per-location scale applied afterwards);
    the squared distance is clamped at 1e-12 before the square root so that coincident points keep a finite gradient.
    """
    squared_norms = features.square().sum(dim=-1)  # (B, N)
    scales = squared_norms.clamp(min=1.0).sqrt()  # max(1, ||f||)
    projected_prototypes = unit_ball(prototypes)
    cross = torch.matmul(features, projected_prototypes.T) / scales[..., None]  # (B, N, K)
    squared = projected_prototypes.square().sum(dim=-1) + squared_norms.clamp(max=1.0)[..., None] - 2.0 * cross
    return squared.clamp(min=1e-12).sqrt().transpose(1, 2)


def _check_features(tokens: Tensor) -> None:
    """Raise ValueError unless the features ``x``, as (B, N, dim) tokens, are floating point and (outside tracing)
    finite."""
    if not tokens.is_floating_point():
        raise ValueError(
            f"x must be a floating-point tensor of local features, got dtype {tokens.dtype}; cast it with x.float()."
        )
    if tracing():
        return
    finite = torch.isfinite(tokens.detach()).flatten(1).all(dim=1)  # (B,)
    if not bool(finite.all()):
        samples = (~finite).nonzero().squeeze(1).tolist()
        raise ValueError(
            f"x must contain only finite values, got NaN or inf in {len(samples)} sample(s) (first: {samples[:10]}); "
            "check the backbone output (e.g. a diverged step or a float16 overflow)."
        )


@register_pool("gsp")
class GSP(nn.Module):
    """Generalized Sum Pooling: (B, dim, H, W) or (B, N, dim) -> (B, dim).

    Args:
        dim: feature width.
        num_prototypes: K, number of learnable prototypes.
        transport_ratio: fraction of the feature mass transported (about the fraction of locations selected), (0, 1].
        gamma: inverse entropy temperature in (0, 100] (large = hard selection; ``MAX_LAYER_GAMMA``: beyond, the
            fixed-step solve may not converge, and 100 already selects almost hard).
        iters: Newton steps of the transport root solve.
        memory_size: length of the prototype warm-up, in pooled embeddings. With ``init='memory_kcenter'`` a warm-up
            (e.g. a training callback) collects that many before calling :meth:`init_prototypes_`; at least
            2 * num_prototypes. With ``init='weights_kcenter'`` it sees that many before calling
            :meth:`init_prototypes_from_weights_`, so that the class weights have trained a little; at least 1.
        head: pooling of the re-weighted local features, one of :data:`HEADS`. ``'gap'`` (default, the TF layer):
            ``sum_j w_j f_j``. ``'gmp'`` (the official PyTorch port): ``max_j (N w_j) f_j`` per channel, the
            re-weighted map scaled so that uniform weights (``transport_ratio=1``) give plain global max pooling.
            The port max-pools the weighted *backbone* map and applies its embedding after; here the pool sees the
            already-embedded features, so the max is taken over them (a linear map and a max do not commute).
        add_max_pool: also add ``max_j f_j``, the global max pooling of the un-weighted features, to the pooled
            vector (the TF layer's ``augment_max_pool``, on in its "conventional" configs, adds a 1x1-conv
            projection of the backbone map's GMP; here the features are already embedded, so the plain GMP of the
            same features is added, with no extra parameters).
        init: where the warm-up takes the prototypes from, one of :data:`PROTOTYPE_INITS`: ``'memory_kcenter'``
            (default, the TF layer) or ``'weights_kcenter'`` (the PyTorch port; class weights such as a proxy loss's
            proxies, see :meth:`init_prototypes_from_weights_`). Read by the warm-up, not used by the layer itself.

    ``weights`` and ``attributes`` do not depend on ``head`` or ``add_max_pool``; only the pooled vector does.

    ``prototypes`` (K, dim) is created once here and only ever written in place; ``initialized`` (bool buffer) turns
    True after :meth:`init_prototypes_` or :meth:`init_prototypes_from_weights_`. Computation runs in float32
    (float64 inputs stay float64) with autocast disabled; ``pooled`` is returned in the input dtype.

    Inputs must be floating point: integer features raise (as torch / timm layers do; the layer would otherwise
    return pooled features truncated to integers), and so do NaN / inf features, naming the samples, like the
    solver rejects NaN costs (otherwise those samples' outputs are NaN). The finiteness check reads one value on
    the host per call (a device sync on GPU) and is skipped while torch.compile / torch.export / jit tracing runs.
    """

    def __init__(
        self,
        dim: int,
        num_prototypes: int = 64,
        transport_ratio: float = 0.3,
        gamma: float = 5.0,
        iters: int = 16,
        memory_size: int = 1024,
        head: str = "gap",
        add_max_pool: bool = False,
        init: str = "memory_kcenter",
    ) -> None:
        super().__init__()
        check_int("dim", dim, minimum=1)
        check_int("num_prototypes", num_prototypes, minimum=1)
        check_transport_params(transport_ratio, gamma, iters, max_gamma=MAX_LAYER_GAMMA)
        check_choice("head", head, HEADS, meaning="pooling of the re-weighted features: 'gap' sum, 'gmp' max")
        check_bool("add_max_pool", add_max_pool, meaning="add the global max pooling of the un-weighted features")
        check_choice("init", init, PROTOTYPE_INITS, meaning="where the warm-up takes the prototypes from")
        if init == "memory_kcenter":
            check_int("memory_size", memory_size, minimum=2 * num_prototypes,
                      meaning="2 * num_prototypes: k-center needs num_prototypes seeds plus at least as many "
                              "candidates")
        else:
            check_int("memory_size", memory_size, minimum=1,
                      meaning="pooled embeddings seen before the prototypes are picked from the class weights")
        self.dim = dim
        self.num_prototypes = num_prototypes
        self.transport_ratio = float(transport_ratio)
        self.gamma = float(gamma)
        self.iters = iters
        self.memory_size = memory_size
        self.head = head
        self.add_max_pool = add_max_pool
        self.init = init
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, dim))
        self.register_buffer("initialized", torch.tensor(False))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random prototypes of norm about 1 (N(0, 1/dim) entries); marks the layer as not initialised."""
        nn.init.normal_(self.prototypes, std=self.dim**-0.5)
        self.initialized.fill_(False)

    @torch.no_grad()
    def init_prototypes_(self, embeddings: Tensor) -> None:
        """Set the prototypes by greedy k-center over pooled ``embeddings`` (M, dim), M >= 2 * num_prototypes.

        As in the paper's framework: rows are projected into the unit ball, the first K rows are seeds (covered,
        not used) and K prototypes are picked among the remaining M - K rows. Writes in place and sets
        ``initialized``.
        """
        num_prototypes = self.num_prototypes
        self._check_rows("embeddings", embeddings, "M", minimum=2 * num_prototypes,
                         requirement="2 * num_prototypes = {minimum} rows (K seeds + at least K candidates)",
                         fix="collect more pooled embeddings first")
        projected = unit_ball(embeddings.to(device=self.prototypes.device, dtype=torch.float64))
        picks = greedy_k_center(projected[num_prototypes:], num_prototypes, seeds=projected[:num_prototypes])
        self.prototypes.copy_(picks)
        self.initialized.fill_(True)

    @torch.no_grad()
    def init_prototypes_from_weights_(self, weights: Tensor) -> None:
        """Set the prototypes by greedy k-center over class ``weights`` (C, dim), C >= num_prototypes: classifier
        rows or a proxy loss's proxies, in the space of the pooled embeddings.

        As the official PyTorch port (shared/spec/gsp.md §6): row 0 is the first prototype and the only seed, and
        K - 1 prototypes are picked among rows 1..C-1 by farthest-point traversal. Unlike the port, which picks on
        the raw rows, the rows are projected into the unit ball first (like :meth:`init_prototypes_`): the costs
        only see the projected prototypes, and the norm of a proxy is meaningless to the cosine losses that train
        it. Writes the projected rows in place and sets ``initialized``.
        """
        self.check_class_weights(weights)
        projected = unit_ball(weights.to(device=self.prototypes.device, dtype=torch.float64))
        first = projected[:1]
        picks = [first]
        if self.num_prototypes > 1:
            picks.append(greedy_k_center(projected[1:], self.num_prototypes - 1, seeds=first))
        self.prototypes.copy_(torch.cat(picks))
        self.initialized.fill_(True)

    def check_class_weights(self, weights: Tensor) -> None:
        """ValueError unless ``weights`` can set the prototypes by :meth:`init_prototypes_from_weights_`: a finite
        (C, dim) tensor with C >= num_prototypes. Lets a warm-up fail before training rather than at its end."""
        self._check_rows("weights", weights, "C", minimum=self.num_prototypes,
                         requirement="num_prototypes = {minimum} rows (one per prototype)",
                         fix="pass more class weights (e.g. several proxies per class, --loss ccp) or lower "
                             "num_prototypes")

    def _check_rows(self, name: str, rows: Tensor, count: str, *, minimum: int, requirement: str, fix: str) -> None:
        """ValueError unless ``rows`` is a (count, dim) tensor of at least ``minimum`` finite rows; ``requirement``
        (formatted with ``minimum``) and ``fix`` word the error."""
        if not isinstance(rows, Tensor) or rows.ndim != 2 or rows.shape[1] != self.dim:
            shape = tuple(rows.shape) if isinstance(rows, Tensor) else type(rows).__name__
            raise ValueError(f"{name} must be a tensor of shape ({count}, {self.dim}), got {shape}.")
        if rows.shape[0] < minimum:
            raise ValueError(f"{name} must have at least {requirement.format(minimum=minimum)}, got "
                             f"{rows.shape[0]}; {fix}.")
        if not bool(torch.isfinite(rows).all()):
            raise ValueError(f"{name} must contain only finite values, got NaN or inf entries.")

    def transport(self, x: Tensor) -> GSPOutput:
        """Pooled features, prototype attributes and location weights of x (B, dim, H, W) or (B, N, dim)."""
        return self.transport_with_assignment(x)[0]

    def transport_with_assignment(self, x: Tensor) -> tuple[GSPOutput, Tensor]:
        """:meth:`transport` of x (B, dim, H, W) or (B, N, dim), plus the assignment (B, K, N) of every location's
        transported mass over the prototypes (each column sums to 1), from the same solve."""
        tokens = to_tokens(x, self.dim)
        _check_features(tokens)
        compute_dtype = solver_dtype(tokens.dtype)
        transported_mass = 1.0 if self.transport_ratio >= GAP_RATIO_THRESHOLD else self.transport_ratio
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            features = tokens.to(compute_dtype)
            cost = prototype_costs(features, self.prototypes.to(compute_dtype))
            transported, assignment = partial_transport_factors(
                cost, self.transport_ratio, self.gamma, self.iters, check_values=False
            )
            weights = transported / (tokens.shape[1] * transported_mass)  # (B, N)
            if self.head == "gap":
                pooled = torch.bmm(weights[:, None, :], features).squeeze(1)  # (B, dim)
            else:  # "gmp": max over locations of (N w_j) f_j; N w_j = transported_j / mass is exactly 1 when uniform
                pooled = (features * (transported / transported_mass)[..., None]).amax(dim=1)
            if self.add_max_pool:
                pooled = pooled + features.amax(dim=1)
            attributes = torch.bmm(assignment, weights[:, :, None]).squeeze(2)  # (B, K)
        return GSPOutput(pooled=pooled.to(tokens.dtype), attributes=attributes, weights=weights), assignment

    def location_weights(self, x: Tensor) -> Tensor:
        """Pooling weights (B, N) of x (B, dim, H, W) or (B, N, dim); rows sum to 1."""
        return self.transport(x).weights

    def forward(self, x: Tensor) -> Tensor:
        """(B, dim, H, W) or (B, N, dim) -> (B, dim) pooled features."""
        return self.transport(x).pooled

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_prototypes={self.num_prototypes}, transport_ratio={self.transport_ratio}, "
            f"gamma={self.gamma}, iters={self.iters}, memory_size={self.memory_size}, head={self.head!r}, "
            f"add_max_pool={self.add_max_pool}, init={self.init!r}"
        )
