"""LeTKD students as timm models: a timm classifier with LeTKD layers that stay in it at inference.

* ``letkd_student`` is any timm classifier with LeTKD layers, built from its config: ``student`` (the classifier's
  timm name; default ``cifar_resnet20``), ``num_classes``, ``input_size`` (C, H, W of the training images, which
  fixes the tap grids; default: the student's pretrained-config input size),
  ``pen_codes`` (templates of the penultimate layer), ``inter_codes`` (templates of the intermediate layer; 0 for
  letKD-1), ``alpha_pen``, ``alpha_inter`` and ``inter_module`` (see :func:`gsp_hub.models.taps.resolve_intermediate_module`);
  other keyword arguments go to the student's constructor. A new model takes the student's preprocessing (mean,
  std, interpolation, crop) at ``input_size``.
* ``letkd_cifar_resnet20`` is the zoo's published student: ``cifar_resnet20`` with a letKD-1 layer of
  ``num_codes`` templates (weight ``alpha``) at its penultimate 8x8 map, with its pretrained tags.

``features_only=True`` / ``forward_intermediates`` give the student's feature maps (all levels by default; the
intermediate letKD layer acts inside them). TorchScript is not supported (use ``torch.export`` / ONNX). Both come
from one builder and record every argument in ``model_args``, so an export
(:func:`gsp_hub.hub.save_pretrained`, ``gsp-hub distill``) loads back without the teacher or its targets::

    student = timm.create_model("letkd_student", student="resnet18", num_classes=10, input_size=(3, 64, 64),
                                pen_codes=256, inter_codes=80)                    # letKD-2, fresh layers
    model = timm.create_model("letkd_cifar_resnet20.cifar10", pretrained=True)    # the zoo's distilled student
    classes = model(images).argmax(1)                                              # images (B, 3, 32, 32)

The ``state_dict`` is :class:`~gsp_hub.models.taps.TappedModel`'s: ``model.*`` for the classifier (an intermediate block
becomes ``<block>.block.*`` next to its layer ``<block>.layer.*``) and ``pen_layer.*`` for the penultimate layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import timm
from timm.models import PretrainedCfg, build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model

from gsp_hub.models.cifar_resnet import cifar_pretrained_cfg
from gsp_hub.models.taps import TappedModel, insert_letkd_layers
from gsp_hub.models.zoo import zoo_model_args, zoo_pretrained_cfgs

__all__ = ["letkd_cifar_resnet20", "letkd_student"]

_CIFAR_STUDENT_CFG: dict[str, Any] = dict(first_conv="model.conv1", classifier="model.linear",
                                          paper_ids="arXiv:2309.02843")
# A new letkd_student takes these preprocessing fields from its student's own pretrained config.
_STUDENT_DATA_KEYS = ("interpolation", "crop_pct", "crop_mode", "mean", "std", "fixed_input_size")
_DEFAULT_STUDENT = "cifar_resnet20"
# features_only=True: timm's FeatureGetterNet over forward_intermediates, every feature level by default.
_FEATURE_CFG: dict[str, Any] = dict(feature_cls="getter", out_indices=None)

default_cfgs = generate_default_cfgs({
    "letkd_student": cifar_pretrained_cfg(**_CIFAR_STUDENT_CFG),  # the default student: cifar_resnet20
    **{
        name: cifar_pretrained_cfg(**_CIFAR_STUDENT_CFG, **fields)
        for name, fields in zoo_pretrained_cfgs(["letkd_cifar_resnet20"]).items()
    },
    "letkd_cifar_resnet20.*": cifar_pretrained_cfg(**_CIFAR_STUDENT_CFG),
})


def _build_letkd_student(
    *,
    student: str,
    input_size: Sequence[int],
    pen_codes: int = 4096,
    inter_codes: int = 0,
    alpha_pen: float = 1.0,
    alpha_inter: float = 1.0,
    inter_module: str = "auto",
    num_classes: int = 1000,
    in_chans: int = 3,
    **student_kwargs: Any,
) -> TappedModel:
    """``timm.create_model(student)`` with a letKD layer of ``pen_codes`` templates at its penultimate map and, when
    ``inter_codes`` > 0, one of ``inter_codes`` templates after ``inter_module``; ``input_size`` is (C, H, W)."""
    input_size = tuple(int(size) for size in input_size)
    if len(input_size) != 3 or input_size[0] != in_chans:
        raise ValueError(f"input_size must be (channels, height, width) with channels = in_chans ({in_chans}), got "
                         f"{input_size}; e.g. input_size=(3, 32, 32) for CIFAR images.")
    base = timm.create_model(student, num_classes=num_classes, in_chans=in_chans, **student_kwargs)
    model = insert_letkd_layers(base, input_size=input_size, pen_codes=pen_codes, inter_codes=inter_codes,
                                alpha_pen=alpha_pen, alpha_inter=alpha_inter, inter_module=inter_module)
    model._model_args = dict(student=student, input_size=list(input_size), pen_codes=pen_codes,
                             inter_codes=inter_codes, alpha_pen=alpha_pen, alpha_inter=alpha_inter,
                             inter_module=inter_module)  # timm adds create_model's kwargs; exports record all
    return model


def _prefixed(names: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    """Module names of the student inside the TappedModel (``model.<name>``)."""
    if names is None or isinstance(names, str):
        return None if names is None else f"model.{names}"
    return tuple(f"model.{name}" for name in names)


def _student_cfg(student: str) -> PretrainedCfg:
    cfg = get_pretrained_cfg(student)
    if cfg is None:
        raise ValueError(f"student={student!r} is not a registered timm model; see timm.list_models() or "
                         "`gsp-hub models`.")
    return cfg


def _student_preprocessing(student: str, input_size: Sequence[int]) -> dict[str, Any]:
    """Pretrained-config fields of a new ``letkd_student``: its student's preprocessing at ``input_size``, with the
    student's ``pool_size`` scaled to it (unknown when the student's config gives none)."""
    cfg = _student_cfg(student)
    pool_size = None
    if cfg.pool_size:
        pool_size = tuple(math.ceil(size * pool / source)
                          for size, pool, source in zip(input_size[1:], cfg.pool_size, cfg.input_size[1:]))
    return {**{key: getattr(cfg, key) for key in _STUDENT_DATA_KEYS}, "input_size": tuple(input_size),
            "pool_size": pool_size, "first_conv": _prefixed(cfg.first_conv), "classifier": _prefixed(cfg.classifier),
            "num_classes": cfg.num_classes}


@register_model
def letkd_student(pretrained: bool = False, **kwargs: Any) -> TappedModel:
    """Any timm classifier ``student`` with LeTKD layers (see the module docstring for the arguments)."""
    student = kwargs.setdefault("student", _DEFAULT_STUDENT)
    kwargs.setdefault("input_size", _student_cfg(student).input_size)
    if kwargs.get("pretrained_cfg") is None:  # a new model (not one loaded from an export): the student's data
        overlay = _student_preprocessing(student, kwargs["input_size"])
        kwargs["pretrained_cfg_overlay"] = {**overlay, **(kwargs.get("pretrained_cfg_overlay") or {})}
    return build_model_with_cfg(_build_letkd_student, "letkd_student", pretrained, feature_cfg=dict(_FEATURE_CFG),
                                **kwargs)


@register_model
def letkd_cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> TappedModel:
    """CIFAR ResNet-20 with a letKD-1 layer at its penultimate map: ``num_codes`` templates (default 4096) fed
    forward with weight ``alpha`` (default 1.0)."""
    zoo_args = zoo_model_args("letkd_cifar_resnet20", kwargs.get("pretrained_cfg"))
    args = {**zoo_args, **kwargs}
    num_codes, alpha = args.pop("num_codes", 4096), args.pop("alpha", 1.0)
    model = build_model_with_cfg(_build_letkd_student, "letkd_cifar_resnet20", pretrained, student="cifar_resnet20",
                                 input_size=(args.get("in_chans", 3), 32, 32), pen_codes=num_codes, alpha_pen=alpha,
                                 feature_cfg=dict(_FEATURE_CFG), **args)
    model._model_args = zoo_args  # timm adds create_model's kwargs; exports record both (config.json model_args)
    return model
