"""format_metrics table and the local `evaluate` module adapter."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest

from gsp_hub.metrics import evaluate_module_path, format_metrics, retrieval_metrics


def test_format_metrics_aligns_percentages() -> None:
    table = format_metrics({"recall@1": 0.5, "r_precision": 0.123456, "map@r": 1.0}, title="test classes")
    lines = table.splitlines()
    assert lines[0] == "test classes"
    assert lines[3].split() == ["Recall@1", "50.00"] and lines[4].split() == ["R-Precision", "12.35"]
    assert lines[5].split() == ["MAP@R", "100.00"]
    assert len({len(line) for line in lines[1:]}) == 1  # every row has the same width
    with pytest.raises(ValueError, match="empty"):
        format_metrics({})


def test_evaluate_load_local_module_equals_retrieval_metrics() -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 6
    embeddings = (np.eye(6)[labels] + 0.8 * rng.normal(size=(60, 6))).astype(np.float32)
    metric = evaluate.load(evaluate_module_path())
    via_evaluate = metric.compute(predictions=embeddings, references=labels, ks=(1, 4))
    assert via_evaluate == retrieval_metrics(embeddings, labels, ks=(1, 4))
