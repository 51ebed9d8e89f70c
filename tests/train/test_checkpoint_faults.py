"""Fault injection: a checkpoint save that fails or is killed at any of its files never costs the run its progress.

The run saves every 2 steps; the save at step 4 is broken at its k-th file (a truncated file, then an injected
ENOSPC, or a real SIGKILL in a child process). ``--resume latest`` then restarts from the complete checkpoint of step
2 and ends bit-identical to a run that was never broken. The last file, the manifest, is written by the background
thread that completes a checkpoint while the run trains on: its failures must surface as well.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import accelerate.checkpointing
import pytest
import safetensors.torch
import torch
from train_fixtures import tiny_config

import gsp_hub.train.checkpoints
import gsp_hub.train.state
from gsp_hub.train import BatchOutputs, Callback, TrainConfig, train
from gsp_hub.train.checkpoints import CheckpointError, checkpoint_numbers
from gsp_hub.train.run_lock import RUN_LOCK_NAME

HERE = Path(__file__).resolve().parent
KILLED_IN = "killed_in_thread.txt"  # killed_run.py writes the name of the thread it was killed in, beside the run
FILES_PER_CHECKPOINT = 7  # model, optimizer, scheduler, RNG states, run state (tensors, JSON), manifest
STEPS = dict(epochs=1, max_steps=4, save_every=2)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    checkpoints = run / "checkpoints"
    return safetensors.torch.load_file(str(checkpoints / f"checkpoint_{max(checkpoint_numbers(checkpoints))}"
                                           / "model.safetensors"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_dataset) -> dict[str, torch.Tensor]:
    run = tmp_path_factory.mktemp("straight") / "run"
    train(tiny_config(run, tiny_dataset, **STEPS))
    return final_weights(run)


class BrokenSave:
    """Breaks the ``fail_at``-th file written into a partial checkpoint folder of ``checkpoints_dir`` once ``skip``
    complete checkpoints exist: writes a truncated file, then calls ``fail(path)`` (raise ENOSPC, or kill)."""

    # (module, writer, index of its path argument): every writer of a checkpoint's files
    WRITERS = [(accelerate.checkpointing, "save", 1), (torch, "save", 1), (safetensors.torch, "save_file", 1),
               (gsp_hub.train.state, "atomic_write_text", 0), (gsp_hub.train.checkpoints, "write_json", 0)]

    def __init__(self, checkpoints_dir: Path, fail_at: int, fail: Callable[[Path], None], skip: int = 1) -> None:
        self.checkpoints_dir, self.fail_at, self.fail, self.skip = checkpoints_dir, fail_at, fail, skip
        self.files: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for module, name, path_argument in self.WRITERS:
            monkeypatch.setattr(module, name, self.wrap(getattr(module, name), path_argument))

    def wrap(self, original: Callable, path_argument: int) -> Callable:
        def writer(*args, **kwargs):
            path = Path(args[path_argument])
            counted = (path.parent.name.endswith(".partial") and str(path) not in self.files  # nested writers once
                       and len(checkpoint_numbers(self.checkpoints_dir)) >= self.skip)
            if counted:
                self.files.append(str(path))
                if len(self.files) == self.fail_at:
                    path.write_bytes(b"\x00" * 17)  # the truncated file a killed writer leaves
                    self.fail(path)
            return original(*args, **kwargs)

        return writer


def raise_enospc(path: Path) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def raise_eio(path: Path) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))


@pytest.mark.parametrize("fail_at", range(1, FILES_PER_CHECKPOINT + 1))
def test_a_failed_save_at_any_file_resumes_from_the_previous_checkpoint(tmp_path, tiny_dataset, straight, fail_at,
                                                                        monkeypatch):
    run = tmp_path / "run"
    broken = BrokenSave(run / "checkpoints", fail_at, raise_enospc)
    broken.install(monkeypatch)
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*checkpoint_1 \(No space left on device"):
        train(tiny_config(run, tiny_dataset, **STEPS))
    assert len(broken.files) == fail_at
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["checkpoint_0"]  # partial folder gone
    monkeypatch.undo()
    train(TrainConfig.from_yaml(run / "train_config.yaml", resume="latest"))
    resumed = final_weights(run)
    assert resumed.keys() == straight.keys()
    for name, value in straight.items():
        assert torch.equal(resumed[name], value), name


@pytest.mark.parametrize("fail_at", [1, FILES_PER_CHECKPOINT])
def test_with_one_checkpoint_kept_the_old_one_is_deleted_only_after_the_new_one_is_complete(
        tmp_path, tiny_dataset, straight, fail_at, monkeypatch):
    run = tmp_path / "run"
    broken = BrokenSave(run / "checkpoints", fail_at, raise_enospc)
    broken.install(monkeypatch)
    with pytest.raises(CheckpointError):
        train(tiny_config(run, tiny_dataset, checkpoints_total_limit=1, **STEPS))
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["checkpoint_0"]
    monkeypatch.undo()
    train(TrainConfig.from_yaml(run / "train_config.yaml", resume="latest"))
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["checkpoint_1"]  # limit 1 again
    resumed = final_weights(run)
    assert all(torch.equal(resumed[name], value) for name, value in straight.items())


@pytest.mark.parametrize(("fail_at", "thread"), [(2, "MainThread"), (FILES_PER_CHECKPOINT, "gsp_hub-checkpoint")])
def test_a_process_killed_while_writing_resumes_bit_identically(tmp_path, tiny_dataset, straight, fail_at, thread):
    """A real SIGKILL in a child process, in the middle of the second checkpoint's optimizer file (written by the
    training thread) or of its manifest (written by the background thread, while the run trains on)."""
    run = tmp_path / "run"
    # the child computes the first steps, this process the rest: both must use the same number of threads, or the
    # float reductions differ in their last bits
    same_threads = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    child = subprocess.run([sys.executable, str(HERE / "killed_run.py"), str(tiny_dataset), str(run), str(fail_at)],
                           capture_output=True, text=True, timeout=600, cwd=HERE, env=same_threads)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert (tmp_path / KILLED_IN).read_text().startswith(thread)
    partial = run / "checkpoints" / ".checkpoint_1.partial"
    assert partial.is_dir() and (run / "checkpoints" / "checkpoint_0").is_dir()
    assert not (run / "checkpoints" / "checkpoint_1").exists()
    train(TrainConfig.from_yaml(run / "train_config.yaml", resume="latest"))
    resumed = final_weights(run)
    assert all(torch.equal(resumed[name], value) for name, value in straight.items())
    assert not partial.exists()


def test_a_failed_background_finish_names_its_checkpoint_at_the_end_of_the_run(tmp_path, tiny_dataset, straight,
                                                                              monkeypatch):
    run = tmp_path / "run"
    BrokenSave(run / "checkpoints", FILES_PER_CHECKPOINT, raise_eio).install(monkeypatch)
    with pytest.raises(CheckpointError, match=r"cannot complete checkpoint .*checkpoint_1 \(OSError: .*Input/output"):
        train(tiny_config(run, tiny_dataset, **STEPS))
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["checkpoint_0"]  # partial folder gone
    assert not (run / "metrics.json").exists()
    monkeypatch.undo()
    train(TrainConfig.from_yaml(run / "train_config.yaml", resume="latest"))
    resumed = final_weights(run)
    assert all(torch.equal(resumed[name], value) for name, value in straight.items())


def test_a_failed_background_finish_stops_the_run_at_the_next_save(tmp_path, tiny_dataset, monkeypatch):
    run = tmp_path / "run"
    broken = BrokenSave(run / "checkpoints", FILES_PER_CHECKPOINT, raise_eio, skip=0)  # the first checkpoint's manifest
    broken.install(monkeypatch)
    with pytest.raises(CheckpointError, match=r"cannot complete checkpoint .*checkpoint_0 \(OSError"):
        train(tiny_config(run, tiny_dataset, **STEPS))
    assert len(broken.files) == FILES_PER_CHECKPOINT  # raised before the save at step 4 wrote anything
    assert not any((run / "checkpoints").iterdir())


class FailAtThirdBatch(Callback):
    """Raises in the training thread at the third batch, just after the checkpoint of step 2 was handed over."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch(self, outputs: BatchOutputs) -> None:
        self.batches += 1
        if self.batches == 3:
            raise RuntimeError("the training step failed")


def test_an_error_while_a_checkpoint_is_finishing_also_reports_the_failed_checkpoint(tmp_path, tiny_dataset,
                                                                                      monkeypatch):
    run = tmp_path / "run"
    BrokenSave(run / "checkpoints", FILES_PER_CHECKPOINT, raise_eio, skip=0).install(monkeypatch)
    with pytest.raises(RuntimeError, match="the training step failed") as raised:
        train(tiny_config(run, tiny_dataset, **STEPS), callbacks=[FailAtThirdBatch()])
    assert any(re.match(r"also: cannot complete checkpoint .*checkpoint_0 \(OSError", note)
               for note in getattr(raised.value, "__notes__", []))
    assert not any((run / "checkpoints").iterdir())


def test_a_flipped_byte_is_detected_by_name(tmp_path, tiny_dataset, caplog):
    run = tmp_path / "run"
    train(tiny_config(run, tiny_dataset, **STEPS))
    newest = run / "checkpoints" / "checkpoint_1"
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match its SHA-256"):
        train(TrainConfig.from_yaml(run / "train_config.yaml", resume=str(newest), max_steps=5))
    caplog.set_level("INFO")
    train(TrainConfig.from_yaml(run / "train_config.yaml", resume="latest", max_steps=5))
    assert f"skipping checkpoint {newest}: model.safetensors does not match its SHA-256" in caplog.text
    assert f"resumed from {run / 'checkpoints' / 'checkpoint_0'}: epoch 0, batch 2 of the epoch, step 2" in caplog.text
    assert json.loads((run / "metrics.json").read_text())["steps"] == 5


def test_overwrite_after_a_failed_run_leaves_nothing_of_the_old_run(tmp_path, tiny_dataset, monkeypatch):
    run = tmp_path / "run"
    train(tiny_config(run, tiny_dataset, **STEPS))
    assert (run / "model").is_dir() and (run / "metrics.json").is_file()
    BrokenSave(run / "checkpoints", 1, raise_enospc, skip=0).install(monkeypatch)
    with pytest.raises(CheckpointError):  # the new run fails at its first checkpoint
        train(tiny_config(run, tiny_dataset, overwrite=True, lr=0.5, **STEPS))
    assert sorted(path.name for path in run.iterdir() if path.name != RUN_LOCK_NAME) == [
        "checkpoints", "logs", "train_config.yaml"]  # the run lock is the folder's, not a run's output
    assert not any((run / "checkpoints").iterdir())
    monkeypatch.undo()
    # a run that failed before its first checkpoint does not block a retry (no --overwrite needed)
    summary = train(tiny_config(run, tiny_dataset, lr=0.5, **STEPS))
    assert summary["steps"] == 4
