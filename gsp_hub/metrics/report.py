"""A printable, aligned table of retrieval metrics (used by `gsp-hub train` and `gsp-hub eval`)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

__all__ = ["format_metrics"]

_DISPLAY_NAMES = {"map@r": "MAP@R", "r_precision": "R-Precision", "nmi": "NMI"}


def format_metrics(metrics: Mapping[str, float], title: str | None = None, *, percent: bool = True) -> str:
    """Aligned two-column table, one metric per line in the mapping's order, under an optional ``title`` line.

    ``metrics`` holds fractions in [0, 1] as returned by :func:`gsp_hub.metrics.retrieval_metrics`; they are
    printed as percentages with 2 decimals (header ``value (%)``), or with ``percent=False`` as raw fractions
    with 4 decimals (header ``value``). Keys are shown by their usual names: ``recall@1`` -> ``Recall@1``,
    ``r_precision`` -> ``R-Precision``, ``map@r`` -> ``MAP@R``, ``nmi`` -> ``NMI``; other keys as they are.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name -> fraction, got {type(metrics).__name__}.")
    if not metrics:
        raise ValueError("metrics is empty; pass the dict returned by retrieval_metrics(...).")
    for key, value in metrics.items():
        if not isinstance(key, str) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"metrics must map str names to real numbers, got {key!r}: {value!r} ({type(value).__name__}); "
                "convert tensors with .item()."
            )
    names = [_display_name(key) for key in metrics]
    values = [f"{100 * float(value):.2f}" if percent else f"{float(value):.4f}" for value in metrics.values()]
    header = "value (%)" if percent else "value"
    name_width = max(len(name) for name in [*names, "metric"])
    value_width = max(len(value) for value in [*values, header])
    lines = [title] if title else []
    lines.append(f"{'metric':<{name_width}}  {header:>{value_width}}")
    lines.append(f"{'-' * name_width}  {'-' * value_width}")
    lines.extend(f"{name:<{name_width}}  {value:>{value_width}}" for name, value in zip(names, values))
    return "\n".join(lines)


def _display_name(key: str) -> str:
    if key.startswith("recall@"):
        return "Recall@" + key.split("@", 1)[1]
    return _DISPLAY_NAMES.get(key, key)
