"""Named factories filled by a decorator: the one registry shape behind pools and losses.

A low-level module (it imports nothing from gsp_hub), so that :mod:`gsp_hub.layers` and :mod:`gsp_hub.losses`
can both use it::

    _POOLS: Registry[nn.Module] = Registry("pool")

    @_POOLS.register("avg")
    class AvgPool(nn.Module): ...

    _POOLS.get("avg")(dim)   # an unknown name raises ValueError listing the registered ones

:func:`did_you_mean` words the suggestion for an unknown name, wherever names are looked up.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "did_you_mean"]

T = TypeVar("T")
Factory = TypeVar("Factory", bound=Callable[..., Any])


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """`` (did you mean ['a', 'b']?)`` with the up to 3 of ``names`` closest to ``name``, or ``""`` if none is close;
    meant to follow an error's "unknown ... {name!r}"."""
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.75)
    return f" (did you mean {close}?)" if close else ""


class Registry(Generic[T]):
    """A dict of factories (callables returning a ``T``) by name; ``kind`` (plural ``plural``, default
    ``kind + 's'``) names the things in error messages."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Factory], Factory]:
        """Decorator adding a factory (class or function) under ``name``; a name already taken raises ValueError."""

        def decorator(factory: Factory) -> Factory:
            if name in self._factories:
                raise ValueError(f"a {self.kind} named {name!r} is already registered ({self._factories[name]!r}); "
                                 "choose another name.")
            self._factories[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; an unknown name raises ValueError listing the registered ones."""
        if name not in self._factories:
            raise ValueError(f"unknown {self.kind} {name!r}; available {self.plural}: "
                             f"{', '.join(self.names())}.")
        return self._factories[name]

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
