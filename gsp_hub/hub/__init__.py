"""Publish and load gsp_hub models in the timm Hugging Face Hub format.

* :func:`save_pretrained` writes config.json + model.safetensors + a model card (README.md) atomically;
* :func:`from_pretrained` loads ``hf-hub:org/name``, ``org/name``, ``local-dir:/path`` or a folder, with checks;
* :func:`push_to_hub` uploads an export (or a model) with ``create_repo`` + ``upload_folder``;
* :func:`update_card` re-renders an export's card (new metrics, dataset, repo id) without touching the weights.

The same folders load with ``timm.create_model('hf-hub:...' | 'local-dir:...', pretrained=True)`` and with
``transformers.AutoModel.from_pretrained`` / ``pipeline('image-feature-extraction')`` after ``import gsp_hub``.
"""

from gsp_hub.lazy_exports import lazy_exports

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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "gsp_hub.hub.card": ("CITATIONS", "DatasetRef", "build_model_card"),
        "gsp_hub.hub.export": ("read_export_metadata", "save_pretrained", "update_card"),
        "gsp_hub.hub.loading": ("from_pretrained", "load_weights", "resolve_export"),
        "gsp_hub.hub.push": ("push_to_hub",),
    },
)
