"""Figures (matplotlib, PNG): training curves and retrieval grids."""

from gsp_hub.viz.curves import plot_training_curves
from gsp_hub.viz.retrieval_grid import plot_retrieval_grid

__all__ = ["plot_retrieval_grid", "plot_training_curves"]
