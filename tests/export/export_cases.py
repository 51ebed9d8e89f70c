"""Models and real images shared by the ONNX and torch.export tests (fixtures live in each test file)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq
import pytest
import timm
import torch
from torch import nn

import gsp_hub  # noqa: F401  (registers the architectures, the pools and cifar_resnet20)
from gsp_hub.data import create_image_transforms, decode_image
from gsp_hub.export import ExportResult, default_example_inputs
from gsp_hub.models.taps import insert_letkd_layers

SHARED_DATA = Path(os.environ.get("GSP_HUB_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
CIFAR_TEST = SHARED_DATA / "cifar10-jpeg" / "data" / "test-00000-of-00001.parquet"
ATOL = 1e-4

# case -> (builder kwargs, image size). CNN cases: timm's tiny test_resnet at 128 px (a 4x4 map, 16 locations);
# the ViT case: test_vit at 64 px (16 patch tokens); the student: a LeTKD (letKD-2) CIFAR ResNet-20 at 32 px.
POOL_CASES = ("avg", "max", "gem", "gsp", "proto")
CASES: dict[str, int] = {**{pool: 128 for pool in POOL_CASES}, "vit_gsp": 64, "letkd_student": 32}
# An export costs 5-15 s of CPU per model; to keep the default run short these cases run with -m slow only.
SLOW_ONNX_CASES = ("vit_gsp", "letkd_student")
SLOW_TORCH_CASES = ("vit_gsp",)


def case_params(slow: tuple[str, ...] = ()) -> list:
    """pytest params of every case, those in ``slow`` marked ``slow``."""
    return [pytest.param(case, marks=pytest.mark.slow) if case in slow else case for case in sorted(CASES)]


def cifar_images(model: nn.Module, count: int, size: int, offset: int = 0) -> torch.Tensor:
    """``count`` real CIFAR-10 test images (rows offset ...) through the model's timm eval transform at ``size``."""
    if not CIFAR_TEST.is_file():
        pytest.skip(f"shared CIFAR-10 test parquet not found at {CIFAR_TEST}")
    transform = create_image_transforms(model, input_size=size).eval
    batch = next(pq.ParquetFile(CIFAR_TEST).iter_batches(batch_size=offset + count, columns=["image"]))
    values = batch.column("image").to_pylist()[offset:]
    return torch.stack([transform(decode_image(value)) for value in values])


def build_case(case: str) -> nn.Module:
    """The eval-mode model of a test case; GSP (gamma 20) prototypes are k-center initialised on real image tokens."""
    torch.manual_seed(0)
    if case == "letkd_student":
        base = timm.create_model("cifar_resnet20")
        return insert_letkd_layers(base, input_size=(3, 32, 32), pen_codes=64, inter_codes=80).eval()
    pool = "gsp" if case == "vit_gsp" else case
    backbone, backbone_kwargs = ("test_vit", {"img_size": 64}) if case == "vit_gsp" else ("test_resnet", {})
    pool_kwargs = {"gsp": {"num_prototypes": 8, "gamma": 20.0}, "proto": {"num_prototypes": 8}}.get(pool, {})
    model = timm.create_model(
        "metric_net", backbone=backbone, pool=pool, embed_dim=16, backbone_kwargs=backbone_kwargs, **pool_kwargs
    ).eval()
    # GSP: spread the random tokens over the unit ball (norm ~1, as trained), then k-center init on images the tests
    # never query (a token equal to a prototype is an ill-conditioned fp32 distance, eager and exported alike)
    if pool == "gsp":
        with torch.no_grad():
            model.embed.weight.mul_(4.0)
            model.embed.bias.mul_(4.0)
            tokens = model.embed(model.forward_features(cifar_images(model, 4, CASES[case], offset=100)))
            model.pool.init_prototypes_(tokens.flatten(0, 2))
    return model


class ExportedCase(NamedTuple):
    case: str
    model: nn.Module
    path: Path
    result: ExportResult


def case_exporter(export: Callable[..., ExportResult], directory: Path, suffix: str) -> Callable[[str], ExportedCase]:
    """case -> ExportedCase, exporting each case once with ``export`` (export_onnx / export_torch) into
    ``directory``: traced at batch 2 on N(0, 1) images, parity-checked on 3 real images."""
    cache: dict[str, ExportedCase] = {}

    def exported(case: str) -> ExportedCase:
        if case not in cache:
            model = build_case(case)
            size = CASES[case]
            path = directory / f"{case}{suffix}"
            result = export(
                model,
                path,
                example_inputs=default_example_inputs(model, batch_size=2, input_size=size),
                check_inputs=cifar_images(model, 3, size),
            )
            cache[case] = ExportedCase(case, model, path, result)
        return cache[case]

    return exported
