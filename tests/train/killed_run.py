"""Child process of test_checkpoint_faults: a tiny run killed (SIGKILL) while writing the k-th file of its second
checkpoint, leaving that file truncated; the name of the thread that wrote it goes to KILLED_IN beside RUN_DIR.
Usage: killed_run.py DATASET RUN_DIR K"""

from __future__ import annotations

import os
import signal
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_checkpoint_faults import KILLED_IN, STEPS, BrokenSave  # noqa: E402
from train_fixtures import tiny_config  # noqa: E402

from gsp_hub.train import train  # noqa: E402


def kill(marker: Path, path: Path) -> None:
    marker.write_text(threading.current_thread().name)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    dataset, run, fail_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    BrokenSave(run / "checkpoints", fail_at, partial(kill, run.parent / KILLED_IN)).install(pytest.MonkeyPatch())
    train(tiny_config(run, dataset, **STEPS))
