"""Publish and load gsp_hub models in the timm Hugging Face Hub format.

* :func:`save_pretrained` writes config.json + model.safetensors + a model card (README.md) atomically;
* :func:`load_model` (also named :func:`from_pretrained`) loads a run or export folder, ``local-dir:/path``,
  ``hf-hub:org/name``, ``org/name``, a zoo tag, or a timm name with ``weights=file.safetensors``, with checks;
  :func:`locate_model` resolves and checks such a spec without building the model;
* :func:`push_to_hub` uploads an export (or a model) with ``create_repo`` + ``upload_folder``;
* :func:`update_card` re-renders an export's card (new metrics, dataset, repo id) without touching the weights.

The same folders load with ``timm.create_model('hf-hub:...' | 'local-dir:...', pretrained=True)`` and with
``transformers.AutoModel.from_pretrained`` / ``pipeline('image-feature-extraction')`` after ``import gsp_hub``.
"""

from gsp_hub.lazy_exports import lazy_exports

__all__ = [
    "CITATIONS",
    "DatasetRef",
    "ModelSource",
    "build_model_card",
    "from_pretrained",
    "load_model",
    "load_weights",
    "locate_model",
    "push_to_hub",
    "read_export_metadata",
    "save_pretrained",
    "update_card",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "gsp_hub.hub.card": ("CITATIONS", "DatasetRef", "build_model_card"),
        "gsp_hub.hub.saving": ("read_export_metadata", "save_pretrained", "update_card"),
        "gsp_hub.hub.loading": ("ModelSource", "from_pretrained", "load_model", "load_weights", "locate_model"),
        "gsp_hub.hub.push": ("push_to_hub",),
    },
)
