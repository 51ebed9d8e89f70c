"""Distillation losses: LeTKD (CE + dense KL per tap), the Hinton KD baseline and the TM block's label loss.

LeTKD (letkd.md section 4)::

    L = CE(logits, y) + pen_weight * KL_pen + inter_weight * KL_int
    KL = (1 / (B*h*w)) * sum_locations sum_k p_k (log p_k - log softmax(s)_k)

with s the student's template logits at a tap and p the teacher targets of the same location (zero targets
contribute 0). The teacher's classifier is never used. :class:`LeTKDLoss` owns the :class:`LeTKDTargets` as a
submodule, so the codebook, LDA, prototypes and S are buffers in its ``state_dict`` (checkpoint it with the model).

Hinton KD: ``ce_weight * CE + kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T))`` with T = 4 and the
RepDistiller CIFAR weights 0.1 / 0.9 as defaults.

TM block (:mod:`gsp_hub.layers.tm_block`, a reconstruction): ``CE + lambda_tm * sum_tap label_loss`` (:func:`tm_loss`).

Every loss returns a :class:`DistillLossOutput`: the scalar to back-propagate and detached parts for logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from gsp_hub.layers.tm_block import TMBlock
from gsp_hub.models.taps import INTERMEDIATE, PENULTIMATE, flatten_locations

if TYPE_CHECKING:
    from gsp_hub.kd.targets import LeTKDTargets

__all__ = ["DistillLossOutput", "HintonKDLoss", "LeTKDLoss", "dense_kl", "hinton_kd", "tm_loss"]


@dataclass
class DistillLossOutput:
    """``loss``: scalar to back-propagate; ``parts``: detached scalars by name (``ce``, ``kl_penultimate``, ...)."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are promoted for the log-softmax; float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def dense_kl(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over locations of KL(targets || softmax(logits)); logits (B, K, h, w) or (L, K), targets (L, K)."""
    if logits.ndim == 4:
        logits = flatten_locations(logits)
    if logits.shape != targets.shape:
        raise ValueError(
            f"student template logits give {tuple(logits.shape)} (locations, codes) but the teacher targets are "
            f"{tuple(targets.shape)}; the student's tap needs num_codes={targets.shape[1]} and the same grid."
        )
    log_probs = F.log_softmax(_at_least_float32(logits), dim=1)
    return (torch.xlogy(targets, targets) - targets * log_probs).sum() / logits.shape[0]


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch; logits (B, C)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ; "
            "both models need the same classes."
        )
    teacher_log_probs = F.log_softmax(_at_least_float32(teacher_logits) / temperature, dim=1)
    student_log_probs = F.log_softmax(_at_least_float32(student_logits) / temperature, dim=1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * temperature**2


class LeTKDLoss(nn.Module):
    """CE + weighted dense KL at every tap that has targets.

    Args:
        targets: the teacher supervision (its buffers become part of this module's ``state_dict``).
        pen_weight: weight of KL at the penultimate tap.
        inter_weight: weight of KL at the intermediate tap.
    """

    def __init__(self, targets: LeTKDTargets, pen_weight: float = 1.0, inter_weight: float = 1.0) -> None:
        super().__init__()
        self.targets = targets
        self.weights = {PENULTIMATE: float(pen_weight), INTERMEDIATE: float(inter_weight)}

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        tap_logits: Mapping[str, torch.Tensor],
        teacher_maps: Mapping[str, torch.Tensor],
    ) -> DistillLossOutput:
        """Student logits (B, C), labels (B,), student template logits {tap: (B, K, h, w)}, teacher maps
        {tap: (B, D, h, w)} -> CE + sum of weighted KLs."""
        if set(tap_logits) != set(self.targets.taps):
            raise ValueError(
                f"the student has KD layers at {sorted(tap_logits)} but the targets cover {sorted(self.targets.taps)}; "
                "build both for the same taps (letKD-1: penultimate; letKD-2: penultimate and intermediate)."
            )
        ce = F.cross_entropy(logits, labels)
        loss = ce
        parts = {"ce": ce.detach()}
        with torch.no_grad():
            targets = self.targets(teacher_maps, labels)
        for name, target in targets.items():
            kl = dense_kl(tap_logits[name], target)
            loss = loss + self.weights[name] * kl
            parts[f"kl_{name}"] = kl.detach()
            agreement = flatten_locations(tap_logits[name]).argmax(1) == target.argmax(1)
            parts[f"template_acc_{name}"] = agreement.float().mean().detach()
        return DistillLossOutput(loss, parts)


class HintonKDLoss(nn.Module):
    """``ce_weight * CE + kd_weight * hinton_kd(student, teacher, temperature)``."""

    def __init__(self, temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.ce_weight = float(ce_weight)
        self.kd_weight = float(kd_weight)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor) -> DistillLossOutput:
        """Student logits (B, C), labels (B,), teacher logits (B, C)."""
        ce = F.cross_entropy(logits, labels)
        kd = hinton_kd(logits, teacher_logits.detach(), self.temperature)
        return DistillLossOutput(self.ce_weight * ce + self.kd_weight * kd, {"ce": ce.detach(), "kd": kd.detach()})


def tm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    tap_logits: Mapping[str, torch.Tensor],
    blocks: Mapping[str, nn.Module],
    lambda_tm: float = 1.0,
) -> DistillLossOutput:
    """``CE(logits, labels) + lambda_tm * sum_tap blocks[tap].label_loss(tap_logits[tap], labels)``.

    ``tap_logits`` from ``student(x, return_tap_logits=True)``, ``blocks`` = ``student.tap_layers``.
    """
    if set(tap_logits) != set(blocks):
        raise ValueError(
            f"tap_logits has {sorted(tap_logits)} but blocks has {sorted(blocks)}; pass blocks=student.tap_layers."
        )
    ce = F.cross_entropy(logits, labels)
    loss = ce
    parts = {"ce": ce.detach()}
    for name, block in blocks.items():
        if not isinstance(block, TMBlock):
            raise TypeError(f"blocks[{name!r}] is a {type(block).__name__}, expected a TMBlock.")
        label_loss = block.label_loss(tap_logits[name], labels)
        loss = loss + lambda_tm * label_loss
        parts[f"tm_{name}"] = label_loss.detach()
    return DistillLossOutput(loss, parts)
