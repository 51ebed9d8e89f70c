"""``import gsp_hub`` registers gsp_hub's architectures with timm without importing timm (or torch) itself.

timm has no plug-in discovery: an architecture exists for ``timm.create_model`` once the module defining it has run
timm's ``@register_model``, i.e. once :mod:`gsp_hub.models` is imported. That import pulls in torch and timm, seconds
that ``import gsp_hub`` and ``gsp-hub --help`` should not pay. :func:`register_with_timm` therefore

* imports :mod:`gsp_hub.models` at once when timm is already imported (``import timm; import gsp_hub``);
* otherwise puts :class:`TimmImportHook` on ``sys.meta_path``: when ``timm`` is imported, timm's own loader runs
  and then imports :mod:`gsp_hub.models` (``import gsp_hub; import timm``).

Either way, once both are imported, ``timm.create_model('gsp_resnet50')`` and ``timm.list_models('gsp_*')`` see
every gsp_hub architecture. :mod:`gsp_hub.models` registers eagerly, so an import of it already in progress (its
modules import timm) simply completes the registration itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from importlib import import_module
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = ["TimmImportHook", "register_with_timm"]

TIMM = "timm"
REGISTERING_PACKAGE = "gsp_hub.models"


def register_with_timm() -> None:
    """Register the gsp_hub architectures now if timm is imported, else right after timm is first imported."""
    if TIMM in sys.modules:
        import_module(REGISTERING_PACKAGE)
    elif not any(isinstance(finder, TimmImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, TimmImportHook())


class TimmImportHook(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that answers only for ``timm``: the spec the other finders give, with its loader
    wrapped by :class:`_RegisterAfterLoading`."""

    def __init__(self) -> None:
        self._searching = False

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != TIMM or self._searching:
            return None
        self._searching = True  # importlib.util.find_spec below asks every finder again, this one included
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisterAfterLoading(spec.loader)
        return spec


class _RegisterAfterLoading(importlib.abc.Loader):
    """timm's loader, followed by ``import gsp_hub.models``; any other attribute is the wrapped loader's."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        import_module(REGISTERING_PACKAGE)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
