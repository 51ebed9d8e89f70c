"""The published gsp_hub models (the zoo): pretrained tags of the named MetricNets and of the CIFAR-10 students.

Each entry names a registered architecture and a pretrained tag, the Hub repository holding the weights, the
constructor arguments the weights need and the preprocessing they were trained with. The module that registers the
architecture (:mod:`gsp_hub.models.registry`, :mod:`~gsp_hub.models.cifar_resnet`,
:mod:`~gsp_hub.models.letkd`) turns its entries into timm ``default_cfgs`` with an ``hf_hub_id``, so that

    timm.create_model("gsp_tf_efficientnet_lite0.tin200", pretrained=True)

builds the right network and fetches its weights the normal timm way (from the Hub, or from the Hugging Face cache
with ``HF_HUB_OFFLINE=1``). The repository keeps a copy of every folder under ``zoo/`` in Hub layout, which loads
offline with ``timm.create_model("local-dir:zoo/<name>", pretrained=True)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = [
    "HUB_ORGANISATION",
    "ZOO",
    "ZOO_COPY_DIR",
    "ZooEntry",
    "local_zoo_folder",
    "zoo_model_args",
    "zoo_pretrained_cfgs",
]

HUB_ORGANISATION = "gsp-hub"
ZOO_COPY_DIR = Path(__file__).resolve().parents[2] / "zoo"  # the repository's copy of every zoo folder

_LITE0_TIN200_DATA: dict[str, Any] = {
    "input_size": (3, 160, 160), "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
    "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "first_conv": "backbone.conv_stem",
}
# The shared CIFAR-10 ResNets were trained on 32 px images normalised with the ImageNet mean / std.
_CIFAR10_DATA: dict[str, Any] = {
    "input_size": (3, 32, 32), "interpolation": "bilinear", "crop_pct": 1.0,
    "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
}

# The default job's Fashion-Collage model: 64 px greyscale collages (as RGB), mean = std = 0.5, at output stride 8 an
# 8x8 map (each 32 px collage cell is 4x4 locations).
_FASHION_COLLAGE_DATA: dict[str, Any] = {
    "input_size": (3, 64, 64), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
    "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "pool_size": (8, 8),
}


@dataclass(frozen=True)
class ZooEntry:
    """One published model: ``<architecture>.<tag>`` on the Hub as ``gsp-hub/<architecture>.<tag>``."""

    architecture: str
    tag: str
    model_args: dict[str, Any]
    data_cfg: dict[str, Any]
    license: str
    description: str = field(default="")

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.tag}"

    @property
    def hf_hub_id(self) -> str:
        return f"{HUB_ORGANISATION}/{self.name}"

    def pretrained_cfg(self) -> dict[str, Any]:
        """The timm pretrained-config fields this entry sets: Hub id, licence, description, preprocessing."""
        return {"hf_hub_id": self.hf_hub_id, "license": self.license, "description": self.description,
                **self.data_cfg}


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        ZooEntry(
            architecture="gsp_tf_efficientnet_lite0",
            tag="tin200",
            model_args={"embed_dim": 512, "num_prototypes": 64, "transport_ratio": 0.3, "gamma": 5.0},
            data_cfg=_LITE0_TIN200_DATA,
            license="other",
            description="GSP head on ImageNet EfficientNet-Lite0, Tiny-ImageNet-200 zero-shot retrieval",
        ),
        ZooEntry(
            architecture="gap_tf_efficientnet_lite0",
            tag="tin200",
            model_args={"embed_dim": 512},
            data_cfg=_LITE0_TIN200_DATA,
            license="other",
            description="average-pooling twin of gsp_tf_efficientnet_lite0.tin200 (the same recipe)",
        ),
        ZooEntry(
            architecture="gsp_test_resnet",
            tag="fashion_collage",
            model_args={"embed_dim": 128, "transport_ratio": 0.15, "gamma": 20.0,
                        "backbone_kwargs": {"output_stride": 8}},
            data_cfg=_FASHION_COLLAGE_DATA,
            license="mit",
            description="the default job (`gsp-hub train`, seed 0): GSP on timm test_resnet trained from scratch on "
                        "Fashion-Collage, zero-shot retrieval of unseen Fashion-MNIST classes among MNIST-digit "
                        "nuisance tiles",
        ),
        ZooEntry(
            architecture="letkd_cifar_resnet20",
            tag="cifar10",
            model_args={"num_codes": 1024},
            data_cfg=_CIFAR10_DATA,
            license="bsd-2-clause",
            description="letKD-1 ResNet-20 student (1,024 templates) of a ResNet-56 teacher, fine-tuned on CIFAR-10 "
                        "(JPEG copy)",
        ),
        ZooEntry(
            architecture="cifar_resnet20",
            tag="cifar10",
            model_args={},
            data_cfg=_CIFAR10_DATA,
            license="bsd-2-clause",
            description="vanilla twin of letkd_cifar_resnet20.cifar10 (the same fine-tune, cross-entropy only)",
        ),
    )
}


def zoo_pretrained_cfgs(architectures: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{"<architecture>.<tag>": pretrained-config fields}`` of the zoo entries of ``architectures``."""
    wanted = set(architectures)
    return {name: entry.pretrained_cfg() for name, entry in ZOO.items() if entry.architecture in wanted}


def zoo_model_args(architecture: str, pretrained_cfg: object) -> dict[str, Any]:
    """Constructor arguments of a zoo model when timm passes its tag (``'tin200'``) as ``pretrained_cfg``; {}
    for any other architecture, tag or config."""
    if not isinstance(pretrained_cfg, str):
        return {}
    entry = ZOO.get(f"{architecture}.{pretrained_cfg}")
    return dict(entry.model_args) if entry is not None else {}


def local_zoo_folder(name: str) -> Path:
    """The repository's copy of zoo model ``name`` (``zoo/<name>``, Hub layout), for
    ``timm.create_model(f"local-dir:{folder}", pretrained=True)`` without a network.

    Raises KeyError for a name outside the zoo and FileNotFoundError when the package does not sit in a checkout of
    the repository (a wheel install has no zoo/ folder: use the Hub name instead)."""
    if name not in ZOO:
        raise KeyError(f"{name!r} is not a zoo model; the zoo has {sorted(ZOO)}.")
    folder = ZOO_COPY_DIR / name
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} does not exist: gsp_hub is not installed from a checkout of its repository. Load "
            f"timm.create_model({name!r}, pretrained=True) from the Hub instead."
        )
    return folder
