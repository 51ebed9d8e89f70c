"""Deployment exports of gsp_hub models: ONNX (onnxruntime) and ``torch.export`` archives, parity-checked.

* :func:`export_onnx` — one self-contained ``.onnx`` file, input ``images`` (batch, C, H, W), dynamic batch axis,
  preprocessing in its metadata; checked with onnxruntime before it is written.
* :func:`export_torch` — a ``.pt2`` archive (``torch.export.save``), reloaded and checked before it is written;
  :func:`load_torch_export` loads one without unpickling.
* :func:`export_program` — the shared ``torch.export`` step; :class:`ExportError` names the module that cannot
  export. Every export returns an :class:`ExportResult` with the measured max |exported - eager|.
"""

from gsp_hub.lazy_exports import lazy_exports

__all__ = [
    "DEFAULT_ATOL",
    "ExportError",
    "ExportResult",
    "default_example_inputs",
    "export_onnx",
    "export_program",
    "export_torch",
    "load_onnx_session",
    "load_torch_export",
    "max_abs_difference",
    "onnx_runner",
    "read_torch_export_metadata",
    "torch_export_runner",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "gsp_hub.export.onnx": ("export_onnx", "load_onnx_session", "onnx_runner"),
        "gsp_hub.export.parity": ("DEFAULT_ATOL", "ExportResult", "max_abs_difference"),
        "gsp_hub.export.program": ("ExportError", "default_example_inputs", "export_program"),
        "gsp_hub.export.torch_export": (
            "export_torch",
            "load_torch_export",
            "read_torch_export_metadata",
            "torch_export_runner",
        ),
    },
)
