"""Two training steps of the gsp_hub loop's building blocks on a fixed global batch; run by test_ddp.py.

Started either as one plain process or with ``accelerate launch --multi_gpu --num_processes 2`` (two gloo processes).
Each of the W processes takes its contiguous 1/W of the same 16-image global batch. Step 1 (prototypes not yet
initialised: base loss only) fills the GSP warm-up memory, which initialises the prototypes; step 2 adds ZSR.
Each process writes ``rank<r>.safetensors``: the losses, every gradient after ``accelerator.backward`` (DDP-averaged
for the model), the prototypes and, for XBM, the memory.

usage: ddp_step.py OUTPUT_DIR LOSS [LOSS ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import safetensors.torch
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from gsp_hub.train import TrainConfig
from gsp_hub.train.callbacks import PrototypeInitCallback
from gsp_hub.train.metric_learning import EmbeddingsAndAttributes, compute_loss, create_loss_module, create_model

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import TINY_MODEL


def main(output_dir: Path, losses: list[str]) -> None:
    accelerator = Accelerator(cpu=True)
    world, rank = accelerator.num_processes, accelerator.process_index
    generator = torch.Generator().manual_seed(123)
    images = torch.randn(16, 3, 32, 32, generator=generator)
    labels = torch.arange(4).repeat_interleave(2).repeat(2)  # 4 classes x 4 images; each half holds all 4 classes
    local = slice(rank * 16 // world, (rank + 1) * 16 // world)
    results: dict[str, torch.Tensor] = {}
    for loss_name in losses:
        loss_kwargs = {"memory_size": 48} if loss_name == "xbm" else {}
        config = TrainConfig(**TINY_MODEL, loss=loss_name, loss_kwargs=loss_kwargs)
        set_seed(0)
        model = create_model(config)
        loss_fn = create_loss_module(config, 4, model)
        callback = PrototypeInitCallback(model.pool)
        network = accelerator.prepare(EmbeddingsAndAttributes(model))
        for step in range(2):
            embeddings, attributes = network(images[local])
            attributes = attributes if bool(model.pool.initialized) else None
            terms, outputs = compute_loss(loss_fn, embeddings, labels[local], attributes, step)
            accelerator.backward(terms.total)
            results[f"{loss_name}/step{step}/loss"] = terms.total.detach()
            named = [(f"model.{n}", p) for n, p in model.named_parameters()]
            named += [(f"loss.{n}", p) for n, p in loss_fn.named_parameters()]
            for name, parameter in named:
                if parameter.grad is not None:
                    results[f"{loss_name}/step{step}/grad/{name}"] = parameter.grad.detach().clone()
                    parameter.grad = None
            callback.on_train_batch(outputs)
        results[f"{loss_name}/prototypes"] = model.pool.prototypes.detach().clone()
        if loss_name == "xbm":
            results["xbm/memory"] = loss_fn.base_loss.embedding_memory.detach().clone()
            results["xbm/queue_idx"] = torch.tensor(loss_fn.base_loss.queue_idx)
        accelerator.free_memory()
    output_dir.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(results, str(output_dir / f"rank{rank}.safetensors"))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
