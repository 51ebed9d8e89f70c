"""format_metrics: the exact table, both value styles, and clear errors."""

from __future__ import annotations

import pytest
import torch

from gsp_hub.metrics import format_metrics


def test_table_layout_in_percent() -> None:
    table = format_metrics(
        {"recall@1": 0.78344, "recall@10": 0.9, "r_precision": 0.123456, "map@r": 1.0, "nmi": 0.5}, title="SOP test"
    )
    assert table.splitlines() == [
        "SOP test",
        "metric       value (%)",
        "-----------  ---------",
        "Recall@1         78.34",
        "Recall@10        90.00",
        "R-Precision      12.35",
        "MAP@R           100.00",
        "NMI              50.00",
    ]


def test_raw_fractions_and_unknown_keys() -> None:
    lines = format_metrics({"map@r": 0.43703, "val/recall@1": 0.5}, percent=False).splitlines()
    assert lines[0].split() == ["metric", "value"]
    assert lines[2].split() == ["MAP@R", "0.4370"] and lines[3].split() == ["val/recall@1", "0.5000"]
    assert len({len(line) for line in lines}) == 1  # aligned columns


@pytest.mark.parametrize(
    "metrics, error, message",
    [
        ({}, ValueError, "metrics is empty"),
        ([("recall@1", 0.5)], TypeError, "mapping"),
        ({"recall@1": torch.tensor(0.5)}, TypeError, r"\.item\(\)"),
        ({1: 0.5}, TypeError, "str names"),
    ],
)
def test_bad_input(metrics, error, message) -> None:
    with pytest.raises(error, match=message):
        format_metrics(metrics)
