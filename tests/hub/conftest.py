"""Fixtures of the hub tests: a briefly trained GSP metric_net and its export."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from hub_fixtures import BACKBONE, DATASET, IMAGE_SIZE, METRICS, RECIPE, REPO_ID, fashion_images
from pytorch_metric_learning.losses import MultiSimilarityLoss

import gsp_hub  # noqa: F401  (registers the architectures)
from gsp_hub.hub import save_pretrained


@pytest.fixture(scope="session")
def trained_model() -> torch.nn.Module:
    """metric_net (test_resnet backbone, GSP with 8 prototypes, 32-d) after k-center prototype init and 3 AdamW
    steps of multi-similarity loss on real images."""
    torch.manual_seed(0)
    model = timm.create_model("metric_net", backbone=BACKBONE, embed_dim=32, num_prototypes=8)
    images, labels = fashion_images("train", per_class=4, classes=range(4))
    with torch.no_grad():
        model.pool.init_prototypes_(model.embed(model.forward_features(images)).flatten(0, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = MultiSimilarityLoss()
    for _ in range(3):
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def export_dir(trained_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model exported for REPO_ID, with metrics, dataset and recipe. Tests must not modify it."""
    return save_pretrained(
        trained_model,
        tmp_path_factory.mktemp("export") / "gsp-test-resnet-fmnist",
        metrics=METRICS,
        dataset=DATASET,
        card_extra={"recipe": RECIPE, "description": "A test export."},
        repo_id=REPO_ID,
        data_config={"input_size": (3, IMAGE_SIZE, IMAGE_SIZE)},
    )


@pytest.fixture
def export_copy(export_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the export that a test may damage."""
    return Path(shutil.copytree(export_dir, tmp_path / "copy"))


@pytest.fixture
def folder_state() -> Callable[[Path], dict[str, bytes]]:
    """Snapshot of every file under a folder (relative path -> bytes), to prove that nothing was written."""

    def snapshot(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    return snapshot
