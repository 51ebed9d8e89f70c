"""Vanilla vs Hinton KD vs letKD on a CIFAR-10 slice: ResNet-56 teacher (shared weights) -> ResNet-20 from scratch.

A SHORT run (a few hundred steps on a few thousand images on a CPU), not the LeTKD recipe (240 epochs on the full
set): the numbers show that every method trains end to end under one schedule and how they compare that early,
not the paper's ranking. Every method gets the same data, seed, schedule (SGD Nesterov, lr 0.05, cosine over
``--steps``) and evaluation; the table gives the best and last top-1 on the test slice and the wall time.

    python benchmarks/bench_kd_cifar10.py                       # ~10 min on 2 quiet CPU cores
    python benchmarks/bench_kd_cifar10.py --steps 2000 --train-images 50000 --test-images 10000 --num-codes 4096
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["vanilla", "kd", "letkd1", "letkd2"])
    parser.add_argument("--steps", type=int, default=250, help="optimizer steps per method (default 250)")
    parser.add_argument("--train-images", type=int, default=4000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-codes", type=int, default=256, help="letKD penultimate codewords (paper: 4096)")
    parser.add_argument("--target-batches", type=int, default=0, help="letKD targets from N batches (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default=str(SHARED_DATA / "cifar10-jpeg"))
    parser.add_argument("--teacher-weights", default=str(SHARED_DATA / "cifar10-resnets" / "resnet56.safetensors"))
    parser.add_argument("--output-dir", default=None, help="keep the runs here (default: a temp folder)")
    args = parser.parse_args()

    from gsp_hub.train.distill import DistillConfig
    from gsp_hub.train.distillation import distill

    steps_per_epoch = args.train_images // args.batch_size
    epochs = math.ceil(args.steps / steps_per_epoch)
    root = Path(args.output_dir or tempfile.mkdtemp(prefix="bench_kd_"))
    rows, teacher_top1 = [], None
    for method in args.methods:
        started = time.perf_counter()
        summary = distill(DistillConfig(
            teacher="cifar_resnet56", teacher_weights=args.teacher_weights, student="cifar_resnet20", method=method,
            dataset=args.dataset, max_train_images=args.train_images, max_test_images=args.test_images,
            batch_size=args.batch_size, num_codes=args.num_codes, target_batches=args.target_batches,
            epochs=epochs, max_steps=args.steps, seed=args.seed, output_dir=str(root / method), overwrite=True,
            eval_teacher=teacher_top1 is None, log_every=25, cpu=True,
        ))
        teacher_top1 = teacher_top1 if teacher_top1 is not None else summary["teacher"]["top1"]
        rows.append((method, summary["best"]["top1"], summary["last"]["top1"], summary["steps"],
                     time.perf_counter() - started))

    print(f"\nSHORT RUN — CIFAR-10 JPEG slice: {args.train_images} train / {args.test_images} test images, "
          f"{args.steps} steps of {args.batch_size} ({epochs} epochs), seed {args.seed}, letKD K={args.num_codes}")
    print(f"teacher cifar_resnet56 (shared weights, frozen): top-1 {teacher_top1:.4f} on the same test images\n")
    print(f"{'method':<10}{'best top-1':>12}{'last top-1':>12}{'vs vanilla':>12}{'steps':>8}{'wall s':>9}")
    vanilla = next((best for method, best, *_ in rows if method == "vanilla"), None)
    for method, best, last, steps, seconds in rows:
        delta = f"{best - vanilla:+.4f}" if vanilla is not None else "-"
        print(f"{method:<10}{best:>12.4f}{last:>12.4f}{delta:>12}{steps:>8}{seconds:>9.0f}")
    print(f"\nruns kept in {root}")


if __name__ == "__main__":
    main()
