"""A trained export gives the same embedding through all four loaders: timm hf-hub:, timm local-dir:,
transformers (AutoModel / pipeline) and gsp_hub.from_pretrained — bit for bit on the same input tensor."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import timm
import torch
from hub_fixtures import PREPROCESSING, REPO_ID, REVISION, build_hf_cache
from PIL import Image

import gsp_hub
from gsp_hub.data.embedded import FASHION_MNIST_SUBSET_PATH

TRANSFORM = timm.data.create_transform(**PREPROCESSING)


def pil_images(count: int) -> list[Image.Image]:
    """Real Fashion-MNIST test photos (28x28 greyscale) as RGB PIL images."""
    images = np.load(FASHION_MNIST_SUBSET_PATH)["test_images"][::97][:count]
    return [Image.fromarray(image).convert("RGB") for image in images]


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """Four real photos (4, 3, 64, 64) through the timm transform the export must describe."""
    return torch.stack([TRANSFORM(image) for image in pil_images(4)])


@pytest.fixture(scope="module")
def reference(trained_model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return trained_model(batch)


def embed(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(batch)


def assert_same_weights(model: torch.nn.Module, trained: torch.nn.Module, prefix: str = "") -> None:
    expected = trained.state_dict()
    loaded = {k.removeprefix(prefix): v for k, v in model.state_dict().items()}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert bool(loaded["pool.initialized"])  # the trained GSP state travels with the weights


def test_export_preprocessing_matches_the_test_transform(export_dir: Path) -> None:
    model = gsp_hub.from_pretrained(export_dir)
    config = timm.data.resolve_model_data_config(model)
    assert {key: tuple(v) if isinstance(v, list) else v for key, v in config.items()} == PREPROCESSING


def test_timm_hf_hub_from_hand_built_offline_cache(
    export_dir: Path,
    trained_model: torch.nn.Module,
    batch: torch.Tensor,
    reference: torch.Tensor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(build_hf_cache(export_dir, tmp_path)))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = timm.create_model(f"hf-hub:{REPO_ID}", pretrained=True)
    assert model.pretrained_cfg["hf_hub_id"] == REPO_ID
    assert_same_weights(model, trained_model)
    assert (embed(model, batch) - reference).abs().max() == 0

    for name in (f"hf-hub:{REPO_ID}", REPO_ID, f"{REPO_ID}@{REVISION}"):  # loader 4 through the same cache
        ours = gsp_hub.from_pretrained(name)
        assert not ours.training and ours.pretrained_cfg["source"] == "hf-hub"
        assert (embed(ours, batch) - reference).abs().max() == 0


def test_timm_local_dir(
    export_dir: Path, trained_model: torch.nn.Module, batch: torch.Tensor, reference: torch.Tensor
) -> None:
    model = timm.create_model(f"local-dir:{export_dir}", pretrained=True)
    assert_same_weights(model, trained_model)
    assert (embed(model, batch) - reference).abs().max() == 0


@pytest.mark.parametrize("form", ["path", "str", "local-dir"])
def test_gsp_hub_from_pretrained_local(
    form: str, export_dir: Path, trained_model: torch.nn.Module, batch: torch.Tensor, reference: torch.Tensor
) -> None:
    name = {"path": export_dir, "str": str(export_dir), "local-dir": f"local-dir:{export_dir}"}[form]
    model = gsp_hub.from_pretrained(name)
    assert not model.training
    assert_same_weights(model, trained_model)
    assert (embed(model, batch) - reference).abs().max() == 0


def test_transformers_auto_model_and_pipeline(
    export_dir: Path, trained_model: torch.nn.Module, batch: torch.Tensor, reference: torch.Tensor
) -> None:
    from transformers import AutoImageProcessor, AutoModel, TimmWrapperModel, pipeline

    model = AutoModel.from_pretrained(str(export_dir))
    assert isinstance(model, TimmWrapperModel)
    assert_same_weights(model, trained_model, prefix="timm_model.")
    with torch.no_grad():
        pooled = model.eval()(pixel_values=batch).pooler_output
    assert (pooled - reference).abs().max() == 0

    image = pil_images(1)[0]
    pixel_values = AutoImageProcessor.from_pretrained(str(export_dir))(image, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixel_values, TRANSFORM(image).unsqueeze(0))  # same preprocessing as timm's transform
    extractor = pipeline("image-feature-extraction", model=str(export_dir), pool=True)
    features = torch.tensor(extractor(image))
    assert features.shape == (1, 32)
    assert (features - embed(trained_model, pixel_values)).abs().max() == 0
