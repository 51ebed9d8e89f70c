"""Images -> L2-normalised embeddings for the gallery index, and the fingerprint of the model that made them.

* :func:`gallery_items` lists the images of a source: a folder (every image file below it, sorted; the label is
  the first sub-folder, as in ``root/<class>/<image>``) or a ``datasets.Dataset`` (an ``image`` column, a ``label``
  column if present).
* :func:`embed_items` runs the model on them in batches with a progress bar: ``forward_head(forward_features(x),
  pre_logits=True)`` (the pooled embedding of a MetricNet, the penultimate features of any timm classifier), then
  L2-normalises, so that inner product = cosine similarity.
* :func:`model_fingerprint` hashes everything that determines an embedding — the module tree with its
  hyperparameters, the preprocessing and every weight — so that an index can refuse embeddings of another model.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import timm.data
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict
from datasets import Image as ImageFeature
from torch import nn
from tqdm.auto import tqdm

from gsp_hub.checks import check_int
from gsp_hub.data import IMAGE_COLUMN, LABEL_COLUMN, decode_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "GalleryItem",
    "embed_images",
    "embed_items",
    "gallery_items",
    "model_data_config",
    "model_fingerprint",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class GalleryItem:
    """One gallery image: a file (``path``) or a data set row (``dataset``, ``split``, ``row``), and its label."""

    path: str | None = None
    dataset: str | None = None
    split: str | None = None
    row: int | None = None
    label: str | None = None
    load: Callable[[], PIL.Image.Image] | None = None  # decodes the image (RGB); not stored

    def image(self) -> PIL.Image.Image:
        if self.load is None:
            raise ValueError("this gallery item has no image loader (metadata read back from an index).")
        return self.load()


def _image_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())


def _folder_items(root: Path) -> list[GalleryItem]:
    files = _image_files(root)
    if not files:
        raise ValueError(
            f"images={str(root)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}) at any depth; pass a "
            "folder of images (root/<class>/<image> gives labels) or a datasets.Dataset."
        )
    items = []
    for file in files:
        relative = file.relative_to(root)
        label = relative.parts[0] if len(relative.parts) > 1 else None
        items.append(GalleryItem(path=str(file.absolute()), label=label, load=lambda file=file: decode_image(
            {"path": str(file), "bytes": None})))
    return items


def _dataset_items(dataset: Dataset, name: str, split: str | None) -> list[GalleryItem]:
    features = dataset.features
    image_column = IMAGE_COLUMN if IMAGE_COLUMN in features else next(
        (column for column, feature in features.items() if isinstance(feature, ImageFeature)), None
    )
    if image_column is None:
        raise ValueError(
            f"the dataset has no image column (columns {list(features)}); it needs a datasets.Image column "
            f"(named {IMAGE_COLUMN!r} preferably)."
        )
    raw = dataset.cast_column(image_column, ImageFeature(decode=False))
    labels: list[str | None] = [None] * len(dataset)
    if LABEL_COLUMN in features:
        values = dataset[LABEL_COLUMN]
        feature = features[LABEL_COLUMN]
        names = feature.int2str if isinstance(feature, ClassLabel) else str
        labels = [names(value) if value is not None else None for value in values]

    def loader(row: int) -> Callable[[], PIL.Image.Image]:
        return lambda: decode_image(raw[row][image_column])

    return [
        GalleryItem(dataset=name, split=split, row=row, label=labels[row], load=loader(row))
        for row in range(len(dataset))
    ]


def gallery_items(images: str | os.PathLike[str] | Dataset, *, name: str | None = None,
                  split: str | None = None) -> list[GalleryItem]:
    """The images of a folder (recursively, sorted) or of a ``datasets.Dataset`` (rows in order).

    Args:
        images: a folder path, or a ``datasets.Dataset`` with an image column (and optionally ``label``).
        name: how the data set is recorded in the metadata (its source id); default: its builder name.
        split: the data set split recorded in the metadata.
    """
    if isinstance(images, DatasetDict):
        raise ValueError(f"images is a DatasetDict with splits {list(images)}; pass one split, e.g. images['test'].")
    if isinstance(images, Dataset):
        if len(images) == 0:
            raise ValueError("images is an empty datasets.Dataset; nothing to index.")
        return _dataset_items(images, name or images.info.dataset_name or "dataset", split)
    if not isinstance(images, (str, os.PathLike)):
        raise TypeError(f"images must be a folder path or a datasets.Dataset, got {type(images).__name__}.")
    root = Path(images).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"images={str(root)!r} is not a folder; pass a folder of images or a datasets.Dataset.")
    return _folder_items(root.absolute())


def model_data_config(model: nn.Module, input_size: int | None = None) -> dict[str, Any]:
    """timm preprocessing of ``model`` (input_size, interpolation, mean, std, crop_pct, crop_mode), JSON-ready."""
    overrides = {"input_size": (3, input_size, input_size)} if input_size else {}
    config = timm.data.resolve_data_config(overrides, model=model)
    return json.loads(json.dumps(config))  # tuples -> lists, as stored in index.json


def model_fingerprint(model: nn.Module, data_config: dict[str, Any]) -> str:
    """SHA-256 (hex) of what determines an embedding: the module tree with every hyperparameter (``repr(model)``:
    e.g. GSP's gamma and transport ratio), the preprocessing, and every state_dict tensor. Independent of how the
    model was built (timm factory, ``from_pretrained``, constructor)."""
    description = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "modules": repr(model),
        "data_config": data_config,
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().reshape(-1).contiguous()
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def _embed_batch(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "forward_head") and hasattr(model, "forward_features"):
        features = model.forward_head(model.forward_features(images), pre_logits=True)
    else:
        features = model(images)
    if features.ndim != 2:
        raise ValueError(
            f"{type(model).__name__} gives features of shape {tuple(features.shape)} for a batch of images; an "
            "index needs one vector per image (B, D). Use a model with pooled embeddings (e.g. a MetricNet)."
        )
    return F.normalize(features.float(), dim=1)


def _batches(items: Sequence[GalleryItem], batch_size: int) -> Iterator[Sequence[GalleryItem]]:
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


@torch.no_grad()
def embed_items(
    model: nn.Module,
    items: Sequence[GalleryItem],
    data_config: dict[str, Any],
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """(len(items), D) float32 L2-normalised embeddings, computed in eval mode in batches of ``batch_size``."""
    check_int("batch_size", batch_size, minimum=1)
    transform = timm.data.create_transform(**data_config, is_training=False)
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    chunks = []
    try:
        with tqdm(total=len(items), desc="embed gallery", unit="img", disable=not progress) as bar:
            for batch in _batches(items, batch_size):
                images = torch.stack([transform(item.image()) for item in batch]).to(device)
                chunks.append(_embed_batch(model, images).cpu().numpy())
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def embed_images(
    model: nn.Module, images: Sequence[PIL.Image.Image], data_config: dict[str, Any], *, batch_size: int = 64
) -> np.ndarray:
    """Embeddings (len(images), D) of in-memory PIL images (e.g. queries), as :func:`embed_items` computes them."""
    items = [GalleryItem(load=lambda image=image: decode_image(image)) for image in images]
    return embed_items(model, items, data_config, batch_size=batch_size, progress=False)
