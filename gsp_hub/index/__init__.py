"""Retrieval index of a gallery: embed images with a model, search them with faiss, keep the metadata.

* :class:`GalleryIndex` — build from a model + a folder or ``datasets.Dataset``, ``append``, ``search`` /
  ``search_images``, atomic ``save`` / checked ``load``; refuses embeddings of another model.
* :class:`IndexSettings` — exact ``flat`` inner product (default) or approximate ``hnsw`` / ``ivf`` (recall vs exact
  is measured at build time and stored).
* :func:`model_fingerprint` — what identifies the embedding model (models load with :func:`gsp_hub.load_model`).
"""

from gsp_hub.lazy_exports import lazy_exports

__all__ = [
    "INDEX_KINDS",
    "GalleryIndex",
    "GalleryItem",
    "IndexSettings",
    "Neighbour",
    "gallery_items",
    "model_fingerprint",
    "recall_vs_exact",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "gsp_hub.index.embedding": ("GalleryItem", "gallery_items", "model_fingerprint"),
        "gsp_hub.index.gallery": ("GalleryIndex", "Neighbour"),
        "gsp_hub.index.structures": ("INDEX_KINDS", "IndexSettings", "recall_vs_exact"),
    },
)
