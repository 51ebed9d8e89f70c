"""Hugging Face `evaluate` module for gsp_hub's retrieval metrics (a thin adapter; the work is done by
``gsp_hub.metrics.retrieval.retrieval_metrics``).

    import evaluate
    from gsp_hub.metrics import evaluate_module_path
    metric = evaluate.load(evaluate_module_path())          # local module: no network
    metric.compute(predictions=embeddings, references=labels)
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np

from gsp_hub.metrics.retrieval import retrieval_metrics

_CITATION = """\
@inproceedings{musgrave2020metric,
  title={A Metric Learning Reality Check},
  author={Musgrave, Kevin and Belongie, Serge and Lim, Ser-Nam},
  booktitle={European Conference on Computer Vision},
  year={2020}
}
"""

_DESCRIPTION = """\
Retrieval metrics of deep metric learning: Recall@K, R-Precision and MAP@R (the MLRC definitions, equal to
pytorch-metric-learning's AccuracyCalculator with k='max_bin_count') and optionally NMI, computed with an exact
blocked k-nearest-neighbour search that never builds the N x N score matrix.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: embeddings, one row of D floats per item (N, D); the gallery.
    references: integer class label per item (N,).
    query_embeddings: optional query embeddings (Q, D); without them every item queries all the others
        (leave-one-out protocol, e.g. CUB, Cars, SOP), with them the queries search the gallery (In-shop).
    query_labels: integer class label per query (Q,), required with query_embeddings.
    ks: the K of Recall@K, default (1, 2, 4, 8).
    metrics: any of 'recall', 'r_precision', 'map_at_r', 'nmi'; default the first three.
    distance: 'cosine' (default) or 'euclidean'.
    chunk_size: side of the score blocks computed at once (default: the largest within 64 MiB).
Returns:
    dict with 'recall@k' for each k, 'r_precision', 'map@r' (and 'nmi'), fractions in [0, 1].
Example:
    >>> metric = evaluate.load(gsp_hub.metrics.evaluate_module_path())
    >>> metric.compute(predictions=[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], references=[0, 0, 1, 1],
    ...                ks=(1,))
    {'recall@1': 1.0, 'r_precision': 1.0, 'map@r': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalMetrics(evaluate.Metric):
    """Recall@K, R-Precision, MAP@R and NMI of embeddings (predictions) against class labels (references)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.List(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://arxiv.org/abs/2003.08505"],
        )

    def _compute(
        self,
        predictions: Sequence[Sequence[float]],
        references: Sequence[int],
        query_embeddings: Sequence[Sequence[float]] | None = None,
        query_labels: Sequence[int] | None = None,
        ks: Sequence[int] = (1, 2, 4, 8),
        metrics: Sequence[str] = ("recall", "r_precision", "map_at_r"),
        distance: str = "cosine",
        chunk_size: int | None = None,
    ) -> dict[str, float]:
        return retrieval_metrics(
            np.asarray(predictions, dtype=np.float32),
            np.asarray(references, dtype=np.int64),
            query_embeddings=None if query_embeddings is None else np.asarray(query_embeddings, dtype=np.float32),
            query_labels=None if query_labels is None else np.asarray(query_labels, dtype=np.int64),
            ks=tuple(ks),
            metrics=tuple(metrics),
            distance=distance,
            chunk_size=chunk_size,
        )
