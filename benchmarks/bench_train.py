"""Training throughput: the full `gsp-hub train` step against a bare loop, and a GSP step against a GAP step.

For each model (``gsp_resnet18`` at 128 px, ``gsp_tf_efficientnet_lite0`` at 128 px by default), measured side by side
in one process, repetitions interleaved so that machine load affects both sides alike:

* **loop**: :meth:`gsp_hub.train.Trainer.train_one_epoch` as `gsp-hub train` runs it: PNG decoding and the
  resize + normalisation transform (no augmentation) of a ``datasets`` object (the embedded Fashion-MNIST subset,
  upsampled) in DataLoader workers,
  m-per-class sampling, accelerate, forward, multi-similarity + ZSR, backward, AdamW;
* **bare**: the same model, loss and optimizer on a pre-made tensor batch: forward + loss + backward + step;
* **GAP**: the bare step of the ``gap_*`` twin (same backbone, average pooling, no attributes hence no ZSR).

Targets (issue 4): loop >= 0.9x bare images/s; GSP step time <= 1.05x GAP step time.

    python benchmarks/bench_train.py                       # both models, batch 32, 128 px
    python benchmarks/bench_train.py --models gsp_resnet18 --steps 5 --repeats 3 --img-size 96
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gsp_hub.losses import GSPLoss
from gsp_hub.train import BatchOutputs, Callback, MetricLearningTask, TrainConfig, Trainer
from gsp_hub.train.metric_learning import EmbeddingsAndAttributes, create_loss_module, create_model, create_optimizer


def initialise_prototypes(model: torch.nn.Module) -> None:
    """Skip the warm-up so that every measured step includes ZSR (as after the first 1024 training images)."""
    pool = model.pool
    if hasattr(pool, "init_prototypes_"):
        pool.init_prototypes_(torch.randn(pool.memory_size, pool.dim))


class BareStep:
    """forward + loss + backward + AdamW step on one pre-made batch, nothing else."""

    def __init__(self, config: TrainConfig, num_classes: int) -> None:
        self.model = create_model(config)
        initialise_prototypes(self.model)
        self.network = EmbeddingsAndAttributes(self.model)
        self.loss_fn: GSPLoss = create_loss_module(config, num_classes, self.model)
        self.optimizer = create_optimizer(config, self.model, self.loss_fn)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        if config.channels_last:
            self.model.to(memory_format=memory_format)
        size = config.img_size
        self.images = torch.randn(config.batch_size, 3, size, size).to(memory_format=memory_format)
        classes = config.batch_size // config.m_per_class
        self.labels = torch.arange(classes).repeat_interleave(config.m_per_class)
        self.network.train()

    def run(self, steps: int) -> list[float]:
        """Seconds of each of ``steps`` steps."""
        seconds = []
        for _ in range(steps):
            started = time.perf_counter()
            embeddings, attributes = self.network(self.images)
            loss = self.loss_fn(embeddings, self.labels, attributes)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            seconds.append(time.perf_counter() - started)
        return seconds


class StepTimer(Callback):
    """Records the time after every training batch (a Callback, so the loop itself is unchanged)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch(self, outputs: BatchOutputs) -> None:
        self.stamps.append(time.perf_counter())


class LoopStep:
    """Steps of the real training loop (Trainer.train_one_epoch), timed per step by a callback."""

    def __init__(self, config: TrainConfig) -> None:
        self.timer = StepTimer()
        self.trainer = Trainer(MetricLearningTask(config), callbacks=[self.timer])
        initialise_prototypes(self.trainer.model)

    def run(self, steps: int) -> list[float]:
        """Seconds of each of ``steps`` consecutive steps after the first (worker start-up excluded)."""
        trainer = self.trainer
        if trainer.state.batch_in_epoch + steps + 1 > trainer.batches_per_epoch:
            trainer.state.epoch, trainer.state.batch_in_epoch = trainer.state.epoch + 1, 0  # stay inside an epoch
        trainer.config.max_steps = trainer.state.step + steps + 1
        self.timer.stamps = []
        trainer.train_one_epoch()
        return [b - a for a, b in zip(self.timer.stamps, self.timer.stamps[1:])]


def measure(model: str, args: argparse.Namespace, output_dir: Path) -> dict[str, float]:
    """Median seconds per step of the loop, the bare GSP step and the bare GAP step."""
    gap_model = model.replace("gsp_", "gap_", 1)
    common = dict(model=model, dataset="fashion-mnist-subset", augment=False, validation_fraction=0.0,
                  backbone_kwargs={}, img_size=args.img_size, batch_size=args.batch_size, m_per_class=args.m_per_class,
                  embed_dim=args.embed_dim, channels_last=args.channels_last,
                  epochs=1000, eval_at_start=False, log_every=10**9, verify_images=False)
    loop = LoopStep(TrainConfig(**common, num_workers=args.workers, output_dir=str(output_dir / model),
                                overwrite=True))
    num_classes = loop.trainer.splits.num_classes
    bare = BareStep(TrainConfig(**common), num_classes)
    gap = BareStep(TrainConfig(**{**common, "model": gap_model}), num_classes)
    times: dict[str, list[float]] = {"loop": [], "bare": [], "gap": []}
    for side in (bare, gap):  # warm-up: allocator and first-call overheads
        side.run(1)
    for _ in range(args.repeats):  # interleaved, so that load changes hit every side
        times["bare"] += bare.run(args.steps)
        times["gap"] += gap.run(args.steps)
        times["loop"] += loop.run(args.steps)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gsp_resnet18", "gsp_tf_efficientnet_lite0"])
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--m-per-class", type=int, default=8)
    parser.add_argument("--embed-dim", type=int, default=512, help="512: the named models' default")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed repetition")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (median reported)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="DataLoader workers of the training loop (default: half the cores; on 2 cores a second "
                        "worker competes with the model's threads: loop/bare 0.81 instead of 0.90 for lite0)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size}, {args.img_size} px, "
          f"channels_last={args.channels_last}, loop workers {args.workers}; median step of {args.repeats} x "
          f"{args.steps} steps")
    header = (f"{'model':<28} {'bare img/s':>10} {'loop img/s':>10} {'loop/bare':>9} {'GAP img/s':>9} "
              f"{'GSP/GAP step':>12}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            seconds = measure(model, args, Path(tmp))
            rate = {name: args.batch_size / value for name, value in seconds.items()}
            rows.append(f"{model:<28} {rate['bare']:>10.1f} {rate['loop']:>10.1f} {rate['loop'] / rate['bare']:>9.2f} "
                        f"{rate['gap']:>9.1f} {seconds['bare'] / seconds['gap']:>12.2f}")
            print(rows[-1], flush=True)
    print("\n" + header + "\n" + "\n".join(rows))
    print("targets: loop/bare >= 0.90, GSP/GAP step <= 1.05")


if __name__ == "__main__":
    main()
