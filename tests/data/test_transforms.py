"""gsp_hub.data transforms: timm config resolution, lazy with_transform, RGB conversion, collate, DataLoader."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest
import timm
import torch
from datasets import ClassLabel, Dataset, Features, Image
from torch.utils.data import DataLoader

from gsp_hub.data import (
    FASHION_MNIST_SUBSET_PATH,
    MPerClassBatchSampler,
    collate_image_batch,
    create_image_transforms,
    decode_image,
    load_image_dataset,
    resolve_image_config,
    with_image_transform,
)

HALF = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def fmnist_test():
    return load_image_dataset("fashion-mnist-subset", split="test")["test"]


def test_config_comes_from_the_model_and_overrides_win():
    model = timm.create_model("resnet18", pretrained=False)
    reference = timm.data.resolve_model_data_config(model)
    config = resolve_image_config(model, input_size=48)
    assert config["input_size"] == (3, 48, 48)
    for key in ("mean", "std", "interpolation", "crop_pct"):
        assert config[key] == reference[key]
    config = resolve_image_config(model, input_size=(40, 56), mean=HALF, std=HALF, crop_pct=1.0)
    assert (config["input_size"], config["mean"], config["std"], config["crop_pct"]) == ((3, 40, 56), HALF, HALF, 1.0)
    assert resolve_image_config()["input_size"] == (3, 224, 224)  # no model: timm defaults


@pytest.mark.parametrize("bad", [0, (3, 4, 5, 6), (1, 32, 32), "32"])
def test_bad_input_size(bad):
    with pytest.raises(ValueError, match="input_size="):
        resolve_image_config(input_size=bad)


def test_greyscale_rows_become_exact_rgb_tensors(fmnist_test):
    """28 px, crop_pct 1, mean = std = 0.5: the eval transform is the identity up to scaling, so the tensor
    must equal the shipped uint8 pixels on all three channels (independent reference: the npz)."""
    transforms = create_image_transforms(input_size=28, crop_pct=1.0, mean=HALF, std=HALF)
    view = with_image_transform(fmnist_test, transforms.eval)
    rows = view[[0, 7, 999]]
    with np.load(FASHION_MNIST_SUBSET_PATH) as arrays:
        pixels = arrays["test_images"][[0, 7, 999]]
        labels = arrays["test_labels"][[0, 7, 999]]
    assert rows["labels"] == labels.tolist()
    for tensor, expected in zip(rows["pixel_values"], pixels):
        assert tensor.shape == (3, 28, 28) and tensor.dtype == torch.float32
        expected = torch.as_tensor(expected, dtype=torch.float32) / 255
        for channel in tensor:
            torch.testing.assert_close(channel * 0.5 + 0.5, expected, atol=1e-6, rtol=0)
    assert fmnist_test.features["image"].decode  # the source dataset is not modified


def test_rgba_and_palette_images_become_rgb():
    def encoded(image: PIL.Image.Image) -> dict:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    rgba = PIL.Image.new("RGBA", (5, 4), (10, 20, 30, 0))
    palette = PIL.Image.new("RGB", (5, 4), (200, 100, 50)).convert("P")
    for image, colour in ((rgba, (10, 20, 30)), (palette, palette.convert("RGB").getpixel((0, 0)))):
        decoded = decode_image(encoded(image))
        assert decoded.mode == "RGB" and decoded.size == (5, 4) and decoded.getpixel((2, 2)) == colour
    assert decode_image(rgba).mode == "RGB"  # already-decoded images too


def test_training_transform_shapes_and_collate(fmnist_test):
    model = timm.create_model("resnet18", pretrained=False)
    transforms = create_image_transforms(model, input_size=32, scale=(0.5, 1.0))
    assert transforms.data_config["input_size"] == (3, 32, 32)
    view = with_image_transform(fmnist_test, transforms.train)
    labels = np.asarray(fmnist_test["label"])
    sampler = MPerClassBatchSampler(labels, m=3, batch_size=12, seed=0, length=48)
    loader = DataLoader(view, batch_sampler=sampler, collate_fn=collate_image_batch)
    batches = list(loader)
    assert len(batches) == 4
    for (images, batch_labels), indices in zip(batches, sampler):
        assert images.shape == (12, 3, 32, 32) and images.dtype == torch.float32
        assert batch_labels.dtype == torch.long and batch_labels.tolist() == labels[indices].tolist()
    with torch.no_grad():
        assert model(batches[0][0]).shape == (12, 1000)  # the batch is a valid timm input


def test_dataloader_worker_processes_can_run_the_transform(fmnist_test):
    transforms = create_image_transforms(input_size=32)
    view = with_image_transform(fmnist_test.select(range(16)), transforms.eval)
    loader = DataLoader(view, batch_size=8, collate_fn=collate_image_batch, num_workers=1)
    images, labels = next(iter(loader))
    assert images.shape == (8, 3, 32, 32)
    assert labels.tolist() == np.asarray(fmnist_test["label"][:8]).tolist()


def test_with_image_transform_needs_image_and_label_columns():
    features = Features({"picture": Image(), "label": ClassLabel(names=["a", "b"])})
    dataset = Dataset.from_dict({"picture": [], "label": []}, features=features)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['image'\].*load_image_dataset"):
        with_image_transform(dataset, lambda image: image)
