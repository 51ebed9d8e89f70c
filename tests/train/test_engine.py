"""The run engine's public parts: user callbacks see every step and can stop the run; the LambdaLR schedule."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from train_fixtures import tiny_config

from gsp_hub.train import BatchOutputs, Callback, MetricLearningTask, Trainer, learning_rate_factor
from gsp_hub.train.engine import WaitTimer


class StepRecorder(Callback):
    """Records every batch's step and loss, and the learning rate the optimizer used; stops after ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.evaluations: list[int] = []

    def on_train_batch(self, outputs: BatchOutputs) -> bool:
        self.steps.append(outputs.step)
        self.losses.append(outputs.loss)
        return self.stop_at is not None and outputs.step + 1 >= self.stop_at

    def on_evaluate(self, metrics: dict[str, float], step: int) -> None:
        self.evaluations.append(step)


def test_a_user_callback_sees_every_step_and_can_stop_the_run(tmp_path, tiny_dataset):
    recorder = StepRecorder(stop_at=3)
    config = tiny_config(tmp_path / "run", tiny_dataset, epochs=3)  # 5 steps per epoch: 15 without the stop
    summary = Trainer(MetricLearningTask(config), callbacks=[recorder]).run()
    assert recorder.steps == [0, 1, 2] and all(math.isfinite(loss) for loss in recorder.losses)
    assert summary["steps"] == 3 and summary["last"]["step"] == 3 and recorder.evaluations == [3]
    written = json.loads((Path(config.output_dir) / "metrics.json").read_text())
    assert written["steps"] == 3 and (Path(config.output_dir) / "model" / "model.safetensors").is_file()


def test_a_callback_can_stop_after_an_evaluation(tmp_path, tiny_dataset):
    class StopAtFirstEvaluation(Callback):
        def on_evaluate(self, metrics: dict[str, float], step: int) -> bool:
            return step > 0

    config = tiny_config(tmp_path / "run", tiny_dataset, epochs=3)
    summary = Trainer(MetricLearningTask(config), callbacks=[StopAtFirstEvaluation()]).run()
    assert summary["steps"] == 5 and len(summary["history"]) == 1  # one epoch, evaluated once, then stopped


@pytest.mark.parametrize("scheduler", ["cosine", "constant"])
def test_the_learning_rate_follows_the_schedule_through_lambdalr(tmp_path, tiny_dataset, scheduler):
    class LearningRates(Callback):
        def __init__(self) -> None:
            self.rates: list[float] = []

        def on_train_batch(self, outputs: BatchOutputs) -> None:
            self.rates.append(self.optimizer.param_groups[0]["lr"])  # already the next step's rate

    recorder = LearningRates()
    config = tiny_config(tmp_path / "run", tiny_dataset, epochs=2, warmup_steps=3, scheduler=scheduler, lr=0.01)
    trainer = Trainer(MetricLearningTask(config), callbacks=[recorder])
    recorder.optimizer = trainer.optimizer
    first = trainer.optimizer.param_groups[0]["lr"]
    trainer.run()
    total = trainer.total_steps
    expected = [0.01 * learning_rate_factor(step, total, 3, scheduler) for step in range(total + 1)]
    assert [first, *recorder.rates] == pytest.approx(expected, rel=1e-12)


def test_the_wait_timer_counts_the_wait_for_each_item_not_the_work_between_items() -> None:
    """The loop's data time: 3 items that take 0.05 s each to arrive, 0.2 s of the consumer's work after each."""
    def slow_items():
        for item in range(3):
            time.sleep(0.05)
            yield item

    timer, seen = WaitTimer(), []
    for item in timer.timed(slow_items()):
        seen.append(item)
        time.sleep(0.2)
    assert seen == [0, 1, 2]
    assert 0.15 <= timer.seconds < 0.6  # 0.75 if the consumer's work were counted
