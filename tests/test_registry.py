"""The generic Registry behind the pool and loss registries."""

from __future__ import annotations

import pytest

from gsp_hub.layers import list_pools
from gsp_hub.losses import list_losses
from gsp_hub.registry import Registry, did_you_mean


def make_registry() -> Registry[str]:
    registry: Registry[str] = Registry("widget")

    @registry.register("plain")
    def plain(size: int) -> str:
        return "p" * size

    @registry.register("fancy")
    class Fancy(str):
        pass

    return registry


def test_register_get_and_names() -> None:
    registry = make_registry()
    assert registry.names() == ["fancy", "plain"]
    assert "plain" in registry and "other" not in registry and len(registry) == 2
    assert registry.get("plain")(3) == "ppp"
    assert registry.get("fancy")("x") == "x"


def test_decorator_returns_the_factory_unchanged() -> None:
    registry: Registry[int] = Registry("number")

    def seven() -> int:
        return 7

    assert registry.register("seven")(seven) is seven


def test_duplicate_name_raises_and_keeps_the_first() -> None:
    registry = make_registry()
    first = registry.get("plain")
    with pytest.raises(ValueError, match="a widget named 'plain' is already registered .*choose another name"):
        registry.register("plain")(str.upper)
    assert registry.get("plain") is first


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown widget 'other'; available widgets: fancy, plain\.$"):
        make_registry().get("other")
    with pytest.raises(ValueError, match="unknown loss 'x'; available losses: "):
        Registry("loss", plural="losses").get("x")


def test_pools_and_losses_are_registries() -> None:
    assert {"avg", "gem", "gsp", "max", "proto"} <= set(list_pools())
    assert {"contrastive", "ms", "proxy_anchor", "xbm", "ccp"} <= set(list_losses())


def test_did_you_mean_suggests_the_close_names_only() -> None:
    names = ["gsp-pytorch-cub200", "gsp-pytorch-cars196", "ccp-mlrc-cub200"]
    assert did_you_mean("gsp-pytorch-cub", names) == " (did you mean ['gsp-pytorch-cub200', 'gsp-pytorch-cars196']?)"
    assert did_you_mean("gsp-pytorch-car196", iter(names)) == " (did you mean ['gsp-pytorch-cars196']?)"
    assert did_you_mean("xbm", names) == ""
