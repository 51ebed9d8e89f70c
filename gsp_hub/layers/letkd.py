"""The LeTKD layer (Gorgun, Gurbuz & Alatan, BMVC 2023): a residual template-matching branch in the student.

On a map x (B, C, H, W) the layer scores every location against K learnable templates with a cosine 1x1
convolution (the "match" logits s, supervised by the teacher), turns the scores into a sparse thresholded soft
assignment with BatchNorm + ReLU, maps the assignment back to C channels with a second cosine 1x1 convolution and
adds it to the input::

    s = match(x)                       # (B, K, H, W), scale * cos(x_loc, w_k), |s| <= |scale| (init 3)
    x_hat = x + alpha * value(relu(bn(s)))   # (B, C, H, W); alpha is fixed, not learned

``x_hat`` replaces ``x`` on the forward path, so the layer stays in the student at inference (no teacher needed).
With ``alpha = 0`` the layer is the identity (the QuEST setting: templates trained but not fed forward).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CosineConv1x1", "LeTKDLayer"]


class CosineConv1x1(nn.Module):
    """Scaled cosine similarity between each location and each filter: (B, in, H, W) -> (B, out, H, W).

    ``out[b, k, i, j] = scale * <x[b, :, i, j] / |x|, w_k / |w_k|>``; an all-zero location gives zeros. The weight
    is initialised N(0, 2 / in_channels), there is no bias, and ``scale`` is one learnable scalar.
    """

    def __init__(self, in_channels: int, out_channels: int, init_scale: float = 1.0, learn_scale: bool = True) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}.")
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1) * math.sqrt(2.0 / in_channels))
        self.scale = nn.Parameter(torch.tensor(float(init_scale)), requires_grad=learn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.conv2d(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}"


class LeTKDLayer(nn.Module):
    """Residual template matching: (B, channels, H, W) -> (x_hat (B, channels, H, W), logits (B, num_codes, H, W)).

    Args:
        channels: channels of the student map the layer sits on.
        num_codes: number of templates K (4096 at the penultimate map; classes x sub-classes at the intermediate one).
        alpha: fixed weight of the value branch (1.0 in the paper except for cross-family pairs).
        match_scale: initial scale of the matching cosine conv (the learnable template temperature).
        value_scale: initial scale of the value cosine conv.
    """

    def __init__(
        self,
        channels: int,
        num_codes: int,
        alpha: float = 1.0,
        match_scale: float = 3.0,
        value_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0 (0 turns the value branch off), got {alpha}.")
        self.channels = channels
        self.num_codes = num_codes
        self.alpha = float(alpha)
        self.match = CosineConv1x1(channels, num_codes, match_scale)
        self.bn = nn.BatchNorm2d(num_codes)
        self.value = CosineConv1x1(num_codes, channels, value_scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"{type(self).__name__} expects a map (B, {self.channels}, H, W), got shape {tuple(x.shape)}."
            )
        logits = self.match(x)
        return x + self.alpha * self.value(F.relu(self.bn(logits))), logits

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_codes={self.num_codes}, alpha={self.alpha}"
