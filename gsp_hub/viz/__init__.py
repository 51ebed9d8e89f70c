"""Figures (matplotlib, PNG, written atomically): training curves, retrieval grids and GSP transport-plan maps."""

from gsp_hub.viz.curves import plot_training_curves
from gsp_hub.viz.png import save_png
from gsp_hub.viz.retrieval import leave_one_out_rows
from gsp_hub.viz.retrieval_grid import RetrievalRow, plot_retrieval_grid, plot_retrieval_rows
from gsp_hub.viz.transport_map import (
    TransportMaps,
    check_gsp_model,
    compute_transport_maps,
    explain_images,
    feature_grid,
    plot_transport_map,
)

__all__ = [
    "RetrievalRow",
    "TransportMaps",
    "check_gsp_model",
    "compute_transport_maps",
    "explain_images",
    "feature_grid",
    "leave_one_out_rows",
    "plot_retrieval_grid",
    "plot_retrieval_rows",
    "plot_training_curves",
    "plot_transport_map",
    "save_png",
]
