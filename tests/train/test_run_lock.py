"""One run per output folder: a second run meets the first one's lock before it writes anything, and a lock never
outlives its process (a killed run can be resumed at once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from train_fixtures import tiny_config

from gsp_hub.cli import main
from gsp_hub.train import train
from gsp_hub.train.run_lock import RUN_LOCK_NAME, RunFolderInUse, hold_run_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="runs are not locked without fcntl")


def hold_in_child(folder: Path) -> subprocess.Popen:
    """A child process that takes the run lock of ``folder`` and sleeps; returns once the lock is held."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from gsp_hub.train.run_lock import hold_run_lock
        with hold_run_lock(Path({str(folder)!r})):
            print("held", flush=True)
            time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_held_lock_names_its_holder_and_is_released_on_exit(tmp_path) -> None:
    folder = tmp_path / "run"
    with hold_run_lock(folder):
        assert (folder / RUN_LOCK_NAME).read_text() == str(os.getpid())
        with pytest.raises(RunFolderInUse, match=rf"--output-dir {folder} is in use by another gsp_hub run "
                                                 rf"\(process {os.getpid()}\); wait for it to end"):
            with hold_run_lock(folder):
                pass
        assert (folder / RUN_LOCK_NAME).read_text() == str(os.getpid())  # the refused run left the holder's PID
    with hold_run_lock(folder):  # released: the next run takes it
        pass


def test_the_lock_of_a_killed_run_is_free_at_once(tmp_path) -> None:
    folder = tmp_path / "run"
    child = hold_in_child(folder)
    with pytest.raises(RunFolderInUse, match=rf"process {child.pid}\)"):
        with hold_run_lock(folder):
            pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    with hold_run_lock(folder):
        pass


def test_a_second_run_on_a_folder_in_use_stops_before_writing(tmp_path, tiny_dataset, capsys) -> None:
    folder = tmp_path / "run"
    child = hold_in_child(folder)
    try:
        with pytest.raises(RunFolderInUse):
            train(tiny_config(folder, tiny_dataset, max_steps=1))
        assert main(["train", "--dataset", str(tiny_dataset), "--output-dir", str(folder), "--max-steps", "1",
                     "--backbone", "test_vit", "--backbone-kwargs", "img_size=32", "patch_size=8", "--img-size", "32",
                     "--embed-dim", "16", "--pool-kwargs", "num_prototypes=4", "--batch-size", "12",
                     "--m-per-class", "4"]) == 2
        assert f"is in use by another gsp_hub run (process {child.pid})" in capsys.readouterr().err
        assert [path.name for path in folder.iterdir()] == [RUN_LOCK_NAME]  # nothing of a run was written
    finally:
        child.kill()
        child.wait()
    summary = train(tiny_config(folder, tiny_dataset, max_steps=1))  # the holder gone, the same run goes through
    assert summary["steps"] == 1
