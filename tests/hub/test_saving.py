"""save_pretrained / update_card / `gsp-hub export | card`: folder layout, config fixes, metadata, re-export."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import safetensors.torch
import timm
import torch
import yaml
from hub_fixtures import BACKBONE, DATASET, IMAGE_SIZE, METRICS, RECIPE, REPO_ID, REVISION, fashion_images

import gsp_hub
from gsp_hub.cli import main as cli
from gsp_hub.hub import from_pretrained, read_export_metadata, save_pretrained, update_card

EXPORT_FILES = {"config.json", "model.safetensors", "README.md"}


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def sample_batch() -> torch.Tensor:
    return fashion_images("test", per_class=2, classes=range(5, 8))[0]


def same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = sample_batch()
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_export_layout_config_and_weights(export_dir: Path, trained_model: torch.nn.Module) -> None:
    assert {p.name for p in export_dir.iterdir()} == EXPORT_FILES
    config = read_config(export_dir)
    assert config["architecture"] == "metric_net" and config["num_classes"] == 0
    assert config["num_features"] == trained_model.num_features  # timm: the forward_features (backbone) width
    # no num_classes in model_args (transformers' TimmWrapper passes its own), backbone and the current pooling
    # (timm's global_pool) recorded for the rebuild
    assert config["model_args"] == {"backbone": BACKBONE, "embed_dim": 32, "num_prototypes": 8, "in_chans": 3,
                                    "global_pool": "gsp"}
    assert config["pretrained_cfg"]["input_size"] == [3, IMAGE_SIZE, IMAGE_SIZE]
    meta = config["gsp_hub"]
    assert meta["version"] == gsp_hub.__version__ and meta["repo_id"] == REPO_ID
    assert (meta["backbone"], meta["pool"], meta["embed_dim"], meta["methods"]) == (BACKBONE, "gsp", 32, ["gsp"])
    assert meta["metrics"] == METRICS and meta["dataset"] == {**DATASET, "config": None}
    assert meta["card"]["recipe"] == RECIPE
    assert meta["num_params"] == sum(p.numel() for p in trained_model.parameters())
    weights = export_dir / "model.safetensors"
    assert meta["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    saved, expected = safetensors.torch.load_file(weights), trained_model.state_dict()
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in expected)
    # a shared export: every file readable by others (timm writes the weights through a 0o600 temp file)
    assert all(path.stat().st_mode & 0o044 == 0o044 for path in export_dir.iterdir())


def test_named_architecture_round_trip(tmp_path: Path) -> None:
    model = timm.create_model("gsp_resnet18", embed_dim=16, num_prototypes=4).eval()
    folder = save_pretrained(model, tmp_path / "gsp_resnet18")
    config = read_config(folder)
    assert config["architecture"] == "gsp_resnet18" and "num_classes" not in config["model_args"]
    assert (config["gsp_hub"]["backbone"], config["gsp_hub"]["pool"]) == ("resnet18", "gsp")
    assert same_outputs(from_pretrained(folder), model)


def test_backbone_pretrained_is_not_reapplied_on_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An offline cache with (random) weights for the backbone's timm Hub id, so backbone_pretrained=True can run.
    snapshot = tmp_path / "cache" / "models--timm--test_resnet.r160_in1k"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text(REVISION)
    (snapshot / "snapshots" / REVISION).mkdir(parents=True)
    safetensors.torch.save_file(
        timm.create_model(BACKBONE).state_dict(), snapshot / "snapshots" / REVISION / "model.safetensors"
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = timm.create_model("metric_net", backbone=BACKBONE, backbone_pretrained=True, embed_dim=16)

    folder = save_pretrained(model, tmp_path / "export")
    assert read_config(folder)["model_args"]["backbone_pretrained"] is False
    assert read_export_metadata(folder)["card"]["base_model"] == "timm/test_resnet.r160_in1k"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert same_outputs(from_pretrained(folder), model)  # no backbone download needed: the export has every weight


def test_new_num_classes_keeps_the_trained_features(export_dir: Path, trained_model: torch.nn.Module) -> None:
    classifier = from_pretrained(export_dir, num_classes=5)
    x = sample_batch()
    with torch.no_grad():
        assert classifier(x).shape == (len(x), 5)
        features = classifier.forward_head(classifier.forward_features(x), pre_logits=True)
        assert torch.equal(features, trained_model(x))


def test_reexport_replaces_the_previous_export(export_copy: Path) -> None:
    replacement = timm.create_model("metric_net", backbone=BACKBONE, pool="avg", embed_dim=8).eval()
    save_pretrained(replacement, export_copy)
    assert {p.name for p in export_copy.iterdir()} == EXPORT_FILES
    meta = read_export_metadata(export_copy)
    assert (meta["pool"], meta["metrics"], meta["repo_id"], meta["methods"]) == ("avg", {}, None, [])
    assert same_outputs(from_pretrained(export_copy), replacement)
    assert [p.name for p in export_copy.parent.iterdir()] == ["copy"]  # no temp or backup folder left behind


def test_update_card_keeps_the_weights_byte_for_byte(export_copy: Path) -> None:
    weights = (export_copy / "model.safetensors").read_bytes()
    update_card(export_copy, metrics={"recall@1": 0.7}, card_extra={"license": "mit"}, repo_id="org/renamed")
    meta = read_export_metadata(export_copy)
    assert (meta["metrics"], meta["repo_id"], meta["dataset"]["id"]) == (
        {"recall@1": 0.7},
        "org/renamed",
        "fashion-mnist",
    )
    assert meta["card"]["license"] == "mit" and meta["card"]["recipe"] == RECIPE  # merged, not replaced
    assert (export_copy / "model.safetensors").read_bytes() == weights
    assert "license: mit" in (export_copy / "README.md").read_text()
    from_pretrained(export_copy)  # the recorded checksum still matches


def test_cli_export_of_an_export_keeps_weights_and_card_metadata(export_dir: Path, tmp_path: Path) -> None:
    assert cli(["export", str(export_dir), str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (export_dir / "model.safetensors").read_bytes()
    old, new = read_export_metadata(export_dir), read_export_metadata(tmp_path / "again")
    assert new == old


def test_cli_export_of_a_training_run_folder(export_dir: Path, tmp_path: Path) -> None:
    """`gsp-hub train` layout: model/ (an export), metrics.json with a "best" entry, train_config.yaml."""
    run = tmp_path / "run"
    shutil.copytree(export_dir, run / "model")
    best = {"epoch": 2, "recall@1": 0.81, "map@r": 0.42, "r_precision": 0.5, "loss": 0.3}
    (run / "metrics.json").write_text(json.dumps({"best": best, "last": best, "history": [best]}))
    (run / "train_config.yaml").write_text(yaml.safe_dump({**RECIPE, "epochs": 2}))
    assert cli(["export", str(run), str(tmp_path / "out")]) == 0
    meta = read_export_metadata(tmp_path / "out")
    assert meta["metrics"] == {"recall@1": 0.81, "map@r": 0.42, "r_precision": 0.5}
    assert meta["card"]["recipe"] == {**RECIPE, "epochs": 2}
    assert (meta["dataset"], meta["repo_id"]) == (read_export_metadata(export_dir)["dataset"], REPO_ID)  # kept
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (export_dir / "model.safetensors").read_bytes()


def test_cli_export_of_a_bare_checkpoint_with_files(trained_model: torch.nn.Module, tmp_path: Path) -> None:
    safetensors.torch.save_file(trained_model.state_dict(), tmp_path / "checkpoint.safetensors")
    (tmp_path / "metrics.json").write_text(
        json.dumps({"epoch": 3, "best": {"recall@1": 0.5, "map@r": 0.25, "loss": 1.0}})
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(RECIPE))
    model_args = json.dumps({"backbone": BACKBONE, "embed_dim": 32, "num_prototypes": 8})
    args = [
        "export", str(tmp_path / "checkpoint.safetensors"), str(tmp_path / "out"),
        "--model", "metric_net", "--model-args", model_args,
        "--metrics", str(tmp_path / "metrics.json"), "--dataset", "fashion-mnist", "--split", "test",
        "--dataset-name", "Fashion-MNIST test classes", "--recipe", str(tmp_path / "recipe.yaml"),
        "--input-size", str(IMAGE_SIZE), "--repo-id", REPO_ID, "--license", "mit",
    ]  # fmt: skip
    assert cli(args) == 0
    meta = read_export_metadata(tmp_path / "out")
    assert meta["metrics"] == {"recall@1": 0.5, "map@r": 0.25}  # non-metric keys are not card metrics
    assert meta["dataset"] == {
        "id": "fashion-mnist",
        "split": "test",
        "name": "Fashion-MNIST test classes",
        "config": None,
    }
    assert (meta["card"]["recipe"], meta["card"]["license"], meta["repo_id"]) == (RECIPE, "mit", REPO_ID)
    assert read_config(tmp_path / "out")["pretrained_cfg"]["input_size"] == [3, IMAGE_SIZE, IMAGE_SIZE]
    assert same_outputs(from_pretrained(tmp_path / "out"), trained_model)


def test_cli_card_rerenders_in_place(export_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = (export_copy / "model.safetensors").read_bytes()
    assert cli(["card", str(export_copy), "--repo-id", "org/other", "--description", "Retargeted.", "--show"]) == 0
    shown = capsys.readouterr().out
    assert "Retargeted." in shown and 'gsp_hub.from_pretrained("org/other")' in shown
    assert (export_copy / "README.md").read_text() in shown
    assert (export_copy / "model.safetensors").read_bytes() == weights


def test_update_card_turns_a_plain_timm_export_into_a_transformers_loadable_one(tmp_path: Path) -> None:
    model = timm.create_model(BACKBONE, num_classes=3).eval()
    timm.models.save_for_hf(model, tmp_path / "plain", safe_serialization=True)
    assert "num_classes" in read_config(tmp_path / "plain")["model_args"]  # what trips TimmWrapper

    update_card(tmp_path / "plain", metrics={"top1": 0.5}, dataset="fashion-mnist")
    config = read_config(tmp_path / "plain")
    assert "num_classes" not in config["model_args"] and config["num_classes"] == 3
    assert read_export_metadata(tmp_path / "plain")["metrics"] == {"top1": 0.5}
    from transformers import AutoModel

    AutoModel.from_pretrained(str(tmp_path / "plain"))
    assert same_outputs(from_pretrained(tmp_path / "plain"), model)
