"""The GPU-path options of a run: DataLoader pinning and persistent workers set by the device, ``--compile``, and
the throughput each logged step reports."""

from __future__ import annotations

import logging
import re

import pytest
import safetensors.torch
import torch
import yaml
from train_fixtures import tiny_config

from gsp_hub.cli import build_parser
from gsp_hub.hub import from_pretrained
from gsp_hub.train import BatchOutputs, Callback, MetricLearningTask, Trainer, train
from gsp_hub.train.commands import config_from_args
from gsp_hub.train.data import loader_options


def test_loader_options_pin_memory_for_cuda_only_and_keep_workers_alive() -> None:
    assert loader_options(0, "cpu") == {"num_workers": 0, "persistent_workers": False, "pin_memory": False}
    assert loader_options(2, torch.device("cpu")) == {"num_workers": 2, "persistent_workers": True,
                                                      "pin_memory": False}
    assert loader_options(2, torch.device("cuda", 1)) == {"num_workers": 2, "persistent_workers": True,
                                                          "pin_memory": True}


def test_the_train_and_evaluation_loaders_of_a_cpu_run_keep_workers_and_do_not_pin(tmp_path, tiny_dataset) -> None:
    trainer = Trainer(MetricLearningTask(tiny_config(tmp_path / "run", tiny_dataset, num_workers=1,
                                                     validation_fraction=0.1, batch_size=12)))
    train_loader = trainer.task.train_batches(0, skip=0, num_replicas=1, rank=0)
    for loader in (train_loader, trainer.test_loader, trainer.validation_loader):
        assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (1, True, False)
    trainer.accelerator.end_training()


def test_compile_is_parsed_and_recorded_and_off_by_default(tmp_path) -> None:
    def parsed(*flags: str) -> bool:
        return config_from_args(build_parser().parse_args(["train", *flags])).compile

    assert (parsed(), parsed("--compile"), parsed("--no-compile")) == (False, True, False)
    config = tiny_config(tmp_path, "unused", compile=True)
    assert yaml.safe_load(config.save(tmp_path).read_text())["compile"] is True


class LossRecorder(Callback):
    """Keeps the loss of every training batch."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch(self, outputs: BatchOutputs) -> None:
        self.losses.append(outputs.loss)


@pytest.mark.slow  # torch.compile with an empty cache: about 2 minutes on 2 CPU cores
def test_a_compiled_run_trains_like_the_eager_run_and_saves_the_same_parameter_names(tmp_path, tiny_dataset) -> None:
    """2 steps each: the compiled network runs through torch.compile (dynamo compiled graphs), its losses are the
    eager run's (the second one after an optimizer step) up to inductor's reordering of float operations, and its
    checkpoint has the eager run's parameter names. About 2 minutes with a cold inductor cache, 30 s warm."""
    torch._dynamo.reset()
    losses, parameter_names = {}, {}
    for compiled in (False, True):
        output, recorder = tmp_path / f"compile_{compiled}", LossRecorder()
        summary = train(tiny_config(output, tiny_dataset, compile=compiled, max_steps=2, epochs=1), [recorder])
        assert summary["steps"] == 2
        losses[compiled] = recorder.losses
        parameter_names[compiled] = safetensors.torch.load_file(
            str(output / "checkpoints" / "checkpoint_0" / "model.safetensors")).keys()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    torch._dynamo.reset()
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    assert parameter_names[True] == parameter_names[False]


def test_a_channels_last_run_exports_its_trained_weights(tmp_path, tiny_dataset) -> None:
    """The conv weights of a channels-last model are not contiguous; the export stores them all the same."""
    output = tmp_path / "run"
    summary = train(tiny_config(output, tiny_dataset, channels_last=True, max_steps=2, epochs=1))
    assert summary["steps"] == 2
    checkpoint = safetensors.torch.load_file(str(output / "checkpoints" / "checkpoint_0" / "model.safetensors"))
    exported = from_pretrained(output / "model").state_dict()
    assert exported.keys() == {name.removeprefix("model.") for name in checkpoint}
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, checkpoint[f"model.{name}"], rtol=0, atol=0, msg=name)


def test_each_logged_step_reports_its_throughput(tmp_path, tiny_dataset, caplog) -> None:
    caplog.set_level(logging.INFO)
    train(tiny_config(tmp_path / "run", tiny_dataset, max_steps=3, epochs=1, log_every=1))
    lines = re.findall(r"step (\d+): loss [\d.]+, lr [\d.e+-]+, ([\d.]+) s per step, ([\d.]+) images/s, "
                       r"data ([\d.]+) s per step", caplog.text)
    assert [int(step) for step, _, _, _ in lines] == [1, 2, 3]
    for _, seconds, images_per_second, data_seconds in lines:  # 16 images per step (seconds rounded to 1 ms)
        assert float(images_per_second) == pytest.approx(16 / float(seconds), rel=0.02)
        assert 0 <= float(data_seconds) <= float(seconds) + 0.001  # the wait for data is part of the step
