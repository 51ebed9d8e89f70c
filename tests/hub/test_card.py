"""The model card: model-index metadata that huggingface_hub parses back, citations, and snippets that run verbatim."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
from hub_fixtures import BACKBONE, DATASET, METRICS, REPO_ID, build_hf_cache
from huggingface_hub import ModelCard

from gsp_hub.hub import CITATIONS, save_pretrained, update_card
from gsp_hub.hub.card import DatasetRef, baseline_rows, detect_methods, eval_results, metric_spec


def test_card_metadata_round_trips_through_huggingface_hub(export_dir: Path) -> None:
    card = ModelCard.load(export_dir / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("gsp_hub", "image-feature-extraction", "apache-2.0")
    assert data.datasets == [DATASET["id"]] and data.model_name == REPO_ID.split("/")[1]
    assert {"gsp_hub", "timm", "metric-learning", "image-feature-extraction", "gsp"} <= set(data.tags)
    assert data.metrics == ["recall", "map_at_r", "r_precision"]
    rows = [
        (r.task_type, r.dataset_type, r.dataset_name, r.dataset_split, r.metric_type, r.metric_name, r.metric_config,
         r.metric_value)
        for r in data.eval_results
    ]  # fmt: skip
    name = DATASET["name"]
    assert rows == [
        ("image-retrieval", "fashion-mnist", name, "test", "recall", "R@1", "k=1", METRICS["recall@1"]),
        ("image-retrieval", "fashion-mnist", name, "test", "recall", "R@2", "k=2", METRICS["recall@2"]),
        ("image-retrieval", "fashion-mnist", name, "test", "map_at_r", "MAP@R", None, METRICS["map@r"]),
        ("image-retrieval", "fashion-mnist", name, "test", "r_precision", "R-Precision", None, METRICS["r_precision"]),
    ]
    assert f"| {name} | test | R@1 | 61.25 |" in card.text  # the human-readable table agrees with the metadata
    assert "loss: multi_similarity+zsr" in card.text and f"backbone: {BACKBONE}" in card.text  # the recipe
    assert CITATIONS["gsp"] in card.text and "2308.09228" in card.text and "Generalized Sum Pooling" in card.text


def test_usage_snippets_run_verbatim_from_the_hub_cache(export_dir: Path, tmp_path: Path) -> None:
    """Every python block of the card's "How to use" section, run as a user would, offline from a Hub cache."""
    text = (export_dir / "README.md").read_text()
    usage = text.split("## How to use")[1].split("## Training recipe")[0]
    blocks = re.findall(r"```python\n(.*?)```", usage, flags=re.S)
    assert len(blocks) == 2 and all(block.lstrip().startswith("import gsp_hub") for block in blocks)
    env = {**os.environ, "HF_HUB_CACHE": str(build_hf_cache(export_dir, tmp_path / "cache")), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["torch.Size([1, 32])", "32"]


@pytest.mark.parametrize(
    ("pool", "recipe", "explicit", "expected"),
    [
        ("gsp", {"loss": "multi_similarity+zsr"}, [], ["gsp"]),
        ("proto", None, [], ["xml"]),
        ("avg", {"loss": "proxy_anchor+ccp"}, [], ["ccp"]),
        ("gsp", {"loss": "ccp"}, [], ["gsp", "ccp"]),
        ("avg", {"distill": "letkd-2"}, ["tm_block"], ["tm_block", "letkd"]),
        ("gem", {"loss": "multi_similarity"}, [], []),
    ],
)
def test_methods_follow_pool_and_recipe(
    pool: str, recipe: dict | None, explicit: list[str], expected: list[str]
) -> None:
    assert detect_methods(pool, recipe, explicit) == expected


def test_baseline_card_cites_the_recipe_method_only(tmp_path: Path) -> None:
    model = timm.create_model("metric_net", backbone=BACKBONE, pool="avg", embed_dim=8)
    folder = save_pretrained(model, tmp_path / "baseline", card_extra={"recipe": {"loss": "proxy_anchor+ccp"}})
    card = ModelCard.load(folder / "README.md")
    assert CITATIONS["ccp"] in card.text and CITATIONS["gsp"] not in card.text
    assert "chance-constraint-proxies" in card.data.tags and "gsp" not in card.data.tags
    assert card.data.eval_results is None and "No evaluation results were recorded" in card.text


def test_classifier_card(tmp_path: Path) -> None:
    model = timm.create_model("metric_net", backbone=BACKBONE, pool="avg", embed_dim=8, num_classes=5)
    folder = save_pretrained(model, tmp_path / "classifier", metrics={"top1": 0.9}, dataset=DatasetRef("fashion-mnist"))
    data = ModelCard.load(folder / "README.md").data
    assert data.pipeline_tag == "image-classification"
    (result,) = data.eval_results
    assert (result.task_type, result.metric_type, result.metric_name, result.metric_value) == (
        "image-classification",
        "accuracy",
        "Top-1 accuracy",
        0.9,
    )


def test_metric_keys_map_to_card_entries() -> None:
    assert metric_spec("recall@16").metric_name == "R@16" and metric_spec("recall@16").metric_config == "k=16"
    assert metric_spec("map@r").metric_type == "map_at_r" and metric_spec("loss") is None
    results = eval_results({"loss": 1.2, "r_precision": 0.3}, DatasetRef("cub", split="test"))
    assert [(r.metric_name, r.metric_value) for r in results] == [("R-Precision", 0.3)]


def test_card_compares_with_baselines_in_words_and_shows_its_figures(tmp_path: Path) -> None:
    model = timm.create_model("metric_net", backbone=BACKBONE, pool="gsp", embed_dim=8)
    figure = tmp_path / "drawn.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n a figure")
    baselines = {"raw pixels": {"recall@1": 0.511, "map@r": 0.115, "r_precision": 0.2},
                 "the untrained model": {"recall@1": 0.6, "map@r": 0.2},
                 "a classifier": {"top1": 0.9}}  # nothing to compare with: left out
    folder = save_pretrained(
        model, tmp_path / "export", metrics={"recall@1": 0.55, "map@r": 0.25}, dataset=DatasetRef("collage"),
        card_extra={"baselines": baselines, "target_mass": 0.4312,
                    "figures": [{"file": "map.png", "caption": "Where the model pools."}]},
        files={"map.png": figure})
    text = (folder / "README.md").read_text()
    assert "| | R@1 (%) | MAP@R (%) |\n|---|---|---|\n| this model | 55.00 | 25.00 |\n" in text
    assert "| raw pixels | 51.10 | 11.50 |\n| the untrained model | 60.00 | 20.00 |\n" in text
    assert "- Beats raw pixels: **yes** (R@1 +3.90, MAP@R +13.50 points)." in text
    assert "- Beats the untrained model: **no** (R@1 -5.00, MAP@R +5.00 points)." in text
    assert "a classifier" not in text
    assert "on average **0.431** of each test image's pooling weight lies" in text
    assert "Where the model pools.\n\n![map.png](map.png)" in text
    assert (folder / "map.png").read_bytes() == figure.read_bytes()
    update_card(folder, card_extra={"license": "mit"})  # the figure stays, and so does the card's comparison
    assert (folder / "map.png").is_file() and "![map.png](map.png)" in (folder / "README.md").read_text()
    with pytest.raises(ValueError, match=r"names \['other.png'\], which the export would not hold; put it into"):
        update_card(folder, card_extra={"figures": [{"file": "other.png", "caption": "?"}]})


def test_baseline_rows_need_the_compared_metrics_on_both_sides() -> None:
    assert baseline_rows({"recall@1": 0.5}, {"raw pixels": {"recall@1": 0.4, "map@r": 0.1}}) == []
    (row,) = baseline_rows({"recall@1": 0.5, "map@r": 0.2}, {"tie": {"recall@1": 0.5, "map@r": 0.1}})
    assert (row["beats"], row["leads"]) == ("no", ["+0.00", "+10.00"])  # a tie is not a win
