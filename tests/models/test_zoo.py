"""The zoo: every published model is a timm pretrained tag with a Hub id, builds the architecture its weights need,
and loads its weights from the repository's zoo/ folder offline: through a hand-built Hugging Face cache (the
normal ``pretrained=True`` path) and through ``local-dir:``."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

import gsp_hub
from gsp_hub.data import TARGET_CELL_COLUMN, create_image_transforms, load_fashion_collage, with_image_transform
from gsp_hub.hub import read_export_metadata, save_pretrained
from gsp_hub.models.zoo import HUB_ORGANISATION, ZOO, ZooEntry, local_zoo_folder
from gsp_hub.train.baselines import retrieval_and_target_mass
from gsp_hub.train.data import eval_loader

ZOO_DIR = Path(__file__).resolve().parents[2] / "zoo"
SCRIPTS = ZOO_DIR.parent / "scripts"
REVISION = "fedcba9876543210fedcba9876543210fedcba98"
ENTRIES = list(ZOO.values())


def entry_id(entry: ZooEntry) -> str:
    return entry.name


def test_zoo_folder_stays_under_60_mb() -> None:
    total = sum(path.stat().st_size for path in ZOO_DIR.rglob("*") if path.is_file())
    assert total < 60 * 2**20
    assert sorted(path.name for path in ZOO_DIR.iterdir() if path.is_dir()) == sorted(ZOO)


def test_local_zoo_folder_names_the_checkout_copy() -> None:
    assert all(local_zoo_folder(name) == ZOO_DIR / name for name in ZOO)
    with pytest.raises(KeyError, match="not a zoo model; the zoo has"):
        local_zoo_folder("gsp_resnet50.cub")


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_zoo_names_are_timm_pretrained_tags_with_hub_ids(entry: ZooEntry) -> None:
    assert entry.name in timm.list_pretrained(f"{entry.architecture}*")
    model = timm.create_model(entry.name)
    assert model.pretrained_cfg["hf_hub_id"] == f"{HUB_ORGANISATION}/{entry.name}"
    assert model.pretrained_cfg["tag"] == entry.tag
    # the tag builds the architecture the weights need: the same shapes as the explicit constructor arguments
    explicit = timm.create_model(entry.architecture, **entry.model_args)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in explicit.state_dict().items()}
    data = timm.data.resolve_model_data_config(model)
    assert data["input_size"] == entry.data_cfg["input_size"] and data["mean"] == entry.data_cfg["mean"]
    # the bare name keeps the untrained default architecture and no weights
    bare = timm.create_model(entry.architecture)
    assert bare.pretrained_cfg.get("hf_hub_id") is None and bare.pretrained_cfg.get("tag") is None


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_a_model_built_from_its_tag_exports_the_arguments_its_weights_need(entry: ZooEntry, tmp_path: Path) -> None:
    model = timm.create_model(entry.name).eval()
    folder = save_pretrained(model, tmp_path / "export")
    config = json.loads((folder / "config.json").read_text())
    assert {key: config["model_args"][key] for key in entry.model_args} == entry.model_args
    reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True).state_dict()
    assert all(torch.equal(reloaded[key], value) for key, value in model.state_dict().items())


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_zoo_folder_config_matches_the_registry(entry: ZooEntry) -> None:
    config = json.loads((ZOO_DIR / entry.name / "config.json").read_text())
    assert config["architecture"] == entry.architecture
    assert {key: config["model_args"][key] for key in entry.model_args} == entry.model_args
    assert tuple(config["pretrained_cfg"]["input_size"]) == entry.data_cfg["input_size"]
    assert config["gsp_hub"]["repo_id"] == entry.hf_hub_id
    card = (ZOO_DIR / entry.name / "README.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card)
    assert all((ZOO_DIR / entry.name / figure).is_file() for figure in figures)
    assert "retrieval.png" in figures
    if entry.architecture.startswith("gsp_"):  # transport_map.png, or one per label-tile cell on collages
        assert any(re.fullmatch(r"transport_map(_\d+)?\.png", figure) for figure in figures)


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_pretrained_true_loads_the_zoo_weights_from_an_offline_cache(
    entry: ZooEntry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / f"models--{entry.hf_hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    shutil.copytree(ZOO_DIR / entry.name, repo / "snapshots" / REVISION)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    model = timm.create_model(entry.name, pretrained=True).eval()
    expected = load_file(ZOO_DIR / entry.name / "model.safetensors")
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)

    pixels = torch.randn(2, *entry.data_cfg["input_size"], generator=torch.Generator().manual_seed(0))
    local = timm.create_model(f"local-dir:{ZOO_DIR / entry.name}", pretrained=True).eval()
    ours = gsp_hub.from_pretrained(ZOO_DIR / entry.name)
    with torch.no_grad():
        reference = model(pixels)
        assert torch.equal(local(pixels), reference) and torch.equal(ours(pixels), reference)


def test_the_fashion_collage_model_reproduces_its_card_metrics_on_the_test_split() -> None:
    """The zoo copy of the default job's model, embedded by the run's evaluation path on the 900 Fashion-Collage test
    images, gives the test R@1, MAP@R and label-tile weight its card states (the run's metrics.json "best")."""
    name = "gsp_test_resnet.fashion_collage"
    model = timm.create_model(f"local-dir:{local_zoo_folder(name)}", pretrained=True).eval()
    test = load_fashion_collage()["test"]
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(eval_loader(with_image_transform(test, create_image_transforms(model).eval), 256, 0))
    measured = retrieval_and_target_mass(model, loader, accelerator, torch.as_tensor(test[TARGET_CELL_COLUMN]))
    stated = read_export_metadata(local_zoo_folder(name))["metrics"]
    for key in ("recall@1", "map@r", "target_mass"):
        assert measured[key] == pytest.approx(stated[key], abs=1e-6), key
    assert stated["target_mass"] > 0.25  # more weight on the label tile than uniform pooling gives it


def test_the_collage_card_states_the_paired_seed_verdict_of_the_benchmark() -> None:
    """scripts/zoo_fashion_collage.py turns bench_collage_pooling.py's results into the card's verdict: GSP's mean
    lead (points, ± std) over the paired seeds and the seeds it led, per pooling twin; the GSP seeds that reach the
    label-tile target and that beat raw pixels."""
    spec = importlib.util.spec_from_file_location("zoo_fashion_collage", SCRIPTS / "zoo_fashion_collage.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def run(recall: float, map_at_r: float, **mass: float) -> dict:
        raw_pixels = {"recall@1": 0.75, "map@r": 0.20}
        return {"best": {"recall@1": recall, "map@r": map_at_r, **mass},
                "baselines": {"raw_pixels": {"test": raw_pixels}}}

    results = {"gsp": {"0": run(0.80, 0.40, target_mass=0.5), "1": run(0.70, 0.30, target_mass=0.6)},
               "avg": {"0": run(0.70, 0.35), "1": run(0.60, 0.32)},
               "attn": {"0": run(0.90, 0.50, target_mass=0.3), "1": run(0.80, 0.40, target_mass=0.4)}}
    verdict = script.paired_verdict({"results": results})
    assert ("against `--pool avg` GSP beats it on average, not in every seed: R@1 +10.00 ± 0.00 points (ahead in 2/2 "
            "seeds), MAP@R +1.50 ± 4.95 points (ahead in 1/2)") in verdict
    assert "against `--pool attn` GSP does not beat it on both metrics, on average: R@1 -10.00" in verdict
    assert "Mean label-tile weight of the chosen models: gsp 0.550, attn 0.350 (uniform 0.250)." in verdict
    assert verdict.endswith("Over the 2 GSP seeds, 1 put at least 0.6 of their weight on the label tile and 1 beat "
                            "raw-pixel nearest neighbours on both R@1 and MAP@R.")


def test_the_tin_gsp_card_compares_with_its_gap_twin_in_words_and_numbers() -> None:
    """scripts/train_zoo.py's GAP-twin verdict (the +1 point rule of its frozen-baseline verdict) and the published
    GSP card, which states it with the twin's own card metrics."""
    spec = importlib.util.spec_from_file_location("train_zoo", SCRIPTS / "train_zoo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.twin_verdict({"recall@1": 0.53, "map@r": 0.17}, {"recall@1": 0.51, "map@r": 0.15}, "gap_x").endswith(
        "this model differs from it by +2.00 R@1 and +2.00 MAP@R points: it clearly beats its twin.")
    twin_metrics = read_export_metadata(ZOO_DIR / "gap_tf_efficientnet_lite0.tin200")["metrics"]
    own_metrics = read_export_metadata(ZOO_DIR / "gsp_tf_efficientnet_lite0.tin200")["metrics"]
    expected = script.twin_verdict(own_metrics, twin_metrics, "gap_tf_efficientnet_lite0.tin200")
    assert "does NOT clearly beat its twin" in expected
    for card in (ZOO_DIR / "gsp_tf_efficientnet_lite0.tin200" / "README.md",
                 ZOO_DIR.parent / "model_cards" / "gsp_tf_efficientnet_lite0.tin200.md"):
        assert expected in card.read_text()
