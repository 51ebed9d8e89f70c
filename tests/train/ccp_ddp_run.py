"""A short CCP run of the real training loop with a forced projection; run by test_xml_ccp_training.py.

Started with ``accelerate launch --multi_gpu --num_processes 2`` (two gloo processes). Each process writes
``rank<r>.safetensors``: its proxies, its model weights, its optimizer state of the proxies and the schedule round.

usage: ccp_ddp_run.py DATASET OUTPUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import safetensors.torch
import torch

from gsp_hub.train import MetricLearningTask, Trainer

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import WITH_VALIDATION, tiny_config

# patience 1 with min_delta 1: the first evaluation improves (best = -inf), the second cannot, so it projects.
FORCED_PLATEAU = {"patience": 1, "min_delta": 1.0}


def main(dataset: Path, output_dir: Path) -> None:
    config = tiny_config(output_dir / "run", dataset, loss="ccp", pool="avg", pool_kwargs={}, epochs=2,
                         ccp_kwargs=FORCED_PLATEAU, **WITH_VALIDATION)
    trainer = Trainer(MetricLearningTask(config))
    trainer.run()
    ccp_loss = trainer.task.loss_fn.base_loss
    callback = trainer.callbacks[-1]
    rank = trainer.accelerator.process_index
    results = {f"model/{name}": value.detach().clone() for name, value in trainer.model.state_dict().items()}
    results["proxies"] = ccp_loss.proxies.detach().clone()
    results["round"] = torch.tensor(callback.schedule.round)
    results["steps"] = torch.tensor(trainer.state.step)
    results.update({f"proxy_state/{key}": torch.as_tensor(value).clone()
                    for key, value in trainer.optimizer.state[ccp_loss.proxies].items()})
    output_dir.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(results, str(output_dir / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
