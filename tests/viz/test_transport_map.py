"""GSP transport maps of a real (small) timm model on real images: the weights are the model's own pooling weights,
the assignments are the nearest prototypes, the grid matches the feature map, the PNG is what it claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import timm
import torch

import gsp_hub  # noqa: F401  (registers the architectures)
from gsp_hub.data import create_image_transforms, load_fashion_mnist_subset
from gsp_hub.layers import prototype_costs
from gsp_hub.viz import (
    check_gsp_model,
    compute_transport_maps,
    explain_images,
    feature_grid,
    plot_transport_map,
)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("metric_net", backbone="test_resnet", pool="gsp", embed_dim=32, num_prototypes=8,
                             transport_ratio=0.3, gamma=10.0).eval()


@pytest.fixture(scope="module")
def images() -> list[PIL.Image.Image]:
    test = load_fashion_mnist_subset()["test"]
    return [test[row]["image"] for row in (0, 150, 420, 910)]  # ankle boot, trouser, coat, bag


def pixel_values(model: torch.nn.Module, images: list[PIL.Image.Image], size: tuple[int, int]) -> torch.Tensor:
    transform = create_image_transforms(model, input_size=size).eval
    return torch.stack([transform(image.convert("RGB")) for image in images])


def test_weights_are_the_models_pooling_weights_and_assignments_the_nearest_prototypes(
    model: torch.nn.Module, images: list[PIL.Image.Image]
) -> None:
    batch = pixel_values(model, images, (96, 128))  # 3 x 4 map at stride 32
    maps = compute_transport_maps(model, batch)

    assert maps.grid_hw == (3, 4) and maps.num_prototypes == 8
    assert maps.weights.shape == maps.assignments.shape == (4, 12)
    torch.testing.assert_close(maps.weights.sum(dim=1), torch.ones(4))
    with torch.no_grad():
        features = model.forward_features(batch)
        _, aux = model.forward_head(features, pre_logits=True, return_aux=True)
        costs = prototype_costs(model.embed(features.flatten(1, 2)), model.pool.prototypes)  # (B, K, N)
    torch.testing.assert_close(maps.weights, aux.weights)
    assert torch.equal(maps.assignments, costs.argmin(dim=1))  # the plan's argmax = the cheapest prototype
    assert len(maps.assignments.unique()) > 1
    assert not torch.allclose(maps.weights, torch.full_like(maps.weights, 1 / 12))  # gamma 10 selects
    assert model.training is False


def test_feature_grid_follows_the_image_aspect_ratio() -> None:
    assert feature_grid(16, (128, 128)) == (4, 4)
    assert feature_grid(6, (64, 96)) == (2, 3)
    assert feature_grid(6, (96, 64)) == (3, 2)
    assert feature_grid(1, (28, 28)) == (1, 1)
    assert feature_grid(49, (224, 224)) == (7, 7)


def test_plot_writes_a_png_with_heatmap_and_assignments(
    model: torch.nn.Module, images: list[PIL.Image.Image], tmp_path: Path
) -> None:
    maps = compute_transport_maps(model, pixel_values(model, images[:1], (128, 128)))
    view = np.asarray(images[0].convert("RGB").resize((128, 128)))
    path = plot_transport_map(view, maps.weights[0], maps.assignments[0], maps.grid_hw, tmp_path / "maps" / "a.png",
                              title="ankle boot")
    assert path == tmp_path / "maps" / "a.png" and sorted(p.name for p in path.parent.iterdir()) == ["a.png"]
    with PIL.Image.open(path) as png:
        assert png.format == "PNG" and png.size == (1050, 390)  # 10.5 x 3.9 inches at 100 dpi
        pixels = np.asarray(png.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # drawn, not blank


def test_explain_images_preprocesses_with_the_model_config(
    model: torch.nn.Module, images: list[PIL.Image.Image], tmp_path: Path
) -> None:
    paths = explain_images(model, images[:2], [tmp_path / "a.png", tmp_path / "b.png"], input_size=64)
    assert [path.name for path in paths] == ["a.png", "b.png"]
    for path in paths:
        with PIL.Image.open(path) as png:
            assert png.size == (1050, 390)


def test_refusals(model: torch.nn.Module, images: list[PIL.Image.Image], tmp_path: Path) -> None:
    average = timm.create_model("metric_net", backbone="test_resnet", pool="avg", embed_dim=8)
    with pytest.raises(ValueError, match="pools with 'avg'"):
        check_gsp_model(average)
    with pytest.raises(ValueError, match="MetricNet with pool='gsp', got a ResNet"):
        compute_transport_maps(timm.create_model("test_resnet"), torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="must end in .png"):
        plot_transport_map(np.zeros((8, 8, 3)), torch.ones(4) / 4, torch.zeros(4), (2, 2), tmp_path / "a.jpg")
    with pytest.raises(ValueError, match=r"weights has 4 values, but grid_hw=\(3, 3\)"):
        plot_transport_map(np.zeros((8, 8, 3)), torch.ones(4) / 4, torch.zeros(4), (3, 3), tmp_path / "a.png")
    with pytest.raises(ValueError, match="same length"):
        explain_images(model, images[:2], [tmp_path / "a.png"])
    assert not list(tmp_path.iterdir())
