"""Figures (matplotlib, PNG, written atomically): training curves, retrieval grids and GSP transport-plan maps."""

from gsp_hub.lazy_exports import lazy_exports

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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "gsp_hub.viz.curves": ("plot_training_curves",),
        "gsp_hub.viz.png": ("save_png",),
        "gsp_hub.viz.retrieval": ("leave_one_out_rows",),
        "gsp_hub.viz.retrieval_grid": ("RetrievalRow", "plot_retrieval_grid", "plot_retrieval_rows"),
        "gsp_hub.viz.transport_map": (
            "TransportMaps",
            "check_gsp_model",
            "compute_transport_maps",
            "explain_images",
            "feature_grid",
            "plot_transport_map",
        ),
    },
)
