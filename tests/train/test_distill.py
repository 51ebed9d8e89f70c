"""`gsp-hub distill` end to end on a real CIFAR-10 slice: ResNet-56 teacher (shared weights) -> ResNet-20 student.

Each method runs 2 steps through the command line; a letKD-2 run stopped after 2 steps and resumed equals a
straight 4-step run bit for bit; bad input fails before any work; the exported student is evaluated alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gsp_hub.cli import main
from gsp_hub.train.distill import DistillConfig

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CIFAR10 = SHARED_DATA / "cifar10-jpeg"
TEACHER_WEIGHTS = SHARED_DATA / "cifar10-resnets" / "resnet56.safetensors"
STUDENT_WEIGHTS = SHARED_DATA / "cifar10-resnets" / "resnet20.safetensors"

pytestmark = pytest.mark.skipif(not (CIFAR10.is_dir() and TEACHER_WEIGHTS.is_file()),
                                reason="needs ../shared/data/cifar10-jpeg and cifar10-resnets")


def _args(output_dir: Path, method: str, *extra: str) -> list[str]:
    """128 train / 64 test images at 32 px, batches of 32 (4 steps per epoch), 64 letKD codewords."""
    return [
        "distill", "--teacher", "cifar_resnet56", "--teacher-weights", str(TEACHER_WEIGHTS),
        "--dataset", str(CIFAR10), "--student", "cifar_resnet20", "--method", method,
        "--max-train-images", "128", "--max-test-images", "64", "--batch-size", "32", "--eval-batch-size", "64",
        "--num-codes", "64", "--target-batches", "2", "--epochs", "2", "--log-every", "1",
        "--output-dir", str(output_dir), "--cpu", *extra,
    ]


def _model_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoints = sorted((run_dir / "checkpoints").iterdir(), key=lambda path: int(path.name.split("_")[1]))
    return load_file(str(checkpoints[-1] / "model.safetensors"))


def _exported_top1(run_dir: Path) -> float:
    """Top-1 of the exported student alone (no teacher; labels only to score) on the run's test images."""
    from gsp_hub.data import (
        create_image_transforms,
        load_image_dataset,
        with_image_transform,
    )
    from gsp_hub.train.data import eval_loader
    from gsp_hub.hub import load_model
    from gsp_hub.train.distillation import seeded_subset
    from gsp_hub.train.evaluation import predict

    student = load_model(run_dir)
    test = seeded_subset(load_image_dataset(str(CIFAR10), split="test", verify_images=False)["test"], 64, 0)
    loader = eval_loader(with_image_transform(test, create_image_transforms(student, input_size=32).eval), 64, 0)
    predictions, labels = predict(student, loader)
    return float((predictions == labels).float().mean())


@pytest.mark.parametrize("method", ["vanilla", "kd", "letkd1"])
def test_each_method_runs_and_exports_a_teacher_free_student(tmp_path, method):
    run_dir = tmp_path / method
    assert main(_args(run_dir, method, "--max-steps", "2")) == 0
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["steps"] == 2 and summary["method"] == method
    assert summary["teacher"]["top1"] > 0.6  # the shared ResNet-56 (83.2 % on the full test split)
    assert (run_dir / "curves.png").stat().st_size > 0
    assert any((run_dir / "logs").rglob("events.out.tfevents*"))
    assert (run_dir / "letkd_targets.safetensors").exists() == method.startswith("letkd")
    saved = DistillConfig.from_yaml(run_dir / "distill_config.yaml")
    assert saved.method == method and saved.num_codes == 64
    # The exported student reproduces the recorded top-1 with neither the teacher nor its targets.
    assert _exported_top1(run_dir) == pytest.approx(summary["best"]["top1"], abs=1e-6)


def test_letkd2_resume_after_a_stop_equals_a_straight_run(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(_args(straight, "letkd2", "--max-steps", "4")) == 0
    assert main(_args(stopped, "letkd2", "--max-steps", "2")) == 0
    targets = (stopped / "letkd_targets.safetensors").stat().st_mtime_ns
    assert main(["distill", "--output-dir", str(stopped), "--resume", "--max-steps", "4"]) == 0
    assert (stopped / "letkd_targets.safetensors").stat().st_mtime_ns == targets  # reused, not refitted
    expected, resumed = _model_weights(straight), _model_weights(stopped)
    assert expected.keys() == resumed.keys()
    assert any("layer3.0.layer.match" in key for key in expected)  # both KD layers are in the student
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    history = json.loads((stopped / "metrics.json").read_text())["history"]
    assert [row["step"] for row in history] == [2, 4]
    assert history[-1]["top1"] == json.loads((straight / "metrics.json").read_text())["history"][-1]["top1"]
    assert _exported_top1(stopped) == pytest.approx(
        json.loads((stopped / "metrics.json").read_text())["best"]["top1"], abs=1e-6)


def test_student_weights_start_a_fine_tune_from_the_trained_student(tmp_path):
    run_dir = tmp_path / "vanilla"
    assert main(_args(run_dir, "vanilla", "--student-weights", str(STUDENT_WEIGHTS), "--eval-at-start",
                      "--max-steps", "1")) == 0
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert history[0]["step"] == 0 and history[0]["top1"] > 0.6  # the shared ResNet-20 (81.0 %); random: ~0.1


def test_letkd_student_keeps_the_given_weights_and_adds_fresh_kd_layers():
    import timm

    from gsp_hub.models.cifar_resnet import load_cifar10_weights
    from gsp_hub.train.distillation import create_student

    config = DistillConfig(teacher="cifar_resnet56", teacher_weights=str(TEACHER_WEIGHTS), dataset=str(CIFAR10),
                           student_weights=str(STUDENT_WEIGHTS), method="letkd1", num_codes=64)
    student = create_student(config, 10).state_dict()
    trained = load_cifar10_weights(timm.create_model("cifar_resnet20", num_classes=10), STUDENT_WEIGHTS).state_dict()
    for key, value in trained.items():
        assert torch.equal(student[f"model.{key}"], value), key
    assert any(".match." in key for key in student)  # the KD layer is there, on top of the trained weights


@pytest.mark.parametrize(("student", "method"), [("cifar_resnet20", "letkd2"), ("test_resnet", "letkd1")])
def test_a_distilled_letkd_student_loads_through_the_hub_contract_without_the_teacher(tmp_path, student, method):
    """2 steps of `distill`, then the exported model/ folder through timm local-dir: and gsp_hub.from_pretrained
    equals a student built by hand (insert_letkd_layers around the timm student) holding the run's final weights."""
    import timm

    import gsp_hub
    from gsp_hub.models.taps import insert_letkd_layers
    from gsp_hub.train.distillation import distill

    config = DistillConfig(
        teacher="cifar_resnet56", teacher_weights=str(TEACHER_WEIGHTS), dataset=str(CIFAR10), student=student,
        method=method, max_train_images=64, max_test_images=32, batch_size=32, eval_batch_size=32, num_codes=16,
        subclasses_per_class=2, target_batches=1, max_steps=2, eval_at_start=False, output_dir=str(tmp_path / "run"),
        cpu=True,
    )
    summary = distill(config)
    assert summary["best"]["step"] == 2  # the exported model is the last one
    trained = insert_letkd_layers(timm.create_model(student, num_classes=10), input_size=(3, 32, 32), pen_codes=16,
                                  inter_codes=20 if method == "letkd2" else 0)
    trained.load_state_dict(_model_weights(tmp_path / "run"), strict=True)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trained.eval()(images)
        for model in (timm.create_model(f"local-dir:{tmp_path / 'run' / 'model'}", pretrained=True).eval(),
                      gsp_hub.from_pretrained(tmp_path / "run" / "model"), gsp_hub.load_model(tmp_path / "run")):
            assert type(model).__name__ == "TappedModel" and model.pretrained_cfg["architecture"] == "letkd_student"
            assert torch.equal(model(images), expected)
    model_args = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["model_args"]
    assert model_args["student"] == student and model_args["pen_codes"] == 16
    assert sorted(path.name for path in (tmp_path / "run" / "model").iterdir()) == [
        "README.md", "config.json", "model.safetensors"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--teacher-weights", "/nonexistent/resnet56.safetensors"], r"--teacher-weights .*no such file"),
        (["--student-weights", "/nonexistent/resnet20.safetensors"], r"--student-weights .*no such file"),
        (["--teacher", ""], r"needs --teacher\b"),
        (["--dataset", ""], r"needs --dataset"),
        (["--student", "no_such_net"], r"--student 'no_such_net' is not a timm architecture"),
        (["--num-codes", "0"], r"num_codes must be an int >= 1"),
    ],
)
def test_bad_input_fails_before_any_work(tmp_path, capsys, flags, message):
    run_dir = tmp_path / "run"
    assert main(_args(run_dir, "letkd1") + flags) == 2
    assert not run_dir.exists()
    assert re.search(message, capsys.readouterr().err)


def test_unknown_method_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(_args(tmp_path, "fitnet"))
    assert "invalid choice: 'fitnet'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"method must be one of \('vanilla', 'kd', 'letkd1', 'letkd2'\)"):
        DistillConfig(method="fitnet")
