"""The papers' recipes (gsp_hub.train.recipes): each loads, validates and trains on fixture copies of its benchmark;
`gsp-hub recipes` lists them with their sources; `gsp-hub train --recipe` lets YAML and flags override them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from dml_fixtures import write_cars196, write_cub200, write_inshop, write_sop

from gsp_hub.cli import build_parser, main
from gsp_hub.train import TrainConfig, train
from gsp_hub.train.commands import train_config_from_args
from gsp_hub.train.recipes import RECIPES, get_recipe, list_recipes

# 5 images per class: the 2 validation classes of the MLRC recipes leave each image 9 others (recall@8).
FIXTURE_WRITERS = {"cub200": write_cub200, "cars196": write_cars196, "sop": write_sop}

# A 0.4 M-parameter ResNet at 32 px from scratch (no download), 2 classes x 2 images per step, 2 steps.
TINY_RUN = dict(backbone="test_resnet", backbone_kwargs={}, pretrained=False, img_size=32, batch_size=4,
                m_per_class=2, max_steps=2, eval_at_start=False, eval_batch_size=64)


@pytest.fixture(scope="module")
def benchmark_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny copies of the four benchmarks in their official layouts, by --dataset prefix."""
    folders = {prefix: write(tmp_path_factory.mktemp(prefix), images_per_class=5)
               for prefix, write in FIXTURE_WRITERS.items()}
    return {**folders, "inshop": write_inshop(tmp_path_factory.mktemp("inshop"), images_per_item=5)}


def test_every_recipe_loads_and_validates_with_its_source_and_version() -> None:
    fields = {spec.name for spec in dataclasses.fields(TrainConfig)}
    assert [recipe.name for recipe in list_recipes()] == list(RECIPES) and len(RECIPES) == 16
    for recipe in list_recipes():
        assert recipe.version >= 1 and recipe.trains and recipe.notes
        assert recipe.source.startswith("shared/spec/") and "§" in recipe.source, recipe.name
        assert set(recipe.options) <= fields and "dataset" not in recipe.options, recipe.name
        config = recipe.config(dataset=recipe.benchmark.dataset_form)
        assert {name: getattr(config, name) for name in recipe.options} == dict(recipe.options), recipe.name
        assert config.output_dir == f"runs/{recipe.name}"
        assert (config.query_split, config.gallery_split) == (("query", "gallery") if recipe.benchmark.prefix ==
                                                               "inshop" else (None, None))
        if "-mlrc-" in recipe.name:  # the papers' BN-Inception is not in timm: the substitute is named
            assert "timm has no BN-Inception" in recipe.notes and config.backbone == "resnet50.tv_in1k"
            assert (config.img_size, config.embed_dim, config.batch_size, config.m_per_class) == (227, 128, 32, 4)
            assert (config.lr, config.weight_decay, config.scheduler) == (1e-5, 1e-4, "constant")


def test_recipes_hold_the_spec_values() -> None:
    """The values the specs and issue 22 give, per data set (a change here is a new recipe version)."""
    for prefix, lr, epochs, prototypes in (("cub200", 1.564e-5, 70, 64), ("cars196", 3.668e-5, 30, 64),
                                           ("sop", 2.472e-4, 70, 128), ("inshop", 1.127e-4, 70, 128)):
        config = get_recipe(f"gsp-pytorch-{prefix}").config(dataset="x")
        assert (config.lr, config.epochs, config.batch_size, config.m_per_class, config.embed_dim) == \
            (lr, epochs, 128, 4, 512)
        assert config.pool == "gsp" and config.pool_kwargs["num_prototypes"] == prototypes
        assert config.pool_kwargs["transport_ratio"] == 0.3 and config.zsr_weight == 0.1
        assert get_recipe(f"gsp-mlrc-{prefix}").options["pool_kwargs"]["num_prototypes"] == prototypes
    for prefix, proxies, pool_size in (("cub200", 8, 12), ("cars196", 8, 12), ("sop", 4, 7), ("inshop", 4, 7)):
        config = get_recipe(f"ccp-mlrc-{prefix}").config(dataset="x")
        assert (config.loss, config.loss_kwargs["proxies_per_class"], config.ccp_kwargs["pool_size"]) == \
            ("ccp", proxies, pool_size)
    assert get_recipe("gsp-mlrc-sop").options["loss_kwargs"]["memory_size"] == 1400 * 32
    assert "freezes the backbone" in get_recipe("gsp-pytorch-cars196").notes


def test_a_recipe_without_a_data_set_names_the_form_it_expects() -> None:
    with pytest.raises(ValueError, match=r"^recipe 'ccp-mlrc-cub200' trains on CUB-200-2011 .*pass --dataset "
                                         r"cub200:/path/to/CUB_200_2011 "):
        get_recipe("ccp-mlrc-cub200").config(epochs=3)


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_trains_two_steps_on_fixture_data(name: str, benchmark_folders: dict[str, Path],
                                                       tmp_path: Path) -> None:
    recipe = get_recipe(name)
    config = recipe.config(dataset=f"{recipe.benchmark.prefix}:{benchmark_folders[recipe.benchmark.prefix]}",
                           output_dir=str(tmp_path / "run"), **TINY_RUN)
    with pytest.warns(UserWarning, match="not the full official release"):
        summary = train(config)
    assert summary["steps"] == 2 and 0.0 < summary["best"]["map@r"] <= 1.0
    assert (tmp_path / "run" / "model").is_dir()


def test_recipes_command_lists_every_recipe_with_version_and_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("16 training recipes (gsp-hub train --recipe NAME --dataset PREFIX:ROOT")
    for recipe in list_recipes():
        assert f"{recipe.name} (version {recipe.version}): {recipe.trains}\n" in listed
        assert f"    --dataset {recipe.benchmark.dataset_form}\n    source: {recipe.source}\n" in listed
    assert main(["recipes", "gsp-mlrc-inshop"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("gsp-mlrc-inshop (version 1): ") and "    notes: " in shown and "BN-Inception" in shown
    assert "      loss_kwargs:\n        base: contrastive\n        memory_size: 12800\n" in shown


def test_unknown_recipe_suggests_the_close_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--recipe", "ccp-mlrc-cub"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gsp-hub train: error: --recipe: unknown recipe 'ccp-mlrc-cub' (did you mean "
                            "['ccp-mlrc-cub200'")
    assert "gsp-pytorch-inshop" in error and "`gsp-hub recipes` describes them" in error
    assert main(["recipes", "xml-mlrc-sp"]) == 2
    assert "unknown recipe 'xml-mlrc-sp' (did you mean ['xml-mlrc-sop'" in capsys.readouterr().err
    assert main(["train", "--recipe", "gsp-mlrc-sop", "--output-dir", "unused"]) == 2
    assert "pass --dataset sop:/path/to/Stanford_Online_Products" in capsys.readouterr().err


def test_yaml_overrides_the_recipe_and_flags_override_both(tmp_path: Path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("lr: 0.5\nepochs: 3\ndataset: cub200:/data/CUB_200_2011\n")
    args = build_parser().parse_args(["train", "--recipe", "ccp-mlrc-cub200", "--config", str(yaml_file),
                                      "--epochs", "7", "--loss-kwargs", "proxies_per_class=2", "--no-augment"])
    config = train_config_from_args(args)
    assert (config.lr, config.epochs, config.dataset) == (0.5, 7, "cub200:/data/CUB_200_2011")
    assert config.loss_kwargs == {"proxies_per_class": 2} and config.augment is False  # a flag replaces a mapping
    recipe = get_recipe("ccp-mlrc-cub200").options
    assert (config.pool, config.img_size, config.ccp_kwargs, config.output_dir) == \
        ("avg", 227, recipe["ccp_kwargs"], "runs/ccp-mlrc-cub200")
    plain = train_config_from_args(build_parser().parse_args(["train", "--epochs", "2"]))
    assert plain == TrainConfig(epochs=2)


def test_resume_finds_the_run_in_the_recipes_output_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    started = get_recipe("gsp-pytorch-cub200").config(dataset="cub200:/data/CUB_200_2011", epochs=3, lr=0.25)
    Path(started.output_dir).mkdir(parents=True)
    started.save(started.output_dir)
    resumed = train_config_from_args(build_parser().parse_args(["train", "--recipe", "gsp-pytorch-cub200",
                                                                "--resume", "--max-steps", "9"]))
    assert resumed == dataclasses.replace(started, resume="latest", max_steps=9)
