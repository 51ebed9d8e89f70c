"""gsp_hub.metrics.retrieval_metrics vs pytorch-metric-learning's AccuracyCalculator at Stanford-Online-Products size.

Data: 60,502 L2-normalised 512-d embeddings in 11,316 classes of 2-12 items (SOP test-set shape), generated
deterministically (Gaussian clusters around random class centres). Each method runs once in a fresh subprocess,
which reports the wall time of the metric call and its own peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
which includes the Python/torch runtime and the 124 MB of embeddings; the RSS before the call is printed too). The
parent prints both side by side, the ratios, and whether R@1, R-Precision and MAP@R agree to 1e-6. The machine's
load average is printed next to each run: timings on a shared machine are only comparable at similar load.

    python benchmarks/bench_metrics.py                      # both methods (AccuracyCalculator needs ~7 GB RAM)
    python benchmarks/bench_metrics.py --methods gsp_hub --chunk-size 4096
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NUM_ITEMS, NUM_CLASSES, DIM = 60_502, 11_316, 512
MIN_CLASS_SIZE, MAX_CLASS_SIZE = 2, 12
NOISE = 2.2  # per-dimension spread around unit-variance class centres: R@1 ~ 0.78, MAP@R ~ 0.44
PML_KEYS = {"recall@1": "precision_at_1", "r_precision": "r_precision", "map@r": "mean_average_precision_at_r"}


def sop_like_class_sizes(rng: np.random.Generator) -> np.ndarray:
    """(NUM_CLASSES,) sizes in [2, 12] summing exactly to NUM_ITEMS, skewed towards small classes like SOP."""
    choices = np.arange(MIN_CLASS_SIZE, MAX_CLASS_SIZE + 1)
    weights = 0.84 ** (choices - MIN_CLASS_SIZE)  # truncated geometric, mean ~ NUM_ITEMS / NUM_CLASSES = 5.35
    sizes = rng.choice(choices, size=NUM_CLASSES, p=weights / weights.sum())
    while (excess := int(sizes.sum()) - NUM_ITEMS) != 0:  # nudge random classes until the total is exact
        step = -1 if excess > 0 else 1
        movable = np.flatnonzero(sizes > MIN_CLASS_SIZE if step < 0 else sizes < MAX_CLASS_SIZE)
        chosen = rng.choice(movable, size=min(abs(excess), len(movable)), replace=False)
        sizes[chosen] += step
    return sizes


def make_embeddings(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float32 embeddings (NUM_ITEMS, DIM) and int64 labels (NUM_ITEMS,)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), sop_like_class_sizes(rng))
    centres = rng.standard_normal((NUM_CLASSES, DIM), dtype=np.float32)
    embeddings = centres[labels] + NOISE * rng.standard_normal((NUM_ITEMS, DIM), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings, labels


def run_worker(method: str, data_dir: Path, chunk_size: int) -> None:
    """Child process: time one metric call and print a JSON line with seconds, peak RSS and the results."""
    import torch

    if method == "gsp_hub":
        from gsp_hub.metrics.retrieval import DEFAULT_CHUNK_SIZE, retrieval_metrics

        chunk_size = chunk_size or DEFAULT_CHUNK_SIZE

        def compute(embeddings: np.ndarray, labels: np.ndarray) -> dict:
            return retrieval_metrics(embeddings, labels, chunk_size=chunk_size)
    else:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calculator = AccuracyCalculator(include=tuple(PML_KEYS.values()), k="max_bin_count", device=torch.device("cpu"))
        compute = calculator.get_accuracy
    embeddings, labels = np.load(data_dir / "embeddings.npy"), np.load(data_dir / "labels.npy")
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    start = time.perf_counter()
    results = compute(embeddings, labels)
    seconds = time.perf_counter() - start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb, "rss_before_mb": rss_before_mb,
                      "threads": torch.get_num_threads(), "chunk_size": chunk_size, "results": results}))


def run_in_subprocess(*arguments: str) -> dict:
    """Run this script with ``arguments`` in a fresh interpreter and parse the JSON line it prints last.

    The parent stays small on purpose: a child's ru_maxrss starts from the parent's peak RSS (it is kept across
    fork + exec), so the parent neither generates the data nor imports torch.
    """
    load_before = os.getloadavg()[0]
    completed = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True, check=True)
    return {**json.loads(completed.stdout.strip().splitlines()[-1]), "load": (load_before, os.getloadavg()[0])}


def write_data(data_dir: Path, seed: int) -> None:
    """Child process: generate the embeddings and labels into ``data_dir`` and print their summary as JSON."""
    embeddings, labels = make_embeddings(seed)
    np.save(data_dir / "embeddings.npy", embeddings)
    np.save(data_dir / "labels.npy", labels)
    sizes = np.bincount(labels)
    print(json.dumps({"items": len(labels), "dim": embeddings.shape[1], "classes": len(sizes),
                      "sizes": [int(sizes.min()), int(sizes.max()), float(sizes.mean())]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["gsp_hub", "pml"], choices=["gsp_hub", "pml"])
    parser.add_argument("--chunk-size", type=int, default=0, help="side of gsp_hub's score blocks (0: its default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["data", "gsp_hub", "pml"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "data":
        write_data(args.data_dir, args.seed)
        return
    if args.worker:
        run_worker(args.worker, args.data_dir, args.chunk_size)
        return

    with tempfile.TemporaryDirectory() as data_dir:
        data = run_in_subprocess("--worker", "data", "--data-dir", data_dir, "--seed", str(args.seed))
        print(f"data: {data['items']:,} x {data['dim']} L2-normalised embeddings, {data['classes']:,} classes, "
              f"sizes {data['sizes'][0]}-{data['sizes'][1]} (mean {data['sizes'][2]:.2f})")
        runs = {
            method: run_in_subprocess("--worker", method, "--data-dir", data_dir, "--chunk-size", str(args.chunk_size))
            for method in args.methods
        }

    print(f"\n{'method':<22}{'wall time (s)':>15}{'peak RSS (MB)':>15}{'RSS before call':>17}{'threads':>9}"
          f"{'load avg 1 min':>16}")
    names = {"gsp_hub": f"gsp_hub (chunk {runs.get('gsp_hub', {}).get('chunk_size')})", "pml": "AccuracyCalculator"}
    for method, run in runs.items():
        load = f"{run['load'][0]:.1f} -> {run['load'][1]:.1f}"
        print(f"{names[method]:<22}{run['seconds']:>15.2f}{run['peak_rss_mb']:>15.0f}{run['rss_before_mb']:>17.0f}"
              f"{run['threads']:>9}{load:>16}")
    if len(runs) == 2:
        ours, theirs = runs["gsp_hub"], runs["pml"]
        print(f"{'ratio (PML / gsp_hub)':<22}{theirs['seconds'] / ours['seconds']:>14.2f}x"
              f"{theirs['peak_rss_mb'] / ours['peak_rss_mb']:>14.2f}x")
        print(f"\n{'metric':<14}{'gsp_hub':>20}{'AccuracyCalculator':>20}{'|difference|':>15}")
        worst = 0.0
        for ours_key, pml_key in PML_KEYS.items():
            a, b = ours["results"][ours_key], theirs["results"][pml_key]
            worst = max(worst, abs(a - b))
            print(f"{ours_key:<14}{a:>20.12f}{b:>20.12f}{abs(a - b):>15.2e}")
        print(f"\nnumbers identical to 1e-6: {'yes' if worst <= 1e-6 else 'NO'} (max difference {worst:.2e})")
        print(f"speed target >= 3x: {'met' if theirs['seconds'] >= 3 * ours['seconds'] else 'NOT met'}; "
              f"memory target <= 1 GB: {'met' if ours['peak_rss_mb'] <= 1024 else 'NOT met'}")
    if "gsp_hub" in runs:
        print("\ngsp_hub results: " + ", ".join(f"{k}={v:.4f}" for k, v in runs["gsp_hub"]["results"].items()))


if __name__ == "__main__":
    main()
