"""Vanilla vs Hinton KD vs letKD on CIFAR-10 (JPEG), paired seeds: the fidelity rows of benchmarks/RESULTS.md.

Every (method, seed) is one `gsp-hub distill` run with the same recipe, data order and evaluation; only the loss
differs (and letKD's fresh KD layer). The recipe this CPU can afford is a FINE-TUNE, not the paper's 240 epochs
from scratch: the student starts from the shared CIFAR-10 ResNet-20 (trained on the original, lossless CIFAR-10)
and is adapted to the JPEG copy for ``--epochs`` epochs; the teacher is the shared ResNet-56, itself fine-tuned on
the JPEG train split first (``gsp-hub distill --method vanilla --student cifar_resnet56 --student-weights ...``).
Top-1 is measured on the whole JPEG test split before (``start``) and after (``last``) the fine-tune; no epoch is
chosen by the test split.

    python scripts/kd_fidelity.py --teacher-weights /work/cache/kd/teacher_r56_ft/model --seeds 0,1,2 \\
        --runs-dir /work/cache/kd/runs --out /tmp/kd/seeds012.json                       # ~20 min per seed, 1 thread
    python scripts/kd_fidelity.py --merge /tmp/kd/seeds012.json --merge /tmp/kd/seeds34.json \\
        --out benchmarks/kd_fidelity.json                                                 # the table only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gsp_hub.io import write_json
from gsp_hub.train.distill import METHODS, DistillConfig
from gsp_hub.train.distillation import distill
from gsp_hub.train.head_experiments import summarise

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KEYS = ("top1_start", "top1_last")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="vanilla,kd,letkd1",
                        help=f"comma-separated, from {METHODS}; the first is the reference of the paired differences")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds, the same for every method (paired)")
    parser.add_argument("--dataset", default=str(SHARED_DATA / "cifar10-jpeg"))
    parser.add_argument("--teacher", default="cifar_resnet56")
    parser.add_argument("--teacher-weights", default=str(SHARED_DATA / "cifar10-resnets" / "resnet56.safetensors"),
                        help="the teacher (a safetensors state_dict or a gsp_hub export folder)")
    parser.add_argument("--student", default="cifar_resnet20")
    parser.add_argument("--student-weights", default=str(SHARED_DATA / "cifar10-resnets" / "resnet20.safetensors"),
                        help="the student's starting weights ('' for a random init)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--num-codes", type=int, default=1024,
                        help="letKD penultimate codewords (paper: 4096, 4x slower per step on this CPU)")
    parser.add_argument("--target-batches", type=int, default=100,
                        help="letKD targets fitted on this many non-augmented train batches of 64 (0: all 50,000)")
    parser.add_argument("--max-train-images", type=int, default=0, help="a seeded subset, for a quick look (0: all)")
    parser.add_argument("--max-test-images", type=int, default=0, help="a seeded subset, for a quick look (0: all)")
    parser.add_argument("--runs-dir", default="runs/kd_fidelity", help="one distill run folder per (method, seed)")
    parser.add_argument("--out", default=None, help="JSON of every run and the summary")
    parser.add_argument("--merge", action="append", default=[], help="JSON of earlier runs to report with these")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


_RUN_ONLY_FIELDS = ("output_dir", "overwrite", "eval_teacher")  # may differ between a finished run and a new one
_LETKD_FIELDS = ("num_codes", "subclasses_per_class", "lda_dim", "alpha_pen", "alpha_inter", "target_batches")


def run(args: argparse.Namespace, method: str, seed: int, eval_teacher: bool) -> dict:
    """One fine-tune; top-1 before and after (and the teacher's, with ``eval_teacher``) and the wall time. A run
    folder that already holds a finished run of the same recipe is read instead of trained again (its wall time is
    then unknown: ``None``)."""
    started = time.time()
    run_dir = Path(args.runs_dir) / f"{method}_seed{seed}"
    config = DistillConfig(
        teacher=args.teacher, teacher_weights=args.teacher_weights, student=args.student,
        student_weights=args.student_weights, method=method, dataset=args.dataset,
        max_train_images=args.max_train_images, max_test_images=args.max_test_images, num_codes=args.num_codes,
        target_batches=args.target_batches, lr=args.lr, epochs=args.epochs, seed=seed, eval_at_start=True,
        eval_teacher=eval_teacher, output_dir=str(run_dir), overwrite=True, log_every=100, cpu=True,
    )
    summary = _finished_run(run_dir, config)
    reused = summary is not None
    summary = summary or distill(config)
    history = summary["history"]
    metrics = {"top1_start": history[0]["top1"], "top1_last": history[-1]["top1"]}
    if summary["teacher"] is not None:
        metrics["teacher_top1"] = summary["teacher"]["top1"]
    print(f"== {method} seed {seed}: top-1 {100 * metrics['top1_start']:.2f} -> {100 * metrics['top1_last']:.2f} "
          f"({'read from ' + str(run_dir) if reused else f'{time.time() - started:.0f} s'})", flush=True)
    return {"variant": method, "seed": seed, "metrics": metrics, "history": history,
            "seconds": None if reused else time.time() - started}


def _finished_run(run_dir: Path, config: DistillConfig) -> dict | None:
    """The metrics.json of a finished run of the same recipe in ``run_dir``, else None."""
    metrics, saved = run_dir / "metrics.json", run_dir / "distill_config.yaml"
    if not (metrics.is_file() and saved.is_file()):
        return None
    old, new = DistillConfig.from_yaml(saved).to_dict(), config.to_dict()
    ignored = _RUN_ONLY_FIELDS + (() if config.is_letkd else _LETKD_FIELDS)
    if any(old[key] != new[key] for key in new if key not in ignored):
        return None
    summary = json.loads(metrics.read_text(encoding="utf-8"))
    return summary if summary["last"] and summary["last"]["epoch"] >= config.epochs else None


def markdown(summary: dict, reference: str, teacher_top1: float) -> str:
    """Top-1 in %, mean ± std over seeds, paired difference of the final top-1 vs ``reference``."""
    lines = ["| method | top-1 before | top-1 after | Δ vs " + reference + " (wins) |", "|---|---|---|---|"]
    for name, stats in summary.items():
        start, last = stats["top1_start"], stats["top1_last"]
        paired = "–" if name == reference else \
            f"{100 * last['diff_mean']:+.2f} ± {100 * last['diff_std']:.2f} ({last['wins']}/{last['n']})"
        lines.append(f"| {name} | {100 * start['mean']:.2f} ± {100 * start['std']:.2f} | "
                     f"{100 * last['mean']:.2f} ± {100 * last['std']:.2f} | {paired} |")
    lines.append(f"| teacher | – | {100 * teacher_top1:.2f} | – |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: {unknown} are not distillation methods; choose from {METHODS}.")
    runs = [r for path in args.merge for r in json.loads(Path(path).read_text(encoding="utf-8"))["runs"]]
    names = list(dict.fromkeys([r["variant"] for r in runs] + (methods if not runs else [])))
    seeds = [int(s) for s in args.seeds.split(",")] if not runs else []
    command = "python scripts/kd_fidelity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for seed in seeds:
        for method in methods:
            runs.append(run(args, method, seed, eval_teacher=not any("teacher_top1" in r["metrics"] for r in runs)))
            if args.out:  # partial results survive a stop
                write_json(Path(args.out), {"command": command, "runs": runs}, indent=1)
    teacher_top1 = float(np.mean([r["metrics"]["teacher_top1"] for r in runs if "teacher_top1" in r["metrics"]]))
    summary = summarise(runs, names, names[0], KEYS)
    table = markdown(summary, names[0], teacher_top1)
    print(table)
    if args.out:
        write_json(Path(args.out), {"command": command, "seeds": sorted({r["seed"] for r in runs}),
                                    "summary": summary, "table": table, "runs": runs}, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
