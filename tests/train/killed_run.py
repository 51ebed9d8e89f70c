"""Child process of test_checkpoint_faults: a tiny run killed (SIGKILL) while writing the k-th file of its second
checkpoint, leaving that file truncated. Usage: killed_run.py DATASET RUN_DIR K"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_checkpoint_faults import STEPS, BrokenSave  # noqa: E402
from train_fixtures import tiny_config  # noqa: E402

from gsp_hub.train import train  # noqa: E402


def kill(path: Path) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    dataset, run, fail_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    BrokenSave(run / "checkpoints", fail_at, kill).install(pytest.MonkeyPatch())
    train(tiny_config(run, dataset, **STEPS))
