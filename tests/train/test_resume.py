"""Kill-and-resume: N steps straight == N/2 steps, stop, resume to N — bit-identical on the CPU."""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import torch
from train_fixtures import tiny_config

from gsp_hub.train import TrainConfig, train


def final_checkpoint(output: Path) -> Path:
    checkpoints = sorted((output / "checkpoints").iterdir(), key=lambda path: int(path.name.split("_")[1]))
    return checkpoints[-1]


def load_all(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Model weights, the gsp_hub state (ZSR class embeddings, XBM memory, ...) and the AdamW moments."""
    tensors = safetensors.torch.load_file(str(checkpoint / "model.safetensors"))
    state = safetensors.torch.load_file(str(checkpoint / "gsp_hub_state.safetensors"))
    tensors.update({f"state/{key}": value for key, value in state.items()})
    optimizer = torch.load(checkpoint / "optimizer.bin", weights_only=True)
    for index, state in optimizer["state"].items():
        for name, value in state.items():
            tensors[f"optimizer/{index}/{name}"] = torch.as_tensor(value)
    return tensors


def test_stop_and_resume_mid_epoch_is_bit_exact(tmp_path, tiny_dataset):
    # 5 steps per epoch: the stop at step 3 and the end at step 8 both fall inside an epoch. XBM and ZSR make the
    # loss module stateful; the prototype warm-up ends at step 1; augmentation is random (timm crop + flip).
    common = dict(loss="xbm", loss_kwargs={"memory_size": 40}, epochs=2)
    straight = tiny_config(tmp_path / "straight", tiny_dataset, max_steps=8, **common)
    train(straight)

    stopped = tiny_config(tmp_path / "resumed", tiny_dataset, max_steps=3, num_workers=2, **common)
    first = train(stopped)
    assert first["steps"] == 3
    at_stop = load_all(final_checkpoint(tmp_path / "resumed"))
    resumed = TrainConfig.from_yaml(tmp_path / "resumed" / "train_config.yaml", resume="latest", max_steps=8,
                                    num_workers=0)
    second = train(resumed)
    assert second["steps"] == 8 and second["epochs"] == 1.6

    expected = load_all(final_checkpoint(tmp_path / "straight"))
    result = load_all(final_checkpoint(tmp_path / "resumed"))
    assert expected.keys() == result.keys()
    assert "state/loss/regularizer.class_embeddings" in expected and "state/loss/base_loss.embedding_memory" in expected
    for key in expected:
        assert torch.equal(expected[key], result[key]), key
    assert not torch.equal(expected["model.pool.prototypes"], at_stop["model.pool.prototypes"])  # it trained on
