"""ONNX export: onnxruntime parity per pooling kind / backbone / student on real images, the exported GSP solve vs
its float64 solution, dynamic batch axis and metadata, clear errors, and no half-written files."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_cases import ATOL, CASES, SLOW_ONNX_CASES, ExportedCase, case_exporter, case_params, cifar_images
from torch import nn

from gsp_hub.export import ExportError, export_onnx, load_onnx_session
from gsp_hub.export.parity import publish_checked


@pytest.fixture(scope="module")
def export_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ExportedCase]:
    return case_exporter(export_onnx, tmp_path_factory.mktemp("onnx"), ".onnx")


@pytest.fixture(params=case_params(slow=SLOW_ONNX_CASES))
def exported(request: pytest.FixtureRequest, export_of: Callable[[str], ExportedCase]) -> ExportedCase:
    return export_of(request.param)


def test_onnxruntime_matches_eager_on_new_real_images(exported: ExportedCase) -> None:
    case, model, path, result = exported
    assert result.path == path.absolute() and result.format == "onnx"
    assert result.max_abs_diff <= ATOL and result.checked_batch_sizes == (3, 1)
    images = cifar_images(model, 5, CASES[case], offset=3)  # a batch size seen neither in tracing nor in the check
    session = load_onnx_session(path)
    (actual,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model(images).numpy()
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= ATOL


def test_batch_axis_is_symbolic_and_preprocessing_is_stored(exported: ExportedCase) -> None:
    case, model, path, _ = exported
    proto = onnx.load(str(path), load_external_data=False)
    (images,) = proto.graph.input
    (output,) = proto.graph.output
    assert images.name == "images"
    assert output.name == ("logits" if getattr(model, "num_classes", 0) else "embeddings")
    assert images.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert output.type.tensor_type.shape.dim[0].dim_param == "batch"
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert json.loads(metadata["data_config"])["input_size"] == [3, CASES[case], CASES[case]]


def test_exported_gsp_solve_equals_the_float64_solution(export_of: Callable[[str], ExportedCase]) -> None:
    """The ONNX graph runs the same fixed 16 safeguarded Newton steps as eager mode and lands on the float64 root:
    its embeddings match the float64 eager model (a converged solve) to float32 precision."""
    case, model, path, _ = export_of("gsp")
    images = cifar_images(model, 6, CASES[case], offset=8)
    (actual,) = load_onnx_session(path).run(None, {"images": images.numpy()})
    reference = copy.deepcopy(model).double()
    with torch.no_grad():
        exact = reference(images.double())
        tokens = reference.embed(reference.forward_features(images.double())).flatten(1, 2)
        weights = reference.pool.transport(tokens).weights
    assert np.abs(actual - exact.numpy()).max() <= 1e-5
    uniform = 1.0 / weights.shape[1]
    assert weights.max() > 1.4 * uniform and weights.min() < 0.6 * uniform  # selective, not average pooling


class Spectrum(nn.Module):
    """Eigenvalues of the channel Gram matrix: traceable, but ONNX has no eigendecomposition."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(2)
        return torch.linalg.eigvalsh(flat @ flat.transpose(1, 2))


def test_untranslatable_operator_names_the_module(tmp_path: Path) -> None:
    model = nn.Sequential()
    model.add_module("spectrum", Spectrum())
    with pytest.raises(ExportError, match=r"ONNX cannot express module 'spectrum' \(Spectrum\)") as error:
        export_onnx(model, tmp_path / "model.onnx", example_inputs=torch.randn(2, 3, 8, 8))
    assert "eigh" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten())
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")
    images = torch.randn(3, 3, 4, 4)

    def write(file: Path) -> None:
        file.write_bytes(b"new export, half checked")

    def load(file: Path):
        return lambda batch: model(batch) + 1e-3  # an export that is off by 1e-3

    with pytest.raises(ExportError, match=r"differs from eager PyTorch by up to 0.001"):
        publish_checked(model, target, format_name="onnx", suffix=".onnx", write=write, load=load, check_inputs=images)
    assert target.read_bytes() == b"previous export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx"]
    result = publish_checked(
        model, target, format_name="onnx", suffix=".onnx", write=write, load=lambda file: model, check_inputs=images
    )
    assert result.max_abs_diff == 0.0 and target.read_bytes() == b"new export, half checked"


def test_loading_a_missing_or_invalid_file_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="write one with gsp_hub.export.export_onnx"):
        load_onnx_session(tmp_path / "missing.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07 not a protobuf model")
    with pytest.raises(ValueError, match="is not a valid ONNX model"):
        load_onnx_session(tmp_path / "broken.onnx")
