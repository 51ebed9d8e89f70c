"""benchmarks/bench_collage_pooling.py's report: test metrics, paired differences, and the validation split that
chose each run's model (avg has no location weights: its label-tile weight is the uniform 0.25)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_collage_pooling.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_collage_pooling", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(test: tuple[float, float], validation: tuple[float, float], mass: tuple[float, float] | None) -> dict:
    """A metrics.json with the chosen model's R@1 / MAP@R (and label-tile weights, test then validation)."""
    best: dict[str, Any] = {"recall@1": test[0], "map@r": test[1],
                            "validation/recall@1": validation[0], "validation/map@r": validation[1]}
    if mass is not None:
        best.update({"target_mass": mass[0], "validation/target_mass": mass[1]})
    initial = {"recall@1": 0.05, "map@r": 0.01, "target_mass": 0.25}
    raw = {"recall@1": 0.07, "map@r": 0.008}
    return {"best": best, "initial": initial, "baselines": {"raw_pixels": {"test": raw, "validation": raw}}}


def test_report_adds_the_validation_table_after_the_test_tables() -> None:
    bench = _bench()
    results = {
        "gsp": {0: _run((0.20, 0.04), (0.30, 0.06), (0.40, 0.50)), 1: _run((0.10, 0.02), (0.10, 0.02), (0.30, 0.30))},
        "avg": {0: _run((0.10, 0.02), (0.20, 0.04), None), 1: _run((0.10, 0.02), (0.20, 0.04), None)},
    }
    assert bench.metric(results["avg"][0], "target_mass", "validation") == bench.UNIFORM_MASS
    assert bench.metric(results["gsp"][0], "map@r", "validation") == 0.06
    text = bench.report(results, "gsp")
    test_part, validation_part = text.split("Validation split (chose each run's model):")
    assert "| gsp | 2 | 15.000 ± 7.071 | 3.000 ± 1.414 | 0.350 ± 0.071 |" in test_part
    assert "| gsp - avg | 5.000 ± 7.071 | 1.000 ± 1.414 | 0.100 ± 0.071 | 1/2 / 1/2 |" in test_part
    assert "raw-pixel nearest neighbours R@1 7.00, MAP@R 0.80" in test_part
    assert "| gsp | 2 | 20.000 ± 14.142 | 4.000 ± 2.828 | 0.400 ± 0.141 |" in validation_part
    assert "| avg | 2 | 20.000 ± 0.000 | 4.000 ± 0.000 | 0.250 ± 0.000 |" in validation_part
