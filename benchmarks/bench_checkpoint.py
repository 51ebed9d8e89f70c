"""Checkpoint overhead: gsp_hub's crash-safe save vs accelerate's plain ``save_state``, side by side in one process.

For each model (the default job's ``metric_net`` on ``test_resnet``, and ``gsp_resnet50``) a real run is set up on
the embedded data and saves one untimed checkpoint; then, interleaved ``--repeats`` times (alternating which goes
first, ``os.sync()`` before each, so that neither inherits the other's unwritten pages; each kind keeps one
checkpoint on disk, as a run with ``--checkpoints-total-limit 1`` does; memory warmed first, see
:func:`warm_memory`):

* plain: ``accelerator.save_state(folder)`` + the run's own state files, straight into the folder (what the engine
  did before: a kill leaves a partial folder under the final name);
* safe: ``Trainer.save_checkpoint()`` into a ``.partial`` folder — the time the training thread waits — then
  ``trainer.checkpoints.wait()`` for the rest, which a run does in the background while it trains on (fsync of every
  file, SHA-256 manifest, rename, pruning). Their sum is the whole crash-safe save done in one thread, as every save
  was before the background finish (issue 19's first measurement).

It prints the median seconds of each, the ratios to the plain save, and both as a share of one epoch (the median
step time of a few real steps times the steps of an epoch). Goals (issue 19): ratio <= 1.2 and <= 2 % of an epoch.
The background part is not free in a real run: it competes with the training steps for the CPU and the disk.

    python benchmarks/bench_checkpoint.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gsp_hub.train import BatchOutputs, Callback, MetricLearningTask, TrainConfig, Trainer
from gsp_hub.train.checkpoints import MANIFEST_NAME, latest_checkpoint
from gsp_hub.train.state import save_training_state

MODELS = {
    "default job (metric_net / test_resnet)": {},
    "gsp_resnet50": {"model": "gsp_resnet50", "embed_dim": 512, "backbone_kwargs": {}, "batch_size": 48},
}


class StepTimes(Callback):
    """The wall time of every training batch."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch(self, outputs: BatchOutputs) -> None:
        self.stamps.append(time.perf_counter())


def warm_memory(scratch: Path, bytes_: int) -> None:
    """Write and delete ``bytes_`` of zeros: on a virtual machine, memory the guest has never touched is slow to
    write the first time (the host backs it page by page; 296 MB took 0.6-1.6 s instead of 0.07 s here), so without
    this the first saves measure the host, whichever kind they are."""
    path = scratch / "warm.bin"
    block = bytes(64 * 1024 * 1024)
    with open(path, "wb") as handle:
        for _ in range(max(1, bytes_ // len(block))):
            handle.write(block)
    os.sync()
    path.unlink()


def measure(name: str, overrides: dict, repeats: int, steps: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        timer = StepTimes()
        config = TrainConfig(output_dir=str(Path(scratch) / "run"), eval_at_start=False, verify_images=False,
                             max_steps=steps + 1, checkpoints_total_limit=1, **overrides)
        trainer = Trainer(MetricLearningTask(config), callbacks=[timer])
        trainer.train_one_epoch()
        step_seconds = statistics.median(b - a for a, b in zip(timer.stamps, timer.stamps[1:]))
        epoch_seconds = step_seconds * trainer.steps_per_epoch
        plain, blocking, whole = [], [], []

        def plain_save(repeat: int) -> None:
            folder = Path(scratch) / f"plain_{repeat}"
            started = time.perf_counter()
            trainer.accelerator.save_state(output_dir=str(folder))
            save_training_state(folder, trainer._stateful())
            plain.append(time.perf_counter() - started)
            shutil.rmtree(folder)  # each kind keeps one checkpoint on disk between saves

        def safe_save(repeat: int) -> None:
            started = time.perf_counter()
            trainer.save_checkpoint()
            blocking.append(time.perf_counter() - started)
            trainer.checkpoints.wait()
            whole.append(time.perf_counter() - started)

        trainer.save_checkpoint()  # untimed: the checkpoint a run already has when it saves the next one
        trainer.checkpoints.wait()
        size = sum(path.stat().st_size for path in latest_checkpoint(trainer.checkpoints.checkpoints_dir).iterdir()
                   if path.name != MANIFEST_NAME) / 1e6
        warm_memory(Path(scratch), bytes_=int(4 * size * 1e6))
        for repeat in range(repeats):  # alternate which kind goes first; each starts with nothing left to write back
            for save in ((plain_save, safe_save) if repeat % 2 == 0 else (safe_save, plain_save)):
                os.sync()
                save(repeat)
        plain_median = statistics.median(plain)
        print(f"{name}: checkpoint {size:.1f} MB; epoch ~{epoch_seconds:.1f} s ({trainer.steps_per_epoch} steps x "
              f"{step_seconds:.3f} s); plain save {plain_median:.3f} s", flush=True)
        for label, seconds in (("crash-safe save, training thread", blocking),
                               ("crash-safe save, all in one thread", whole)):
            median = statistics.median(seconds)
            print(f"  {label}: {median:.3f} s -> ratio {median / plain_median:.2f}, "
                  f"{100 * median / epoch_seconds:.2f} % of an epoch", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved saves of each kind (default 5)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps for the epoch estimate")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads")
    for name, overrides in MODELS.items():
        measure(name, overrides, args.repeats, args.steps)


if __name__ == "__main__":
    main()
