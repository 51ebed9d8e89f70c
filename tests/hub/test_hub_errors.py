"""Bad input to the hub functions: a clear error naming the problem and the fix, and nothing written."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
import safetensors.torch
import timm
import torch
from hub_fixtures import BACKBONE

from gsp_hub.hub import from_pretrained, load_weights, save_pretrained

Snapshot = Callable[[Path], dict[str, bytes]]


def edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        target = config["model_args"] if key in ("embed_dim", "future_option") else config
        target[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def damage_missing(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def damage_pickle_only(folder: Path) -> None:
    torch.save({}, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def damage_truncated(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def damage_flipped_byte(folder: Path) -> None:  # header intact: only the recorded checksum can tell
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (damage_missing, FileNotFoundError, r"model\.safetensors is missing.*save_pretrained"),
        (damage_pickle_only, FileNotFoundError, r"pytorch_model\.bin.*never loads pickled"),
        (damage_truncated, ValueError, r"corrupt or truncated.*re-download it or re-export"),
        (damage_flipped_byte, ValueError, r"does not match the SHA-256"),
        (
            lambda f: edit_config(f, architecture="gsp_future_net"),
            ValueError,
            r"'gsp_future_net'.*not registered.*`import gsp_hub`.*pip install -U gsp_hub",
        ),
        (
            lambda f: edit_config(f, embed_dim=16),
            ValueError,
            r"shape mismatch \(\d+\): \['embed\.weight: weights \(32, 96\) vs model \(16, 96\)",
        ),
        (lambda f: edit_config(f, future_option=1), TypeError, r"rejects the model arguments.*pip install -U gsp_hub"),
        (lambda f: (f / "config.json").write_text("{not json"), ValueError, r"config\.json is not valid JSON"),
        (
            lambda f: (f / "config.json").unlink(),
            FileNotFoundError,
            r"config\.json is missing.*not a gsp_hub / timm export",
        ),
    ],
    ids=[
        "missing",
        "pickle-only",
        "truncated",
        "flipped-byte",
        "unknown-arch",
        "shape",
        "unknown-arg",
        "bad-json",
        "no-config",
    ],
)
def test_loading_a_damaged_export_fails_clearly(
    damage: Callable[[Path], None], error: type[Exception], message: str, export_copy: Path, folder_state: Snapshot
) -> None:
    damage(export_copy)
    before = folder_state(export_copy)
    with pytest.raises(error, match=message):
        from_pretrained(export_copy)
    assert folder_state(export_copy) == before


def test_unknown_sources_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"no config\.json .*HF_HUB_OFFLINE=1"):
        from_pretrained("hf-hub:org/not-cached")
    with pytest.raises(FileNotFoundError, match=r"read as a Hub id because no folder .*runs/best exists"):
        from_pretrained("runs/best")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        from_pretrained(f"local-dir:{tmp_path / 'absent'}")
    with pytest.raises(TypeError, match="folder path or a Hub repo id"):
        from_pretrained(42)  # type: ignore[arg-type]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))


def test_pretrained_flag_is_refused(export_dir: Path) -> None:
    with pytest.raises(TypeError, match="always loads the exported weights"):
        from_pretrained(export_dir, pretrained=True)


def test_load_weights_checks_every_shape_before_copying(export_dir: Path) -> None:
    model = timm.create_model("metric_net", backbone=BACKBONE, embed_dim=16, num_prototypes=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"shape mismatch.*embed\.weight.*model_args"):
        load_weights(model, export_dir / "model.safetensors")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            dict(metrics={"recall@1": 71.2}, dataset="cub"),
            ValueError,
            r"fractions in \[0, 1\].*divide percentages by 100",
        ),
        (dict(metrics={"recall@1": float("nan")}, dataset="cub"), ValueError, "only finite values"),
        (dict(metrics={"recall@1": "high"}, dataset="cub"), ValueError, r"metrics\['recall@1'\] must be a number"),
        (dict(metrics={"recall@1": 0.7}), ValueError, "metrics need a dataset"),
        (dict(dataset={"split": "test"}), ValueError, r"dataset must have the keys id \(required\)"),
        (dict(card_extra={"licence": "mit"}), ValueError, r"unknown key\(s\) \['licence'\]; allowed"),
        (dict(card_extra={"recipe": {"sampler": object()}}), ValueError, "must be JSON-serialisable"),
        (dict(card_extra={"methods": ["magic"]}), ValueError, r"unknown method\(s\) \['magic'\]"),
        (dict(repo_id="no-namespace"), ValueError, "'org/name'"),
        (dict(card_extra={"baselines": {"raw pixels": {"recall@1": 51.1}}}), ValueError,
         r"card_extra\['baselines'\]\['raw pixels'\]: metrics\['recall@1'\] = 51.1: card metrics are fractions"),
        (dict(card_extra={"baselines": [0.5]}), ValueError, r"must map a baseline's name to its metrics"),
        (dict(card_extra={"target_mass": 1.5}), ValueError, r"target_mass'\] must be a fraction"),
        (dict(card_extra={"figures": [{"file": "map.png"}]}), ValueError, r"figures'\] must be a list of"),
        (dict(card_extra={"figures": [{"file": "map.png", "caption": "a map"}]}), ValueError,
         r"names \['map.png'\], which the export would not hold; pass each figure in files="),
        (dict(files={"../map.png": __file__}), ValueError, r"'../map.png' is not a file name an export can take"),
        (dict(files={"README.md": __file__}), ValueError, r"'README.md' is not a file name an export can take"),
        (dict(files={"map.png": "no/such/file.png"}), FileNotFoundError, r"files\['map.png'\]: no/such/file.png"),
    ],
    ids=["percent", "nan", "text", "no-dataset", "dataset-no-id", "card-key", "recipe-object", "method", "repo-id",
         "baseline-percent", "baselines-list", "target-mass", "figure-keys", "figure-missing", "file-path",
         "file-reserved", "file-absent"],
)
def test_bad_export_arguments_fail_before_writing(
    kwargs: dict, error: type[Exception], message: str, trained_model: torch.nn.Module, tmp_path: Path
) -> None:
    with pytest.raises(error, match=message):
        save_pretrained(trained_model, tmp_path / "export", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_only_timm_models_export(tmp_path: Path) -> None:
    with pytest.raises(
        TypeError, match=r"lacks \['pretrained_cfg', 'num_classes', 'num_features'\].*timm\.create_model"
    ):
        save_pretrained(torch.nn.Linear(3, 2), tmp_path / "export")
    with pytest.raises(TypeError, match=r"torch nn\.Module"):
        save_pretrained({"weight": torch.zeros(1)}, tmp_path / "export")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_export_never_replaces_a_foreign_folder(
    trained_model: torch.nn.Module, tmp_path: Path, folder_state: Snapshot
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    before = folder_state(run)
    with pytest.raises(ValueError, match=r"not a gsp_hub export.*give it its own .* folder.*run/hub"):
        save_pretrained(trained_model, run)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        save_pretrained(trained_model, tmp_path / "file")
    assert folder_state(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["file", "run"]


@pytest.mark.parametrize("interruption", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_interrupted_export_leaves_the_old_export_intact(
    interruption: BaseException,
    trained_model: torch.nn.Module,
    export_copy: Path,
    folder_state: Snapshot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def half_write_then_fail(tensors: dict, filename: str | Path, *args: object, **kwargs: object) -> None:
        Path(filename).write_bytes(b"\x00" * 1000)  # the disk fills up halfway through the weights
        raise interruption

    before = folder_state(export_copy)
    monkeypatch.setattr(safetensors.torch, "save_file", half_write_then_fail)
    with pytest.raises(type(interruption)):
        save_pretrained(trained_model, export_copy, metrics={"recall@1": 0.9}, dataset="fashion-mnist")
    assert folder_state(export_copy) == before
    assert [p.name for p in export_copy.parent.iterdir()] == ["copy"]  # the staging folder is gone

