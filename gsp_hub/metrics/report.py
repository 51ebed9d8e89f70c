"""A printable, aligned table of retrieval metrics (used by `gsp-hub train` and `gsp-hub eval`)."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["format_metrics"]

_DISPLAY_NAMES = {"map@r": "MAP@R", "r_precision": "R-Precision", "nmi": "NMI"}


def _display_name(key: str) -> str:
    if key.startswith("recall@"):
        return "Recall@" + key.split("@", 1)[1]
    return _DISPLAY_NAMES.get(key, key)


def format_metrics(metrics: Mapping[str, float], title: str | None = None) -> str:
    """Aligned two-column table: metric names on the left, values as percentages with 2 decimals on the right.

    Values are the fractions in [0, 1] returned by :func:`gsp_hub.metrics.retrieval_metrics`, printed as percent.
    """
    if not metrics:
        raise ValueError("metrics is empty; pass the dict returned by retrieval_metrics(...).")
    names = [_display_name(key) for key in metrics]
    width = max(len(name) for name in names + ["metric"])
    lines = [title] if title else []
    lines.append(f"{'metric':<{width}}  {'value (%)':>9}")
    lines.append(f"{'-' * width}  {'-' * 9}")
    lines.extend(f"{name:<{width}}  {100.0 * float(value):>9.2f}" for name, value in zip(names, metrics.values()))
    return "\n".join(lines)
