"""gsp_hub retrieval metrics as a local `evaluate` module: ``evaluate.load(gsp_hub.metrics.evaluate_module_path())``.

A thin adapter: ``predictions`` are embeddings (one float vector per item), ``references`` their integer labels;
every keyword argument of ``compute`` goes to :func:`gsp_hub.metrics.retrieval_metrics` (ks, metrics, distance,
chunk_size, query_embeddings, query_labels).
"""

import datasets
import evaluate
import numpy as np

from gsp_hub.metrics import retrieval_metrics

_DESCRIPTION = "Deep-metric-learning retrieval metrics: Recall@K, R-Precision, MAP@R (MLRC definitions), NMI."
_KWARGS_DESCRIPTION = """
Args:
    predictions: embeddings, a list of N float vectors of equal length D.
    references: N integer class labels.
    **kwargs: forwarded to gsp_hub.metrics.retrieval_metrics (ks, metrics, distance, chunk_size,
        query_embeddings, query_labels).
Returns:
    dict with recall@k, r_precision, map@r (and nmi when asked), fractions in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalMetrics(evaluate.Metric):
    """Recall@K / R-Precision / MAP@R of embeddings, computed by gsp_hub.metrics.retrieval_metrics."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, **kwargs) -> dict:
        return retrieval_metrics(
            np.asarray(predictions, dtype=np.float32), np.asarray(references, dtype=np.int64), **kwargs
        )
