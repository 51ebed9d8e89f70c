"""gsp_hub.load_model, the one resolver: a run folder, an export folder, local-dir:, hf-hub: / org/name (a hand-built
offline cache), a zoo tag (the Hub cache, else the repository's zoo/ copy) and a timm name + weights each give the
trained model bit for bit; bad specs fail before any model is built; a zoo tag works in eval, export, index and
explain."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from hub_fixtures import BACKBONE, REPO_ID, build_hf_cache, fashion_images

import gsp_hub
from gsp_hub.cli import main
from gsp_hub.data import load_fashion_mnist_subset
from gsp_hub.hub import load_model, locate_model, read_export_metadata
from gsp_hub.models import zoo

SPEC_KINDS = ["run-folder", "export-folder", "local-dir", "hf-hub", "hub-id", "timm-name-and-weights"]
ZOO_TAG = "gsp_tf_efficientnet_lite0.tin200"  # the CLI tests' zoo model: a GSP model, as `explain heatmap` needs
SMALL_ZOO_TAG = "letkd_cifar_resnet20.cifar10"  # 0.4 M parameters: the resolution tests
SHARED_RESNET20 = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-resnets" / "resnet20.safetensors"


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, read with HF_HUB_OFFLINE=1."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def outputs(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


@pytest.mark.parametrize("kind", SPEC_KINDS)
def test_every_spec_kind_gives_the_trained_model(
    kind: str, export_dir: Path, trained_model: torch.nn.Module, offline_cache: Path, tmp_path: Path
) -> None:
    kwargs = {}
    if kind == "run-folder":  # `gsp-hub train` / `distill` layout: the export in model/, beside the run's files
        shutil.copytree(export_dir, tmp_path / "run" / "model")
        (tmp_path / "run" / "metrics.json").write_text("{}")
        spec = str(tmp_path / "run")
    elif kind == "export-folder":
        spec = str(export_dir)
    elif kind == "local-dir":
        spec = f"local-dir:{export_dir}"
    elif kind in ("hf-hub", "hub-id"):
        build_hf_cache(export_dir, offline_cache)
        spec = f"hf-hub:{REPO_ID}" if kind == "hf-hub" else REPO_ID
    else:
        safetensors.torch.save_file(trained_model.state_dict(), tmp_path / "weights.safetensors")
        spec, kwargs = "metric_net", dict(weights=tmp_path / "weights.safetensors", backbone=BACKBONE, embed_dim=32,
                                          num_prototypes=8)
    images = fashion_images("test", per_class=2, classes=range(5, 8))[0]
    model = load_model(spec, **kwargs)
    assert not model.training
    assert torch.equal(outputs(model, images), outputs(trained_model, images))


def test_a_zoo_tag_loads_from_the_hub_cache_else_from_the_zoo_copy(offline_cache: Path) -> None:
    entry = zoo.ZOO[SMALL_ZOO_TAG]
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert locate_model(SMALL_ZOO_TAG).export.timm_name == f"local-dir:{zoo.ZOO_COPY_DIR / SMALL_ZOO_TAG}"
    from_copy = outputs(load_model(SMALL_ZOO_TAG), images)

    build_hf_cache(zoo.ZOO_COPY_DIR / SMALL_ZOO_TAG, offline_cache, repo_id=entry.hf_hub_id)
    assert locate_model(SMALL_ZOO_TAG).export.timm_name == f"hf-hub:{entry.hf_hub_id}"
    assert torch.equal(outputs(gsp_hub.from_pretrained(SMALL_ZOO_TAG), images), from_copy)
    assert torch.equal(outputs(timm.create_model(SMALL_ZOO_TAG, pretrained=True), images), from_copy)


def test_a_zoo_tag_found_nowhere_names_the_hub_id_and_the_zoo_copy(
    offline_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zoo, "ZOO_COPY_DIR", tmp_path / "no-checkout" / "zoo")  # an install without the repository
    message = (rf"zoo model '{re.escape(SMALL_ZOO_TAG)}' is neither in the Hugging Face cache as "
               rf"{zoo.ZOO[SMALL_ZOO_TAG].hf_hub_id} .* nor in the repository's copy "
               rf"{re.escape(str(tmp_path / 'no-checkout' / 'zoo' / SMALL_ZOO_TAG))}")
    with pytest.raises(FileNotFoundError, match=message):
        load_model(SMALL_ZOO_TAG)


@pytest.mark.skipif(not SHARED_RESNET20.is_file(), reason="needs ../shared/data/cifar10-resnets")
def test_cifar_resnet_weights_go_through_their_converter() -> None:
    model = load_model("cifar_resnet20", weights=SHARED_RESNET20)
    expected = safetensors.torch.load_file(SHARED_RESNET20)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in expected.items())
    with pytest.raises(ValueError, match="holds a CIFAR ResNet with 3 blocks per stage"):
        load_model("cifar_resnet56", weights=SHARED_RESNET20)


@pytest.mark.parametrize(
    ("spec", "weights", "error", "message"),
    [
        ("{tmp}/no-such-run", None, FileNotFoundError, r"no such file or folder"),
        ("metric_nte", None, FileNotFoundError, r"no such file or folder .*did you mean \['metric_net'"),
        ("gsp_tf_efficientnet_lite0.tin20", None, ValueError,
         r"Invalid pretrained tag .*did you mean \['gsp_tf_efficientnet_lite0\.tin200'"),
        ("local-dir:{tmp}/no-such-export", None, FileNotFoundError, "is not a folder"),
        ("{tmp}/weights.safetensors", None, ValueError, r"is a file: weights need their architecture"),
        ("metric_net", None, ValueError, "without pretrained weights, so its outputs would be random"),
        ("metric_nte", "{tmp}/weights.safetensors", ValueError, r"did you mean \['metric_net'"),
        ("metric_net", "{tmp}/absent.safetensors", FileNotFoundError, r"weights .*absent\.safetensors: no such file"),
        (42, None, TypeError, "folder path or a Hub repo id"),
    ],
    ids=["missing-folder", "misspelt-name", "misspelt-zoo-tag", "missing-local-dir", "bare-weights", "no-weights", "unknown-arch", "missing-weights",
         "not-a-spec"],
)
def test_bad_specs_fail_before_any_model_is_built(
    spec: object, weights: str | None, error: type[Exception], message: str, tmp_path: Path
) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"")
    spec = spec.format(tmp=tmp_path) if isinstance(spec, str) else spec
    with pytest.raises(error, match=message):
        locate_model(spec, weights=weights.format(tmp=tmp_path) if weights else None)


def test_a_missing_model_is_reported_before_the_data_is_read(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--model", str(tmp_path / "no-such-run"), "--dataset", str(tmp_path / "no-data")]) == 2
    assert re.search(r"--model \S+no-such-run: model .* no such file or folder", capsys.readouterr().err)


@pytest.fixture(scope="module")
def zoo_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 Fashion-MNIST test images (2 per class) as a parquet file and, for the index, 6 of them as PNG files."""
    root = tmp_path_factory.mktemp("zoo-cli")
    test = load_fashion_mnist_subset()["test"]
    labels = np.asarray(test["label"])
    rows = test.select(np.concatenate([np.flatnonzero(labels == label)[:2] for label in range(10)]))
    rows.to_parquet(str(root / "fmnist.parquet"))
    for number in range(6):
        folder = root / "gallery" / str(rows[number]["label"])
        folder.mkdir(parents=True, exist_ok=True)
        rows[number]["image"].save(folder / f"{number}.png")
    return root


def run(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_a_zoo_tag_works_in_eval_export_index_and_explain(
    zoo_workspace: Path, offline_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dataset, out = str(zoo_workspace / "fmnist.parquet"), tmp_path

    metrics = out / "metrics.json"
    run(capsys, "eval", "--model", ZOO_TAG, "--dataset", dataset, "--img-size", "64", "--output", str(metrics),
        "--no-verify-images", "--cpu")
    assert 0 <= json.loads(metrics.read_text())["recall@1"] <= 1

    run(capsys, "export", ZOO_TAG, str(out / "export"))
    copy = zoo.ZOO_COPY_DIR / ZOO_TAG
    assert (out / "export" / "model.safetensors").read_bytes() == (copy / "model.safetensors").read_bytes()
    assert read_export_metadata(out / "export") == read_export_metadata(copy)

    summary = json.loads(run(capsys, "index", "build", "--model", ZOO_TAG, "--images", str(zoo_workspace / "gallery"),
                             "--out", str(out / "index"), "--input-size", "64", "--no-progress", "--json"))
    assert summary["count"] == 6 and summary["model_id"] == ZOO_TAG
    query = next((zoo_workspace / "gallery").rglob("*.png"))
    found = json.loads(run(capsys, "index", "search", "--index", str(out / "index"), "--query", str(query), "-k", "1",
                           "--no-grid", "--json"))  # reloads the zoo model the index recorded
    assert found["neighbours"][0]["path"] == str(query) and found["neighbours"][0]["score"] == pytest.approx(1)

    text = run(capsys, "explain", "heatmap", "--model", ZOO_TAG, "--image", str(query), "--out", str(out / "maps"),
               "--img-size", "64")
    assert f"{query} -> " in text and len(list((out / "maps").iterdir())) == 1
    text = run(capsys, "explain", "retrieval", "--model", ZOO_TAG, "--dataset", dataset, "--num-queries", "2", "-k",
               "2", "--img-size", "64", "--out", str(out / "grid.png"), "--no-progress")
    assert text.startswith("2 queries of") and (out / "grid.png").stat().st_size > 0
