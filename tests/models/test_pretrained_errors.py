"""``pretrained=True`` where no weights can be had says where weights do exist (offline, empty Hub cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gsp_hub.models.zoo import local_zoo_folder

SCRIPT = """
import sys, timm, gsp_hub
try:
    timm.create_model(sys.argv[1], pretrained=True)
except Exception as error:
    print(type(error).__name__, error)
"""


def create_offline(name: str, cache: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, name], capture_output=True, text=True, timeout=300,
                            env=env)
    return result.stdout.strip()


@pytest.mark.parametrize("name, backbone", [("gsp_resnet18", "resnet18"),
                                            ("gsp_tf_efficientnet_lite0", "tf_efficientnet_lite0")])
def test_a_model_without_weights_of_its_own_names_backbone_pretrained(tmp_path, name, backbone):
    message = create_offline(name, tmp_path)
    assert message.startswith(f"RuntimeError {name} has no pretrained weights of its own; pass "
                              f"backbone_pretrained=True to start from the timm weights of its {backbone} backbone")
    if name == "gsp_tf_efficientnet_lite0":
        assert message.endswith("published weights: gsp_tf_efficientnet_lite0.tin200.")


def test_a_zoo_tag_missing_offline_names_the_repository_copy(tmp_path):
    name = "gsp_tf_efficientnet_lite0.tin200"
    message = create_offline(name, tmp_path)
    assert message.startswith(f"FileNotFoundError the weights of {name} are neither in the local Hugging Face cache")
    assert f"timm.create_model('local-dir:{local_zoo_folder(name)}', pretrained=True)" in message
