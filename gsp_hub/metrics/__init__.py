"""Retrieval evaluation: Recall@K, R-Precision, MAP@R, NMI (equal to PML's AccuracyCalculator), chunked k-NN,
a printable report, and a local `evaluate` module. Depends on torch and numpy (faiss only for NMI)."""

from pathlib import Path

from .report import format_metrics
from .retrieval import DISTANCES, METRICS, nearest_neighbors, normalized_mutual_info, retrieval_metrics

__all__ = [
    "DISTANCES",
    "METRICS",
    "evaluate_module_path",
    "format_metrics",
    "nearest_neighbors",
    "normalized_mutual_info",
    "retrieval_metrics",
]


def evaluate_module_path() -> str:
    """Directory of the local `evaluate` module: ``evaluate.load(evaluate_module_path())`` works offline."""
    return str(Path(__file__).with_name("retrieval_metrics"))
