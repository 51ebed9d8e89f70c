"""Leave-one-out retrieval examples of a model on a labelled image set, ready for :func:`plot_retrieval_rows`.

The evaluation protocol of ``gsp-hub eval`` shown as pictures: every image of the set is embedded (L2-normalised,
as :mod:`gsp_hub.index` does), a few seeded random images are the queries, and each query's neighbours are the
nearest *other* images of the same set (cosine). A neighbour with the query's label is a hit::

    rows = leave_one_out_rows(model, splits.test, num_queries=8, k=5)
    plot_retrieval_rows(rows, "retrieval.png")
"""

from __future__ import annotations

import os

import numpy as np
from datasets import Dataset
from torch import nn

from gsp_hub.checks import check_int
from gsp_hub.index import GalleryIndex, gallery_items
from gsp_hub.index.embedding import embed_items, model_data_config
from gsp_hub.viz.retrieval_grid import RetrievalRow

__all__ = ["leave_one_out_rows"]


def leave_one_out_rows(
    model: nn.Module,
    images: str | os.PathLike[str] | Dataset,
    *,
    num_queries: int = 8,
    k: int = 5,
    seed: int = 0,
    input_size: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> list[RetrievalRow]:
    """Embed all ``images`` with ``model`` and return ``num_queries`` seeded random queries with their top ``k``
    neighbours among the other images (best first, cosine scores, labels for hit / miss marking).

    Args:
        model: embedding model (``forward_head(forward_features(x), pre_logits=True)``, eval mode).
        images: a folder (``root/<class>/<image>`` gives labels) or a ``datasets.Dataset`` (``image``, ``label``).
        num_queries: number of query rows, at most the number of images.
        k: neighbours per query, at most the number of images - 1.
        seed: seed of the query choice (queries are listed in image order).
        input_size: image side in pixels (default: the model's preprocessing).
        batch_size: images per forward pass. progress: show a progress bar while embedding.
    """
    check_int("num_queries", num_queries, minimum=1)
    check_int("k", k, minimum=1)
    items = gallery_items(images)
    if num_queries > len(items) or k > len(items) - 1:
        raise ValueError(f"the image set has {len(items)} images: num_queries (got {num_queries}) can be at most "
                         f"{len(items)} and k (got {k}) at most {len(items) - 1}; ask for fewer.")
    embeddings = embed_items(model, items, model_data_config(model, input_size), batch_size=batch_size,
                             progress=progress)
    index = GalleryIndex.from_embeddings(embeddings, items)
    queries = np.sort(np.random.default_rng(seed).choice(len(items), size=num_queries, replace=False))
    rows = []
    for query, found in zip(queries, index.neighbours(embeddings[queries], k + 1), strict=True):
        others = [neighbour for neighbour in found if neighbour.id != query][:k]  # leave the query itself out
        rows.append(RetrievalRow(
            query=items[query].image(),
            neighbours=[items[neighbour.id].image() for neighbour in others],
            scores=[neighbour.score for neighbour in others],
            labels=[neighbour.label for neighbour in others],
            query_label=items[query].label,
        ))
    return rows
