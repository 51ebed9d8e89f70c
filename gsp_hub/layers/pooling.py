"""Global pooling of local features and the pool registry behind ``create_pool(name, dim, **kwargs)``.

Every pool maps local features of width ``dim`` — a (B, dim, H, W) map or a (B, N, dim) token set — to (B, dim).
Adding a pooling is one module decorated with ``@register_pool("name")`` whose constructor is ``cls(dim, **kwargs)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from gsp_hub.checks import check_int, check_kwargs
from gsp_hub.registry import Registry

__all__ = [
    "AttentionPool", "AvgPool", "GeM", "MaxPool", "check_pool_kwargs", "create_pool", "list_pools", "register_pool",
    "to_tokens",
]

PoolFactory = TypeVar("PoolFactory", bound=Callable[..., nn.Module])

_POOLS: Registry[nn.Module] = Registry("pool")


def register_pool(name: str) -> Callable[[PoolFactory], PoolFactory]:
    """Class decorator adding a pool to the registry under ``name`` (constructor signature ``(dim, **kwargs)``)."""
    return _POOLS.register(name)


def list_pools() -> list[str]:
    """Sorted names accepted by :func:`create_pool`."""
    return _POOLS.names()


def create_pool(name: str, dim: int, **kwargs: Any) -> nn.Module:
    """Build the pool registered as ``name`` for features of width ``dim``; ``kwargs`` go to its constructor."""
    return _POOLS.get(name)(dim, **kwargs)


def check_pool_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    """ValueError, before anything is built, for an unknown pool ``name`` or a key of ``kwargs`` (the
    ``pool_kwargs`` of :func:`create_pool`) that its constructor does not take."""
    check_kwargs("pool_kwargs", kwargs, _POOLS.get(name), supplied=("dim",))


def to_tokens(x: Tensor, dim: int) -> Tensor:
    """(B, dim, H, W) feature map or (B, N, dim) tokens -> (B, N, dim) tokens (a view when possible)."""
    if x.ndim == 4 and x.shape[1] == dim:
        return x.flatten(2).transpose(1, 2)
    if x.ndim == 3 and x.shape[2] == dim:
        return x
    raise ValueError(
        f"expected local features of shape (B, {dim}, H, W) or (B, N, {dim}), got shape {tuple(x.shape)}; "
        f"the pool was built for dim={dim}."
    )


def _check_dim(dim: int) -> None:
    check_int("dim", dim, minimum=1, meaning="feature width")


@register_pool("avg")
class AvgPool(nn.Module):
    """Global average pooling: (B, dim, H, W) or (B, N, dim) -> (B, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        _check_dim(dim)
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return to_tokens(x, self.dim).mean(dim=1)


@register_pool("max")
class MaxPool(nn.Module):
    """Global max pooling: (B, dim, H, W) or (B, N, dim) -> (B, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        _check_dim(dim)
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return to_tokens(x, self.dim).amax(dim=1)


@register_pool("gem")
class GeM(nn.Module):
    """Generalized-mean pooling (mean of clamp(x, eps)^p)^(1/p) with a learnable exponent p.

    p = 1 is average pooling of the clamped features and p -> inf approaches max pooling.
    (B, dim, H, W) or (B, N, dim) -> (B, dim).
    """

    def __init__(self, dim: int, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        _check_dim(dim)
        if not p > 0:
            raise ValueError(f"p must be > 0 (initial generalized-mean exponent), got {p!r}.")
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (lower clamp of the features), got {eps!r}.")
        self.dim = dim
        self.eps = eps
        self.p = nn.Parameter(torch.tensor(float(p)))

    def forward(self, x: Tensor) -> Tensor:
        tokens = to_tokens(x, self.dim).clamp(min=self.eps)
        return tokens.pow(self.p).mean(dim=1).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, p={self.p.item():.4g}, eps={self.eps}"


@register_pool("attn")
class AttentionPool(nn.Module):
    """Learned attention pooling, the plainest learned selector (a control for GSP): a linear score per location,
    softmax over the locations, the weighted sum of the features. (B, dim, H, W) or (B, N, dim) -> (B, dim).

    The score layer starts at zero, so an untrained pool is average pooling.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        _check_dim(dim)
        self.dim = dim
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def location_weights(self, x: Tensor) -> Tensor:
        """Pooling weights (B, N) of x (B, dim, H, W) or (B, N, dim); rows sum to 1."""
        return self.score(to_tokens(x, self.dim)).squeeze(-1).softmax(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        tokens = to_tokens(x, self.dim)
        return torch.bmm(self.location_weights(tokens)[:, None, :], tokens).squeeze(1)
