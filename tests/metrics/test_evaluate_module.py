"""The local `evaluate` module: loads offline from the installed package and returns retrieval_metrics' numbers."""

from __future__ import annotations

from pathlib import Path

import evaluate
import numpy as np
import pytest

from gsp_hub.metrics import evaluate_module_path, retrieval_metrics


@pytest.fixture(scope="module")
def metric() -> evaluate.EvaluationModule:
    return evaluate.load(evaluate_module_path(), keep_in_memory=True)  # HF_HUB_OFFLINE=1 (tests/conftest.py)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(90) % 9
    embeddings = (np.eye(9)[labels] + 0.3 * rng.normal(size=(90, 9))).astype(np.float32)
    return embeddings, labels


def test_module_layout_is_what_evaluate_load_expects() -> None:
    folder = Path(evaluate_module_path())
    assert folder.is_dir() and (folder / f"{folder.name}.py").is_file()  # dir/<dir name>.py


def test_leave_one_out_equals_retrieval_metrics(metric, data) -> None:
    embeddings, labels = data
    expected = retrieval_metrics(embeddings, labels, ks=(1, 4), metrics=("recall", "map_at_r", "nmi"))
    assert 0.2 < expected["map@r"] < 0.9
    assert metric.compute(predictions=embeddings, references=labels, ks=(1, 4),
                          metrics=("recall", "map_at_r", "nmi")) == expected


def test_query_gallery_and_batches_equal_retrieval_metrics(metric, data) -> None:
    embeddings, labels = data
    expected = retrieval_metrics(embeddings[30:], labels[30:], query_embeddings=embeddings[:30],
                                 query_labels=labels[:30], distance="euclidean")
    for start in range(30, 90, 20):  # streamed gallery, as an evaluation loop would add it
        metric.add_batch(predictions=embeddings[start:start + 20], references=labels[start:start + 20])
    result = metric.compute(query_embeddings=embeddings[:30], query_labels=labels[:30], distance="euclidean")
    assert result == expected


def test_errors_of_retrieval_metrics_come_through(metric, data) -> None:
    embeddings, labels = data
    with pytest.raises(ValueError, match="ks contains 90"):
        metric.compute(predictions=embeddings, references=labels, ks=(90,))
