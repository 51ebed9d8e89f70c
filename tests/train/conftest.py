"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_fixtures import write_tiny_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 real Fashion-MNIST images (16 per class) as a parquet file: 80 train / 80 test images zero-shot."""
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "fmnist160.parquet")
