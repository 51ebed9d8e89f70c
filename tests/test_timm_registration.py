"""``import gsp_hub`` stays light and still registers every gsp_hub architecture with timm, in either import order.

Each case runs in a fresh interpreter: the import order is the point.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_gsp_hub_loads_neither_torch_nor_timm() -> None:
    assert run_python("""
        import sys
        import gsp_hub
        print(sorted(name for name in ("torch", "timm") if name in sys.modules))
    """) == "[]\n"


def test_gsp_hub_then_timm_registers_the_architectures() -> None:
    assert run_python("""
        import gsp_hub
        import timm
        model = timm.create_model("gsp_resnet18")
        print(type(model).__name__, timm.is_model("letkd_cifar_resnet20"))
    """) == "MetricNet True\n"


def test_timm_then_gsp_hub_registers_the_architectures() -> None:
    assert run_python("""
        import timm
        import gsp_hub
        print(" ".join(timm.list_models("gsp_*")))
    """) == ("gsp_convnext_tiny gsp_resnet18 gsp_resnet50 gsp_test_resnet gsp_tf_efficientnet_lite0 "
             "gsp_vit_small_patch16_224\n")


def test_submodule_first_then_timm_registers_the_architectures() -> None:
    # gsp_hub.models.metric_net imports timm while it is half-initialised: the registration must not re-enter it
    assert run_python("""
        from gsp_hub.models.metric_net import MetricNet
        import timm
        print(isinstance(timm.create_model("gsp_resnet18"), MetricNet))
    """) == "True\n"


def test_public_names_resolve_on_first_use() -> None:
    assert run_python("""
        import sys
        import gsp_hub
        from gsp_hub import GSP, from_pretrained
        print(GSP.__module__, from_pretrained.__module__, gsp_hub.models.__name__, gsp_hub.MetricNet.__name__)
        print(all(hasattr(gsp_hub, name) for name in gsp_hub.__all__), set(gsp_hub.__all__) <= set(dir(gsp_hub)))
        print(gsp_hub.kd.__name__, gsp_hub.hub.save_pretrained.__module__)
    """) == ("gsp_hub.layers.gsp gsp_hub.hub.loading gsp_hub.models MetricNet\nTrue True\n"
             "gsp_hub.kd gsp_hub.hub.saving\n")
