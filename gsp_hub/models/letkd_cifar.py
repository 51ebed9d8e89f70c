"""LeTKD students as timm models: ``letkd_cifar_resnet20`` is ``cifar_resnet20`` with a letKD-1 layer (1x1 cosine
conv -> BN -> ReLU -> 1x1 cosine conv, added back to the map) at its penultimate 8x8 map, kept at inference.

The layer's templates were supervised by a teacher during distillation (``gsp-hub distill --method letkd1``); the
model here needs neither the teacher nor its targets::

    model = timm.create_model("letkd_cifar_resnet20.cifar10", pretrained=True)   # the zoo's distilled student
    classes = model(images).argmax(1)                                              # images (B, 3, 32, 32)

Its ``state_dict`` is the one :class:`~gsp_hub.kd.TappedModel` writes (``model.*`` for the ResNet, ``pen_layer.*``
for the KD layer), so a distilled student's ``student.safetensors`` loads with ``strict=True``.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from gsp_hub.kd.taps import TappedModel, letkd_student
from gsp_hub.models.cifar_resnet import cifar_pretrained_cfg
from gsp_hub.models.zoo import zoo_model_args, zoo_pretrained_cfgs

__all__ = ["letkd_cifar_resnet20"]

_STUDENT_CFG: dict[str, Any] = dict(first_conv="model.conv1", classifier="model.linear", paper_ids="arXiv:2309.02843")

default_cfgs = generate_default_cfgs({
    **{
        name: cifar_pretrained_cfg(**_STUDENT_CFG, **fields)
        for name, fields in zoo_pretrained_cfgs(["letkd_cifar_resnet20"]).items()
    },
    "letkd_cifar_resnet20.*": cifar_pretrained_cfg(**_STUDENT_CFG),
})


def _build_letkd_student(*, architecture: str, num_codes: int = 4096, alpha: float = 1.0, num_classes: int = 10,
                         in_chans: int = 3, **kwargs: Any) -> TappedModel:
    """``architecture`` (a CIFAR ResNet, 32 px) with a letKD-1 layer of ``num_codes`` templates at its last map."""
    base = timm.create_model(architecture, num_classes=num_classes, in_chans=in_chans, **kwargs)
    return letkd_student(base, input_size=(in_chans, 32, 32), pen_codes=num_codes, alpha_pen=alpha)


@register_model
def letkd_cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> TappedModel:
    """CIFAR ResNet-20 with a letKD-1 layer at its penultimate map (K = ``num_codes`` templates, default 4096)."""
    zoo_args = zoo_model_args("letkd_cifar_resnet20", kwargs.get("pretrained_cfg"))
    model = build_model_with_cfg(_build_letkd_student, "letkd_cifar_resnet20", pretrained,
                                 architecture="cifar_resnet20", **{**zoo_args, **kwargs})
    model._model_args = zoo_args  # timm adds create_model's kwargs; exports record both (config.json model_args)
    return model
