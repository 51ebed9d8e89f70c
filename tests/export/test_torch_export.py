"""torch.export archives: parity per pooling kind / backbone / student on real images, safe loading, clear errors."""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import PIL.Image
import pytest
import torch
from export_cases import (
    ATOL,
    CASES,
    SLOW_TORCH_CASES,
    ExportedCase,
    build_case,
    case_exporter,
    case_params,
    cifar_images,
)
from torch import nn

from gsp_hub.export import (
    ExportError,
    default_example_inputs,
    export_torch,
    load_torch_export,
    read_torch_export_metadata,
)
from gsp_hub.export.commands import FORMAT_WRITERS, add_export_arguments


@pytest.fixture(scope="module")
def export_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ExportedCase]:
    return case_exporter(export_torch, tmp_path_factory.mktemp("pt2"), ".pt2")


@pytest.fixture(params=case_params(slow=SLOW_TORCH_CASES))
def exported(request: pytest.FixtureRequest, export_of: Callable[[str], ExportedCase]) -> ExportedCase:
    return export_of(request.param)


def test_archive_reproduces_eager_on_real_images(exported: ExportedCase) -> None:
    """The built-in check reloaded the written archive and ran it on 3 real images and on 1 (dynamic batch)."""
    case, model, path, result = exported
    assert result.path == path.absolute() and path.is_file() and result.format == "torch-export"
    assert result.max_abs_diff <= ATOL and result.checked_batch_sizes == (3, 1)


def test_reloaded_gsp_archive_matches_eager_on_a_new_batch_size(export_of: Callable[[str], ExportedCase]) -> None:
    """Independently of the built-in check: reload the GSP archive, run 5 other real images (batch 5 was seen
    neither in tracing nor in the check)."""
    case, model, path, _ = export_of("gsp")
    images = cifar_images(model, 5, CASES[case], offset=3)
    program = load_torch_export(path)
    with torch.no_grad():
        expected = model(images)
        actual = program.module()(images)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= ATOL


def test_archive_carries_the_preprocessing(exported: ExportedCase) -> None:
    case, model, path, _ = exported
    metadata = read_torch_export_metadata(path)
    assert json.loads(metadata["data_config"])["input_size"] == [3, CASES[case], CASES[case]]
    expected_architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    assert metadata["architecture"] == expected_architecture


class DataDependentPool(nn.Module):
    """A pool with Python control flow on a tensor value: not exportable."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.mean() > 0:
            return tokens.mean(dim=1)
        return tokens.amax(dim=1)


def test_unexportable_module_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    model = build_case("avg")
    model.pool = DataDependentPool()
    path = tmp_path / "model.pt2"
    with pytest.raises(ExportError, match=r"module 'pool' \(DataDependentPool\)") as error:
        export_torch(model, path, example_inputs=default_example_inputs(model, input_size=64))
    assert "if tokens.mean() > 0" in str(error.value)  # the offending source line is quoted
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_fail_before_tracing(tmp_path: Path) -> None:
    model = build_case("avg")
    with pytest.raises(ValueError, match=r"path must end in \.pt2"):
        export_torch(model, tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="example_inputs must be a floating-point image batch"):
        export_torch(model, tmp_path / "model.pt2", example_inputs=torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="only the batch axis is dynamic"):
        export_torch(
            model,
            tmp_path / "model.pt2",
            example_inputs=torch.randn(2, 3, 64, 64),
            check_inputs=torch.randn(2, 3, 32, 32),
        )
    assert list(tmp_path.iterdir()) == []


def test_loader_refuses_archives_that_need_unpickling(export_of: Callable[[str], ExportedCase], tmp_path: Path) -> None:
    """A member that does not load with weights_only=True (here: a pickled function) is rejected before loading."""
    _, _, path, _ = export_of("avg")
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for member in source.infolist():
            payload = source.read(member)
            if member.filename.endswith(".pt"):
                buffer = io.BytesIO()
                torch.save({"inputs": print}, buffer)  # a global reference: weights_only refuses it
                payload = buffer.getvalue()
            target.writestr(member, payload)
    with pytest.raises(ValueError, match="does not load with weights_only=True"):
        load_torch_export(tampered)
    (tmp_path / "garbage.pt2").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip file"):
        load_torch_export(tmp_path / "garbage.pt2")
    with pytest.raises(FileNotFoundError):
        load_torch_export(tmp_path / "missing.pt2")


def test_export_command_format_writes_a_checked_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The `gsp-hub export --format torch-export` writer: OUTPUT folder -> OUTPUT/model.pt2, parity on a folder."""
    model = build_case("max")
    images = tmp_path / "images"
    images.mkdir()
    for index, image in enumerate(cifar_images(model, 3, 64)):
        PIL.Image.fromarray(((image.permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1) * 255).byte().numpy()).save(
            images / f"{index}.png"
        )
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    args = parser.parse_args(["--parity-images", str(images), "--parity-count", "2"])
    args.output, args.input_size = tmp_path / "deploy", 64
    written = FORMAT_WRITERS["torch-export"](model, args)
    assert written == (tmp_path / "deploy" / "model.pt2").absolute() and written.is_file()
    assert "max |exported - eager| = " in capsys.readouterr().out
    assert json.loads(read_torch_export_metadata(written)["data_config"])["input_size"] == [3, 64, 64]
