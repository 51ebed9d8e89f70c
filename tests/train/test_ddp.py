"""Two gloo processes (accelerate launch --multi_gpu on the CPU) against one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import safetensors.torch
import torch

SCRIPT = Path(__file__).with_name("ddp_step.py")
LOSSES = ["ms", "contrastive", "proxy_anchor", "xbm"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(num_processes: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), *args]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def check(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, f"exit {process.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}"


def test_two_processes_match_one_process_loss_gradients_prototypes(tmp_path):
    single = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path / "one"), *LOSSES], env=environment(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    double = subprocess.Popen(accelerate_launch(2, str(SCRIPT), str(tmp_path / "two"), *LOSSES), env=environment(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    check(single)
    check(double)
    reference = safetensors.torch.load_file(str(tmp_path / "one" / "rank0.safetensors"))
    for rank in range(2):
        result = safetensors.torch.load_file(str(tmp_path / "two" / f"rank{rank}.safetensors"))
        assert result.keys() == reference.keys()
        for key, expected in reference.items():
            torch.testing.assert_close(result[key], expected, rtol=1e-5, atol=1e-5, msg=f"rank {rank}: {key}")
    for loss in LOSSES:
        # the checks are not vacuous: ZSR ran in step 2, the prototypes were initialised, the backbone got gradients
        assert any(key.startswith(f"{loss}/step1/grad/loss.regularizer") for key in reference)
        assert f"{loss}/step1/grad/model.backbone.patch_embed.proj.weight" in reference
        assert not any(key.startswith(f"{loss}/step0/grad/loss.regularizer") for key in reference)
    assert reference["xbm/queue_idx"].item() == 32  # both steps' global batches (2 x 16) are in the memory


def test_cli_train_two_processes(tmp_path, tiny_dataset):
    """`accelerate launch --multi_gpu --num_processes 2 -m gsp_hub train ...` runs, evaluates and exports."""
    output = tmp_path / "run"
    command = accelerate_launch(
        2, "-m", "gsp_hub", "train", "--dataset", str(tiny_dataset), "--output-dir", str(output),
        "--backbone", "test_vit", "--backbone-kwargs", "img_size=32", "patch_size=8", "--embed-dim", "16",
        "--pool-kwargs", "num_prototypes=4", "memory_size=32", "--batch-size", "12", "--m-per-class", "4",
        "--epochs", "1", "--eval-batch-size", "32", "--loss", "xbm", "--loss-kwargs", "memory_size=64",
    )
    process = subprocess.Popen(command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, f"stdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}"
    summary = json.loads((output / "metrics.json").read_text())
    assert summary["steps"] == 2  # 48 training images (classes 0-2) / (12 per process x 2 processes) = 2 steps
    assert "2 processes" in err
    assert (output / "model" / "model.safetensors").is_file()
    assert out.count("model chosen by") == 1  # the table is printed by the main process only
