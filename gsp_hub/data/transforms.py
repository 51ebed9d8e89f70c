"""timm image transforms applied lazily to a ``datasets.Dataset``, and the matching collate function.

Usage (the training and evaluation data path)::

    transforms = create_image_transforms(model, input_size=64)        # timm config from the model + overrides
    train = with_image_transform(splits.train, transforms.train)      # rows -> {"pixel_values", "labels"}
    test = with_image_transform(splits.test, transforms.eval)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate_image_batch, num_workers=2)
    images, labels = next(iter(loader))                               # (B, 3, H, W) float32, (B,) int64

Images are decoded by the transform itself (the ``image`` column is read undecoded), so that greyscale, palette
and RGBA images become RGB and a corrupt file raises an error that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import PIL.Image
import timm.data
import torch
from datasets import Dataset, Image

from gsp_hub.data.loading import IMAGE_COLUMN, LABEL_COLUMN, decode_image

__all__ = [
    "BatchTransform",
    "ImageConfigOptions",
    "ImageTransform",
    "ImageTransforms",
    "collate_image_batch",
    "create_image_transforms",
    "resolve_image_config",
    "with_image_transform",
]

ImageTransform = Callable[[PIL.Image.Image], torch.Tensor]  # RGB PIL image -> (3, H, W) float tensor


@dataclass(frozen=True)
class ImageTransforms:
    """The training (augmenting) and evaluation transforms, and the timm data config they were built from."""

    train: ImageTransform
    eval: ImageTransform
    data_config: dict[str, Any]


class ImageConfigOptions(TypedDict, total=False):
    """Overrides of a model's timm data config (the keyword arguments of :func:`resolve_image_config`); ``None``
    keeps the model's value. ``input_size`` is ``S`` (square), ``(H, W)`` or ``(3, H, W)``."""

    input_size: int | Sequence[int] | None
    mean: Sequence[float] | None
    std: Sequence[float] | None
    interpolation: str | None
    crop_pct: float | None


_CONFIG_OPTIONS: frozenset[str] = ImageConfigOptions.__optional_keys__


def resolve_image_config(model: torch.nn.Module | None = None, **options: Unpack[ImageConfigOptions]
                         ) -> dict[str, Any]:
    """timm data config (``input_size (3,H,W)``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``).

    Taken from ``model.pretrained_cfg`` (timm's ``resolve_data_config``); the :class:`ImageConfigOptions` override
    it. Without a model: timm's ImageNet defaults.
    """
    unknown = sorted(set(options) - _CONFIG_OPTIONS)
    if unknown:
        raise TypeError(f"resolve_image_config() got unexpected keyword arguments {unknown}; it takes "
                        f"{sorted(_CONFIG_OPTIONS)}.")
    overrides: dict[str, Any] = {"in_chans": 3}  # images are always decoded as RGB
    for key, value in options.items():
        if key == "input_size" and value is not None:
            value = _input_size(value)
        elif key in ("mean", "std") and value is not None:
            value = tuple(value)
        if value is not None:
            overrides[key] = value
    return timm.data.resolve_data_config(overrides, model=model)


def create_image_transforms(model: torch.nn.Module | None = None, **options: Any) -> ImageTransforms:
    """timm ``create_transform`` for training (``is_training=True``) and evaluation, from one data config.

    ``options`` named in :class:`ImageConfigOptions` (``input_size``, ``mean``, ``std``, ``interpolation``,
    ``crop_pct``) go to :func:`resolve_image_config`; the others to the training transform only (timm names:
    ``scale``, ``ratio``, ``hflip``, ``color_jitter``, ``auto_augment``, ``re_prob``, ...). timm's training default
    is RandomResizedCrop with scale (0.08, 1), horizontal flip and colour jitter 0.4; evaluation resizes to
    ``size / crop_pct`` and crops.
    """
    config_options = {key: options.pop(key) for key in _CONFIG_OPTIONS & options.keys()}
    config = resolve_image_config(model, **config_options)
    return ImageTransforms(
        train=timm.data.create_transform(**config, is_training=True, **options),
        eval=timm.data.create_transform(**config, is_training=False),
        data_config=config,
    )


class BatchTransform:
    """``Dataset.with_transform`` function: ``{"image", "label"}`` batch -> ``{"pixel_values", "labels"}``.

    ``image`` values are undecoded ``{"bytes", "path"}`` dicts; each is decoded to RGB and transformed to a
    (3, H, W) tensor. A class (not a closure) so that DataLoader worker processes can pickle it.
    """

    def __init__(self, transform: ImageTransform) -> None:
        self.transform = transform

    def __call__(self, batch: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
        return {
            "pixel_values": [self.transform(decode_image(value)) for value in batch[IMAGE_COLUMN]],
            "labels": list(batch[LABEL_COLUMN]),
        }


def with_image_transform(dataset: Dataset, transform: ImageTransform) -> Dataset:
    """A lazily transformed view of ``dataset`` (columns ``image``, ``label``): rows become
    ``{"pixel_values": (3, H, W) float tensor, "labels": int}``. The original dataset is unchanged."""
    missing = [column for column in (IMAGE_COLUMN, LABEL_COLUMN) if column not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset lacks the column(s) {missing} (it has {dataset.column_names}); load it with "
                         "gsp_hub.data.load_image_dataset, which names them 'image' and 'label'")
    undecoded = dataset.cast_column(IMAGE_COLUMN, Image(decode=False))
    return undecoded.with_transform(BatchTransform(transform), columns=[IMAGE_COLUMN, LABEL_COLUMN])


def collate_image_batch(rows: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of :func:`with_image_transform` -> ``(images (B, 3, H, W) float32, labels (B,) int64)``."""
    images = torch.stack([row["pixel_values"] for row in rows])
    labels = torch.as_tensor([int(row["labels"]) for row in rows], dtype=torch.long)
    return images, labels


def _input_size(input_size: int | Sequence[int]) -> tuple[int, int, int]:
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) == 3 and size[0] == 3:
        size = size[1:]
    if len(size) != 2 or not all(isinstance(side, int) and side > 0 for side in size):
        raise ValueError(f"input_size={input_size!r}: expected a positive int S, (H, W) or (3, H, W)")
    return (3, *size)
