"""Package attributes that import their module on first use (PEP 562), so that importing a package stays light.

A package names the module that defines each of its public names; importing the package then imports none of
them, and the first ``package.Name`` (or ``from package import Name``) imports the defining module::

    # gsp_hub/hub/__init__.py
    __getattr__, __dir__ = lazy_exports(__name__, {"gsp_hub.hub.loading": ("from_pretrained", "load_weights")})

This is what keeps ``import gsp_hub`` and ``gsp-hub --help`` free of torch and timm (seconds of import time).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str]], submodules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    ``exports`` maps a defining module to the names it provides; ``submodules`` are names of ``package``'s own
    sub-modules reachable as attributes (``gsp_hub.models``). A resolved name is stored in the package, so the
    module is imported once and later look-ups are plain attribute reads.
    """
    origin = {name: module for module, names in exports.items() for name in names}
    lazy_submodules = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in lazy_submodules:
            return import_module(f"{package}.{name}")
        if name not in origin:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(origin[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *origin, *lazy_submodules})

    return __getattr__, __dir__
