"""A timm name that does not exist is refused with the closest registered names, naming the argument it came in."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm

from gsp_hub.cli import main
from gsp_hub.models.registry import unknown_model_error
from gsp_hub.train.config import TrainConfig
from gsp_hub.train.metric_learning import create_model


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(ValueError, match=r"^--backbone 'resnet5' is not a timm architecture; did you mean 'resnet50'"):
        create_model(TrainConfig(backbone="resnet5"))


def test_unknown_model_suggests_gsp_hub_names() -> None:
    with pytest.raises(ValueError, match=r"^--model 'gsp_resnet5' is not a timm architecture; did you mean "
                                         r"'gsp_resnet50' or 'gsp_resnet18'"):
        create_model(TrainConfig(model="gsp_resnet5"))


def test_backbone_of_the_python_api_is_named_as_its_argument() -> None:
    with pytest.raises(ValueError, match=r"^backbone 'resnt18' is not a timm architecture; did you mean 'resnet18'"):
        timm.create_model("metric_net", backbone="resnt18")


def test_a_name_close_to_nothing_gets_no_suggestion() -> None:
    message = str(unknown_model_error("qwertyuiop.a1_in1k", "--model"))
    assert message.startswith("--model 'qwertyuiop.a1_in1k' is not a timm architecture; no registered name is close")


def test_train_command_reports_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--backbone", "resnt18", "--output-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gsp-hub train: error: --backbone 'resnt18' is not a timm architecture; did you mean "
                            "'resnet18'") and error.count("\n") == 1


def test_an_unknown_backbone_is_reported_before_any_data_is_read(tmp_path: Path) -> None:
    from gsp_hub.train import train

    config = TrainConfig(backbone="resnt18", dataset=str(tmp_path / "no_such_data"), output_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="--backbone 'resnt18' is not a timm architecture"):
        train(config)  # the missing data set would raise FileNotFoundError if it were read first
    assert not (tmp_path / "run").exists()
