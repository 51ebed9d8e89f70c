"""`gsp-hub train` / `gsp-hub eval` through the command line: flags, bad input, the no-argument job."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from gsp_hub.cli import main
from gsp_hub.data import load_fashion_mnist_subset
from gsp_hub.train import TrainConfig

TINY_FLAGS = ["--backbone", "test_vit", "--backbone-kwargs", "img_size=32", "patch_size=8", "--embed-dim", "16",
              "--pool-kwargs", "num_prototypes=4", "memory_size=16", "--batch-size", "12", "--m-per-class", "4",
              "--eval-batch-size", "64", "--no-eval-at-start"]


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--model", "--backbone", "--pool", "--embed-dim", "--dataset", "--loss", "--epochs", "--batch-size",
                 "--lr", "--output-dir", "--mixed-precision", "--resume", "--seed", "--config", "--save-every",
                 "--grad-accum", "--max-steps", "--num-workers", "--skip-bad-images", "--zsr-weight"):
        assert re.search(rf"{flag}[ ,=\[\n]", text), flag
    assert "accelerate launch --multi_gpu" in text


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    from gsp_hub.cli import build_parser
    from gsp_hub.train.commands import config_from_args

    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("epochs: 3\nlr: 0.01\nloss: xbm\nloss_kwargs: {memory_size: 512}\n")
    args = build_parser().parse_args(["train", "--config", str(yaml_file), "--lr", "0.5", "--pool-kwargs", "gamma=2.5",
                                      "--no-verify-images", "--backbone-kwargs"])
    config = config_from_args(args)
    assert (config.epochs, config.lr, config.loss, config.loss_kwargs) == (3, 0.5, "xbm", {"memory_size": 512})
    assert config.pool_kwargs == {"gamma": 2.5} and config.verify_images is False and config.backbone_kwargs == {}
    assert config.batch_size == TrainConfig().batch_size


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """An imagefolder of 10 classes x 8 real Fashion-MNIST PNGs plus one corrupt file in class 3."""
    root = tmp_path_factory.mktemp("imagefolder")
    subset = load_fashion_mnist_subset()["train"]
    labels = np.asarray(subset["label"])
    for label in range(10):
        (root / f"class{label}").mkdir()
        for i, row in enumerate(np.flatnonzero(labels == label)[:8]):
            subset[int(row)]["image"].save(root / f"class{label}" / f"{i}.png")
    (root / "class3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def test_bad_input_is_a_clear_error_before_training(tmp_path, image_folder, capsys):
    assert main(["train", "--dataset", str(tmp_path / "no_such_folder"), "--output-dir", str(tmp_path / "a")]) == 2
    assert "no such file or folder" in capsys.readouterr().err

    images_only = tmp_path / "images_only.parquet"
    Dataset.from_dict({"image": load_fashion_mnist_subset()["test"]["image"][:20]}).to_parquet(str(images_only))
    assert main(["train", "--dataset", str(images_only), "--output-dir", str(tmp_path / "b")]) == 2
    assert "no label column found" in capsys.readouterr().err

    assert main(["train", "--dataset", str(image_folder), "--output-dir", str(tmp_path / "c"),
                 "--batch-size", "12", "--m-per-class", "4"]) == 2  # the labels allow the run: images are decoded
    assert "broken.png" in capsys.readouterr().err
    for run in "abc":
        assert not (tmp_path / run / "checkpoints").exists()  # nothing was trained


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    """`python -m gsp_hub ...` in a fresh process (accelerate fixes the mixed precision once per process)."""
    return subprocess.run([sys.executable, "-m", "gsp_hub", *argv], capture_output=True, text=True, timeout=900)


def test_train_skips_bad_images_in_bf16_then_eval_reproduces_the_metrics(tmp_path, image_folder):
    run = tmp_path / "run"
    trained = run_cli("train", "--dataset", str(image_folder), "--skip-bad-images", "--output-dir", str(run),
                      "--epochs", "1", "--mixed-precision", "bf16", *TINY_FLAGS)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "skipped 1 of 81 images that cannot be decoded" in trained.stderr and "broken.png" in trained.stderr
    assert "Recall@1" in trained.stdout
    best = json.loads((run / "metrics.json").read_text())["best"]

    evaluated = run_cli("eval", "--model", str(run), "--dataset", str(image_folder), "--skip-bad-images",
                        "--mixed-precision", "bf16", "--output", str(tmp_path / "eval.json"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "Recall@1" in evaluated.stdout
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for key, value in metrics.items():
        assert value == pytest.approx(best[key], abs=1e-9), key  # the exported weights, evaluated as in training


def test_default_job_on_the_embedded_data_runs(tmp_path, caplog):
    """The no-argument job's configuration, cut to 3 steps (the full run is the slow test below)."""
    caplog.set_level(logging.INFO)
    assert main(["train", "--output-dir", str(tmp_path / "run"), "--max-steps", "3", "--no-eval-at-start"]) == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["steps"] == 3 and summary["best"]["recall@1"] > 0.5
    assert "data: fashion-mnist-subset (zero-shot: train 2100 rows of classes 0-2" in caplog.text
    assert "validation 1400 rows of classes 3-4 from train+test (Dress, Coat), choose the model" in caplog.text


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason=(
    "issue 21: chosen by validation classes 3-4 and trained on classes 0-2 only, the embedded Fashion-MNIST job "
    "ends below the untrained model on test classes 5-9 (R@1 81.97 / MAP@R 24.82 vs 83.89 / 28.07); the default "
    "data set is to be replaced by a nuisance data set where pooling has something to select"))
def test_no_argument_job_beats_the_untrained_model(tmp_path):
    """`gsp-hub train` with no arguments, as a user runs it (in an empty folder)."""
    result = subprocess.run([sys.executable, "-m", "gsp_hub", "train"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "train" / "metrics.json").read_text())
    initial, best = summary["initial"], summary["best"]
    assert best["recall@1"] > initial["recall@1"] + 0.03
    assert best["map@r"] > initial["map@r"] + 0.05
    assert "Recall@1" in result.stdout
