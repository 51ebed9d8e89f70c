"""Publish and load gsp_hub models in the timm Hugging Face Hub format.

* :func:`save_pretrained` writes config.json + model.safetensors + a model card (README.md) atomically;
* :func:`from_pretrained` loads ``hf-hub:org/name``, ``org/name``, ``local-dir:/path`` or a folder, with checks;
* :func:`push_to_hub` uploads an export (or a model) with ``create_repo`` + ``upload_folder``;
* :func:`update_card` re-renders an export's card (new metrics, dataset, repo id) without touching the weights.

The same folders load with ``timm.create_model('hf-hub:...' | 'local-dir:...', pretrained=True)`` and with
``transformers.AutoModel.from_pretrained`` / ``pipeline('image-feature-extraction')`` after ``import gsp_hub``.
"""

from gsp_hub.hub.card import CITATIONS, DatasetRef, build_model_card
from gsp_hub.hub.export import read_export_metadata, save_pretrained, update_card
from gsp_hub.hub.loading import from_pretrained, load_weights, resolve_export
from gsp_hub.hub.push import push_to_hub

__all__ = [
    "CITATIONS",
    "DatasetRef",
    "build_model_card",
    "from_pretrained",
    "load_weights",
    "push_to_hub",
    "read_export_metadata",
    "resolve_export",
    "save_pretrained",
    "update_card",
]
