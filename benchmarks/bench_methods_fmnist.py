"""Retrieval quality of the metric-learning methods on the Fashion-MNIST zero-shot split (classes 0-4 train, 5-9 test).

Every method runs the real training loop (:func:`gsp_hub.train.train`) with the same backbone, image size, batch,
epochs, learning rate and seed on the embedded Fashion-MNIST subset; only the pooling and the loss differ:

* ``ms``        — average pooling, multi-similarity loss (the base loss);
* ``xml+ms``    — prototype pooling (``proto``), multi-similarity + the XML cross-batch prototype term;
* ``ccp``       — average pooling, CCP proxies (Proxy-Anchor, 8 per class, in-batch C1 term, k-center init, the
                  plateau projection schedule on test MAP@R);
* ``gsp+zsr``   — GSP pooling, multi-similarity + ZSR (the default `gsp-hub train` job's losses).

Printed: Recall@1 and MAP@R of the best evaluation on the test classes, and the training time.

    python benchmarks/bench_methods_fmnist.py                               # resnet18 @ 32 px, 2 epochs
    python benchmarks/bench_methods_fmnist.py --epochs 1 --max-steps 20     # a quick look (about 2-4 minutes)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

METHODS: dict[str, dict[str, Any]] = {
    "ms": {"pool": "avg", "loss": "ms"},
    "xml+ms": {"pool": "proto", "loss": "xml+ms"},
    "ccp": {"pool": "avg", "loss": "ccp"},
    "gsp+zsr": {"pool": "gsp", "loss": "ms"},
}


def run_method(name: str, args: argparse.Namespace, output_dir: Path) -> dict[str, Any]:
    """Train one method; returns its best evaluation and the wall time."""
    from gsp_hub.train import TrainConfig, train

    config = TrainConfig(  # data set, its 5 training classes and no augmentation pinned (not the defaults')
        **METHODS[name], dataset="fashion-mnist-subset", augment=False, validation_fraction=0.0,
        backbone=args.backbone, img_size=args.img_size, embed_dim=args.embed_dim,
        batch_size=args.batch_size, m_per_class=args.m_per_class, epochs=args.epochs, max_steps=args.max_steps,
        lr=args.lr, seed=args.seed, num_workers=args.workers, eval_at_start=False, verify_images=False,
        output_dir=str(output_dir / name.replace("+", "_")), checkpoints_total_limit=1,
    )
    started = time.perf_counter()
    summary = train(config)
    return {"best": summary["best"], "steps": summary["steps"], "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--m-per-class", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=0, help="stop every method after this many steps (0: none)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.backbone} @ {args.img_size} px, "
          f"D = {args.embed_dim}, batch {args.batch_size} ({args.m_per_class} per class), {args.epochs} epochs"
          f"{f' (at most {args.max_steps} steps)' if args.max_steps else ''}, lr {args.lr}, seed {args.seed}; "
          "embedded Fashion-MNIST subset, zero-shot split (train classes 0-4, test classes 5-9)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            result = run_method(name, args, Path(tmp))
            best = result["best"]
            rows.append(f"{name:<10} {best['recall@1']:>8.4f} {best['map@r']:>8.4f} {result['steps']:>6d} "
                        f"{result['seconds']:>8.1f}")
            print(rows[-1], flush=True)
    print(f"\n{'method':<10} {'R@1':>8} {'MAP@R':>8} {'steps':>6} {'seconds':>8}\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
