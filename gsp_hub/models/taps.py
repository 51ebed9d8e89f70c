"""Where LeTKD reads and writes inside any timm model: the penultimate map and the first block of the last stage.

Two tap points, named by :data:`PENULTIMATE` and :data:`INTERMEDIATE`:

* ``penultimate``: the ``forward_features`` output, just before the head's pooling (every timm model has it).
* ``intermediate``: the output of the **first block of the last stage**. The stage is ``feature_info[-1]['module']``
  (``layer3`` for the CIFAR ResNets, ``layer4`` for ResNets, ``stages.3`` for ConvNeXt, ``blocks.6`` for
  EfficientNet); its first block is child ``0`` of a sequential stage or ``blocks.0`` of a stage object with a
  ``blocks`` list. When the feature module is itself a block (ViTs: ``blocks.11``) it is used as is. Pass
  ``inter_module="<dotted.name>"`` to choose another module.

Student side, :class:`TappedModel` wraps a timm model and inserts one layer per tap (the layer maps a map
(B, C, H, W) to ``(x_hat, logits)``: :class:`~gsp_hub.layers.letkd.LeTKDLayer`,
:class:`~gsp_hub.layers.tm_block.TMBlock`); :func:`insert_letkd_layers` and :func:`tm_student` build such students.
The penultimate layer runs on ``forward_features``' output before ``forward_head``; the intermediate block is
replaced by a :class:`KDTap` (block, then layer), so the layers are ordinary submodules (in ``state_dict``,
exportable) and stay in the model at inference. Channels and grid sizes come from one dry run at ``input_size``.

Teacher side, :class:`TeacherTaps` runs a frozen model (eval mode, ``no_grad``, ``requires_grad_(False)``) and
reads the same two points with forward hooks that never change the teacher's outputs. Maps are returned as
(B, C, h, w) grids, average-pooled with kernel = stride = r when the teacher's grid is r times the student's.

Every layout is handled: NCHW maps (CNNs), NHWC maps (Swin) and NLC tokens (ViTs). Layers see a channels-first
map; tokens are viewed as a (B, C, N, 1) map (prefix tokens included), and their logits / grids drop the prefix
tokens and assume a square patch grid.

A letKD-2 distillation step (layers at both taps)::

    student = insert_letkd_layers(timm.create_model("cifar_resnet20"), input_size=(3, 32, 32), inter_codes=80)
    teacher = TeacherTaps(teacher_model, grid_sizes=student.grid_sizes)
    logits, tap_logits = student(images, return_tap_logits=True)   # tap_logits[name]: (B, K, h, w)
    teacher_maps = teacher(images).maps                            # teacher_maps[name]: (B, C_t, h, w)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gsp_hub.layers.letkd import LeTKDLayer
from gsp_hub.layers.tm_block import ClassPool, LabelMode, TMBlock

__all__ = [
    "INTERMEDIATE",
    "PENULTIMATE",
    "KDTap",
    "TapInfo",
    "TappedModel",
    "TeacherOutput",
    "TeacherTaps",
    "flatten_locations",
    "insert_letkd_layers",
    "match_grid",
    "resolve_intermediate_module",
    "tm_student",
]

PENULTIMATE = "penultimate"
INTERMEDIATE = "intermediate"
TAP_NAMES = (PENULTIMATE, INTERMEDIATE)
MapFormat = Literal["NCHW", "NHWC", "NLC"]


def resolve_intermediate_module(model: nn.Module, inter_module: str = "auto") -> str:
    """Dotted name of the first block of the last stage (``inter_module="auto"``) or of ``inter_module`` itself."""
    if inter_module != "auto":
        try:
            model.get_submodule(inter_module)
        except AttributeError:
            raise ValueError(
                f"inter_module={inter_module!r} is not a submodule of {type(model).__name__}; pass a name from "
                "model.named_modules() or 'auto' (first block of the last stage)."
            ) from None
        return inter_module
    feature_info = getattr(model, "feature_info", None)
    if not feature_info:
        raise ValueError(
            f"{type(model).__name__} has no timm feature_info to locate its last stage; pass inter_module explicitly."
        )
    stage_name = feature_info[-1]["module"]
    stage = model.get_submodule(stage_name)
    if isinstance(stage, (nn.Sequential, nn.ModuleList)) and len(stage) > 0:
        return f"{stage_name}.0"
    blocks = getattr(stage, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0:
        return f"{stage_name}.blocks.0"
    return stage_name


def _format_of(model: nn.Module, x: torch.Tensor) -> MapFormat:
    if x.ndim == 3:
        return "NLC"
    if x.ndim == 4:
        return "NHWC" if getattr(model, "output_fmt", "NCHW") == "NHWC" else "NCHW"
    raise ValueError(f"a tap needs a map (B, C, H, W), (B, H, W, C) or tokens (B, N, C); got shape {tuple(x.shape)}.")


def _to_channels_first(x: torch.Tensor, fmt: MapFormat) -> torch.Tensor:
    """Native layout -> (B, C, H, W); tokens (B, N, C) -> (B, C, N, 1)."""
    if fmt == "NHWC":
        return x.permute(0, 3, 1, 2)
    if fmt == "NLC":
        return x.transpose(1, 2).unsqueeze(-1)
    return x


def _from_channels_first(x: torch.Tensor, fmt: MapFormat) -> torch.Tensor:
    """Inverse of :func:`_to_channels_first`."""
    if fmt == "NHWC":
        return x.permute(0, 2, 3, 1)
    if fmt == "NLC":
        return x.squeeze(-1).transpose(1, 2)
    return x


def _spatial_grid(x: torch.Tensor, fmt: MapFormat, num_prefix_tokens: int) -> torch.Tensor:
    """Channels-first map -> spatial grid (B, C, h, w); tokens drop their prefix and form a square grid."""
    if fmt != "NLC":
        return x
    patches = x[:, :, num_prefix_tokens:, 0]
    side = round(patches.shape[-1] ** 0.5)
    if side * side != patches.shape[-1]:
        raise ValueError(
            f"{patches.shape[-1]} patch tokens do not form a square grid; use a square input size for token models."
        )
    return patches.reshape(*patches.shape[:2], side, side)


def _native_to_grid(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    fmt = _format_of(model, x)
    return _spatial_grid(_to_channels_first(x, fmt), fmt, int(getattr(model, "num_prefix_tokens", 0)))


def match_grid(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool a map (B, C, H, W) to (B, C, h, w) with kernel = stride = (H/h, W/w); H, W must be multiples."""
    height, width = x.shape[-2:]
    if (height, width) == tuple(size):
        return x
    if height % size[0] or width % size[1]:
        raise ValueError(
            f"cannot match a teacher map of {height}x{width} to the student's {size[0]}x{size[1]} grid: the teacher's "
            "grid must be an integer multiple of the student's. Change the input size or the tapped modules."
        )
    kernel = (height // size[0], width // size[1])
    return F.avg_pool2d(x, kernel_size=kernel, stride=kernel)


def flatten_locations(x: torch.Tensor) -> torch.Tensor:
    """Map (B, C, h, w) -> one row per location (B*h*w, C), in (batch, row, column) order."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


class KDTap(nn.Module):
    """Runs ``block`` then ``layer`` on its output; keeps the layer's logits (B, K, h, w) in ``self.logits``.

    ``fmt`` is the block output's layout (``NCHW``, ``NHWC`` or ``NLC``); the layer always sees channels first.
    :class:`TappedModel` collects and clears ``logits`` after every call; call the tapped model through it.
    """

    def __init__(self, block: nn.Module, layer: nn.Module, fmt: MapFormat = "NCHW", num_prefix_tokens: int = 0) -> None:
        super().__init__()
        self.block = block
        self.layer = layer
        self.fmt: MapFormat = fmt
        self.num_prefix_tokens = num_prefix_tokens
        self.logits: torch.Tensor | None = None

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.block(*args, **kwargs)
        x_hat, logits = self.layer(_to_channels_first(out, self.fmt))
        self.logits = _spatial_grid(logits, self.fmt, self.num_prefix_tokens)
        return _from_channels_first(x_hat, self.fmt)


@dataclass(frozen=True)
class TapInfo:
    """What the dry run found at a tap: the module name, its channels, grid (h, w) and layout."""

    module: str
    channels: int
    grid_size: tuple[int, int]
    fmt: MapFormat


def _probe(model: nn.Module, inter_module: str | None, input_size: tuple[int, int, int]) -> dict[str, TapInfo]:
    """One eval-mode, no-grad pass on zeros: channels and grid size of the penultimate (and intermediate) tap."""
    captured: dict[str, torch.Tensor] = {}
    handle = (
        model.get_submodule(inter_module).register_forward_hook(
            lambda _m, _i, out: captured.setdefault(INTERMEDIATE, out)
        )
        if inter_module is not None
        else None
    )
    was_training = model.training
    parameter = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            captured[PENULTIMATE] = model.forward_features(
                torch.zeros(1, *input_size, dtype=parameter.dtype, device=parameter.device)
            )
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    if inter_module is not None and INTERMEDIATE not in captured:
        raise ValueError(f"inter_module={inter_module!r} did not run during forward_features; choose another module.")
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    info = {}
    for name, out in captured.items():
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the {name} tap returned {type(out).__name__}, expected a tensor.")
        fmt = _format_of(model, out)
        grid = _spatial_grid(_to_channels_first(out, fmt), fmt, prefix)
        info[name] = TapInfo(
            module="forward_features" if name == PENULTIMATE else str(inter_module),
            channels=int(grid.shape[1]),
            grid_size=(int(grid.shape[2]), int(grid.shape[3])),
            fmt=fmt,
        )
    return info


class TappedModel(nn.Module):
    """A timm model with layers inserted at the penultimate and/or intermediate tap (timm model contract kept).

    Args:
        model: the timm model (any family with ``forward_features`` / ``forward_head``); modified in place.
        layer_factory: ``(tap_name, channels) -> layer``, a module mapping (B, C, H, W) to ``(x_hat, logits)``.
        taps: which tap points get a layer (``penultimate``, ``intermediate``).
        input_size: (C, H, W) of the training images; fixes the grid sizes the teacher is pooled to.
        inter_module: the intermediate module's dotted name, or ``auto`` (see :func:`resolve_intermediate_module`).

    ``forward(x)`` gives logits (B, num_classes); ``forward(x, return_tap_logits=True)`` also gives
    ``{tap_name: logits (B, K, h, w)}``. ``grid_sizes`` / ``tap_info`` describe the taps.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_factory: Callable[[str, int], nn.Module],
        taps: Iterable[str] = (PENULTIMATE,),
        *,
        input_size: tuple[int, int, int],
        inter_module: str = "auto",
    ) -> None:
        super().__init__()
        taps = tuple(taps)
        unknown = [name for name in taps if name not in TAP_NAMES]
        if unknown or not taps:
            raise ValueError(f"taps must be a non-empty subset of {TAP_NAMES}, got {taps}.")
        if len(input_size) != 3:
            raise ValueError(f"input_size must be (channels, height, width), got {tuple(input_size)}.")
        for attribute in ("forward_features", "forward_head"):
            if not callable(getattr(model, attribute, None)):
                raise TypeError(f"model must follow the timm contract; {type(model).__name__} has no {attribute}().")
        self.inter_module = resolve_intermediate_module(model, inter_module) if INTERMEDIATE in taps else None
        info = _probe(model, self.inter_module, tuple(input_size))
        self.tap_info = {name: info[name] for name in taps}
        self.input_size = tuple(input_size)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self.model = model
        self.pen_layer = layer_factory(PENULTIMATE, info[PENULTIMATE].channels) if PENULTIMATE in taps else None
        if self.inter_module is not None:
            tap = KDTap(
                model.get_submodule(self.inter_module),
                layer_factory(INTERMEDIATE, info[INTERMEDIATE].channels),
                info[INTERMEDIATE].fmt,
                self.num_prefix_tokens,
            )
            parent_name, _, child_name = self.inter_module.rpartition(".")
            model.get_submodule(parent_name).register_module(child_name, tap)
        self.num_features = model.num_features
        self.head_hidden_size = getattr(model, "head_hidden_size", model.num_features)
        self.feature_info = [
            dict(entry, module=f"model.{entry['module']}") for entry in getattr(model, "feature_info", [])
        ]
        self.pretrained_cfg = self.default_cfg = dict(getattr(model, "pretrained_cfg", {}))

    @property
    def grid_sizes(self) -> dict[str, tuple[int, int]]:
        """Spatial grid (h, w) of each tap's logits, the size teacher maps are pooled to."""
        return {name: info.grid_size for name, info in self.tap_info.items()}

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def tap_layers(self) -> dict[str, nn.Module]:
        """The inserted layers by tap name."""
        layers = {}
        if self.pen_layer is not None:
            layers[PENULTIMATE] = self.pen_layer
        if self.inter_module is not None:
            layers[INTERMEDIATE] = self.model.get_submodule(self.inter_module).layer
        return layers

    def load_student_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load the wrapped model's weights as it named them before the layers were inserted (``strict``: every key
        of the model, no other); the inserted layers keep their values.

        Raises:
            ValueError: listing missing and unexpected keys, before anything is copied.
        """
        own_names: dict[str, str] = {}  # the student's own key -> its key in self.model (the inserted layers left out)
        for key in self.model.state_dict():
            if self.inter_module is None:
                own_names[key] = key
            elif key.startswith(f"{self.inter_module}.block."):
                own_names[f"{self.inter_module}.{key[len(self.inter_module) + len('.block.'):]}"] = key
            elif not key.startswith(f"{self.inter_module}.layer."):
                own_names[key] = key
        missing, unexpected = sorted(own_names.keys() - state_dict.keys()), sorted(state_dict.keys() - own_names.keys())
        if missing or unexpected:
            raise ValueError(f"the weights do not fit the student {type(self.model).__name__}: missing "
                             f"{missing[:5]}, unexpected {unexpected[:5]}; pass weights of the same architecture.")
        self.model.load_state_dict({own_names[key]: value for key, value in state_dict.items()}, strict=False)

    def _run_penultimate(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pen_layer is None:
            return features, None
        fmt = self.tap_info[PENULTIMATE].fmt
        x_hat, logits = self.pen_layer(_to_channels_first(features, fmt))
        return _from_channels_first(x_hat, fmt), _spatial_grid(logits, fmt, self.num_prefix_tokens)

    def _clear_tap_logits(self) -> None:
        """Drop the logits the intermediate taps kept (never keep a graph between calls)."""
        for module in self.model.modules():
            if isinstance(module, KDTap):
                module.logits = None

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        **kwargs: Any,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The wrapped model's ``forward_intermediates`` (its intermediate letKD layer acts inside it; ``kwargs``
        go to it too); unless ``intermediates_only``, first the ``forward_features`` output (penultimate layer
        applied)."""
        try:
            result = self.model.forward_intermediates(
                x, indices=indices, norm=norm, output_fmt=output_fmt, intermediates_only=intermediates_only, **kwargs
            )
        finally:
            self._clear_tap_logits()
        if intermediates_only:
            return result
        final, intermediates = result
        return self._run_penultimate(final)[0], intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """The wrapped model's ``prune_intermediate_layers`` (a feature extractor); returns the kept indices."""
        return self.model.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head)

    def _features_and_tap_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, pen_logits = self._run_penultimate(self.model.forward_features(x))
        tap_logits = {}
        if pen_logits is not None:
            tap_logits[PENULTIMATE] = pen_logits
        if self.inter_module is not None:
            tap = self.model.get_submodule(self.inter_module)
            tap_logits[INTERMEDIATE], tap.logits = tap.logits, None  # never keep a graph between calls
        return features, tap_logits

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the model's ``forward_features`` output with the penultimate layer applied (same shape)."""
        return self._features_and_tap_logits(x)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.model.forward_head(x, pre_logits=pre_logits)

    def forward(
        self, x: torch.Tensor, return_tap_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Images (B, C, H, W) -> logits (B, num_classes) [, {tap_name: template logits (B, K, h, w)}]."""
        features, tap_logits = self._features_and_tap_logits(x)
        logits = self.model.forward_head(features)
        return (logits, tap_logits) if return_tap_logits else logits

    def get_classifier(self) -> nn.Module:
        return self.model.get_classifier()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the model's classifier; refused when an inserted layer is tied to the class count (TM block)."""
        for name, layer in self.tap_layers.items():
            tied = getattr(layer, "num_classes", None)
            if tied is not None and tied != num_classes:
                raise ValueError(
                    f"the {name} layer has templates tied to {tied} classes; reset_classifier({num_classes}) would "
                    "leave them stale. Build a new student with num_classes set for the new label set."
                )
        if global_pool is None:
            self.model.reset_classifier(num_classes)
        else:
            self.model.reset_classifier(num_classes, global_pool)


def insert_letkd_layers(
    model: nn.Module,
    *,
    input_size: tuple[int, int, int],
    pen_codes: int = 4096,
    inter_codes: int = 0,
    alpha_pen: float = 1.0,
    alpha_inter: float = 1.0,
    inter_module: str = "auto",
) -> TappedModel:
    """A LeTKD student: letKD-1 (``inter_codes=0``: penultimate layer only) or letKD-2 (``inter_codes`` =
    classes x sub-classes, e.g. 10 x 8 = 80 on CIFAR-10, for the intermediate layer)."""
    if pen_codes < 1 or inter_codes < 0:
        raise ValueError(f"pen_codes must be >= 1 and inter_codes >= 0 (0: letKD-1), got {pen_codes}, {inter_codes}.")
    settings = {PENULTIMATE: (pen_codes, alpha_pen), INTERMEDIATE: (inter_codes, alpha_inter)}

    def make_layer(tap: str, channels: int) -> LeTKDLayer:
        num_codes, alpha = settings[tap]
        return LeTKDLayer(channels, num_codes, alpha=alpha)

    taps = (PENULTIMATE, INTERMEDIATE) if inter_codes else (PENULTIMATE,)
    return TappedModel(model, make_layer, taps, input_size=input_size, inter_module=inter_module)


def tm_student(
    model: nn.Module,
    *,
    input_size: tuple[int, int, int],
    num_classes: int | None = None,
    taps: Iterable[str] = (INTERMEDIATE,),
    inter_module: str = "auto",
    templates_per_class: int = 1,
    alpha: float = 1.0,
    class_pool: ClassPool = "max",
    label_mode: LabelMode = "dense",
) -> TappedModel:
    """A timm model with a :class:`TMBlock` at each tap (default: after the first block of the last stage)."""
    num_classes = int(model.num_classes) if num_classes is None else num_classes
    if num_classes < 1:
        raise ValueError(f"the TM block needs classes: the model has num_classes={num_classes}; pass num_classes.")

    def make_block(_tap: str, channels: int) -> TMBlock:
        return TMBlock(channels, num_classes, templates_per_class, alpha, class_pool=class_pool, label_mode=label_mode)

    return TappedModel(model, make_block, taps, input_size=input_size, inter_module=inter_module)


@dataclass
class TeacherOutput:
    """Teacher maps by tap name, each (B, C_t, h, w) on the student's grid; logits (B, C) when asked for."""

    maps: dict[str, torch.Tensor]
    logits: torch.Tensor | None = None


class TeacherTaps(nn.Module):
    """A frozen teacher read at the LeTKD tap points through forward hooks that never modify its outputs.

    Args:
        teacher: any timm model; set to eval mode with ``requires_grad_(False)``, and kept in eval mode.
        taps: tap points to read (``penultimate``, ``intermediate``); may be empty for logit-only KD.
        grid_sizes: per tap, the student's (h, w) grid; teacher maps are average-pooled to it (see
            :func:`match_grid`). ``None`` keeps the teacher's own grid (e.g. to inspect it).
        inter_module: as in :func:`resolve_intermediate_module`.
        with_logits: also run the teacher's head and return its logits (Hinton KD).
    """

    def __init__(
        self,
        teacher: nn.Module,
        taps: Iterable[str] = TAP_NAMES,
        grid_sizes: Mapping[str, tuple[int, int]] | None = None,
        inter_module: str = "auto",
        with_logits: bool = False,
    ) -> None:
        super().__init__()
        taps = tuple(taps)
        unknown = [name for name in taps if name not in TAP_NAMES]
        if unknown:
            raise ValueError(f"taps must be a subset of {TAP_NAMES}, got {taps}.")
        if not taps and not with_logits:
            raise ValueError("TeacherTaps reads nothing: give at least one tap or with_logits=True.")
        missing = [name for name in taps if grid_sizes is not None and name not in grid_sizes]
        if missing:
            raise ValueError(f"grid_sizes has no entry for taps {missing}; pass student.grid_sizes.")
        self.teacher = teacher.eval().requires_grad_(False)
        self.taps = taps
        self.grid_sizes = dict(grid_sizes) if grid_sizes is not None else None
        self.with_logits = with_logits
        self.inter_module = resolve_intermediate_module(teacher, inter_module) if INTERMEDIATE in taps else None
        self._captured: torch.Tensor | None = None
        self._hook = (
            teacher.get_submodule(self.inter_module).register_forward_hook(self._capture)
            if self.inter_module is not None
            else None
        )

    def _capture(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self._captured = output.detach().clone()

    def remove_hooks(self) -> None:
        """Detach the hook from the teacher (the teacher is then an ordinary model again)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def train(self, mode: bool = True) -> TeacherTaps:
        """The teacher always stays in eval mode (BN running statistics, no dropout)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def _to_student_grid(self, name: str, x: torch.Tensor) -> torch.Tensor:
        grid = _native_to_grid(self.teacher, x)
        return grid if self.grid_sizes is None else match_grid(grid, self.grid_sizes[name])

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> TeacherOutput:
        """Images (B, C, H, W) -> :class:`TeacherOutput` (maps on the student's grid, optional logits)."""
        self._captured = None
        features = self.teacher.forward_features(x)
        maps = {}
        if PENULTIMATE in self.taps:
            maps[PENULTIMATE] = self._to_student_grid(PENULTIMATE, features)
        if self.inter_module is not None:
            if self._hook is None:
                raise RuntimeError("remove_hooks() was called: build a new TeacherTaps to read the teacher again.")
            if self._captured is None:
                raise RuntimeError(f"the teacher's {self.inter_module!r} did not run during forward_features.")
            maps[INTERMEDIATE] = self._to_student_grid(INTERMEDIATE, self._captured)
            self._captured = None
        logits = self.teacher.forward_head(features) if self.with_logits else None
        return TeacherOutput(maps=maps, logits=logits)
