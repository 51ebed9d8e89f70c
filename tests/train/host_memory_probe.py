"""Child process of test_host_memory (a fresh interpreter, so that the heap's history is this script's only): prints
a JSON object of page-fault and resident-memory measurements.
Usage: host_memory_probe.py settings | host_memory_probe.py run DATASET RUN_DIR reuse|no-reuse"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import tiny_config  # noqa: E402

from gsp_hub.train import BatchOutputs, Callback, MetricLearningTask, Trainer  # noqa: E402
from gsp_hub.train.host_memory import freed_memory_reused  # noqa: E402
from test_host_memory import BLOCK_PAGES  # noqa: E402


def page_faults_of_a_reallocated_block() -> int:
    """Minor page faults of writing a fresh 64 MB tensor right after freeing a 128 MB one. The freed block is the
    larger so that it holds the new one wherever the small allocations made between the two land in the heap (one
    of the same size fits only when none lands in the freed block's trailing slack: about half of the runs)."""
    freed = torch.ones(2 * BLOCK_PAGES * 1024)  # float32: 128 MB, above glibc's largest mmap threshold (32 MB)
    del freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(BLOCK_PAGES * 1024)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del block
    return faults


def resident_mb() -> float:
    """This process's resident memory now (MB)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def settings() -> dict[str, float]:
    """Faults of a reallocated block with glibc's defaults and inside :func:`freed_memory_reused`; resident memory
    around freeing 256 MB inside it and after it."""
    measured: dict[str, float] = {"faults_by_default": page_faults_of_a_reallocated_block()}
    with freed_memory_reused() as applied:
        measured["applied"] = applied
        measured["faults_inside"] = page_faults_of_a_reallocated_block()
        large = torch.ones(64 * 2**20)  # 256 MB
        measured["resident_holding_256_mb"] = resident_mb()
        del large
        measured["resident_after_freeing_inside"] = resident_mb()
    measured["resident_after_leaving"] = resident_mb()
    return measured


class ReallocationFaults(Callback):
    """The faults of a 64 MB block allocated right after freeing a 128 MB one, measured at every training step."""

    def __init__(self) -> None:
        self.faults: list[int] = []

    def on_train_batch(self, outputs: BatchOutputs) -> None:
        self.faults.append(page_faults_of_a_reallocated_block())


def run(dataset: Path, run_dir: Path, reuse: bool) -> dict[str, list[int]]:
    """The probe's faults at each of 5 steps of a tiny CPU run."""
    probe = ReallocationFaults()
    config = tiny_config(run_dir, dataset, max_steps=5, epochs=1, reuse_freed_memory=reuse)
    Trainer(MetricLearningTask(config), callbacks=[probe]).run()
    return {"faults_per_step": probe.faults}


if __name__ == "__main__":
    if sys.argv[1] == "settings":
        print(json.dumps(settings()))
    else:
        print(json.dumps(run(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "reuse")))
