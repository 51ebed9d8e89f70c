"""gsp_hub.metrics.retrieval_metrics vs pytorch-metric-learning's AccuracyCalculator at Stanford-Online-Products size.

Data: 60,502 L2-normalised 512-d embeddings in 11,316 classes of 2-12 items (SOP test-set shape), generated
deterministically (Gaussian clusters around random class centres). Each method runs once in a fresh subprocess,
which reports the wall time of the metric call and its own peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
which includes the Python/torch runtime and the 124 MB of embeddings; the RSS before the call is printed too). The
parent prints them side by side, each gsp_hub method's time and memory ratio to AccuracyCalculator, whether R@1,
R-Precision and MAP@R agree to 1e-6, and which kernels ran (gsp_hub logs its choice: the float32 block search or
bf16 screening with float32 re-scoring, the block size and why). The machine's load average is printed next to each
run: timings on a shared machine are only comparable at similar load.

Methods: ``auto`` (gsp_hub's automatic choice: bf16 screening where bf16 dot products are fast, else float32),
``float32`` (the float32 search forced, ``bf16_screening=False``), ``bf16`` (screening forced), ``pml``.
``--methods products`` times the float32 matrix products of the leave-one-out search alone (each pair of blocks
once, into one reused buffer, nothing ranked): the floor under which no exact float32 search can go, so
AccuracyCalculator's time over it is the largest ratio a float32 search can reach on this machine.
``--emulate-avx2`` runs every child with its libraries limited to AVX2 (torch's kernels, oneDNN, MKL, faiss and its
OpenBLAS), the instruction set of CPUs without bf16 dot products, on which ``auto`` then picks ``float32``. It
emulates the instructions only: an AVX2 machine's cores, clock, caches and memory differ, so report such runs as
emulated. ``--profile`` adds each gsp_hub call's most expensive torch operations (the profiler slows the call).

    python benchmarks/bench_metrics.py                       # auto, float32, AccuracyCalculator (~7 GB RAM)
    python benchmarks/bench_metrics.py --emulate-avx2        # the same, limited to AVX2
    python benchmarks/bench_metrics.py --methods float32 --chunk-size 2048 --profile
    python benchmarks/bench_metrics.py --device cuda         # on a GPU (peak GPU memory printed too)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

NUM_ITEMS, NUM_CLASSES, DIM = 60_502, 11_316, 512
MIN_CLASS_SIZE, MAX_CLASS_SIZE = 2, 12
NOISE = 2.2  # per-dimension spread around unit-variance class centres: R@1 ~ 0.78, MAP@R ~ 0.44
PML_KEYS = {"recall@1": "precision_at_1", "r_precision": "r_precision", "map@r": "mean_average_precision_at_r"}
METHODS = {  # name -> (label, bf16_screening of gsp_hub's methods)
    "auto": ("gsp_hub automatic", None),
    "float32": ("gsp_hub float32 forced", False),
    "bf16": ("gsp_hub bf16 forced", True),
    "pml": ("AccuracyCalculator", None),
    "products": ("float32 products alone", False),  # the floor of any exact float32 leave-one-out search
}
AVX2_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN without AVX512-BF16 / AMX: torch then reports no fast bf16
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL's sgemm (torch's float32 matmul)
    "OPENBLAS_CORETYPE": "Haswell",  # faiss' OpenBLAS sgemm (AccuracyCalculator's search)
    "FAISS_SIMD_LEVEL": "AVX2",  # faiss' own kernels
}
MEMORY_TARGET_MB, SPEED_TARGET = 1024, 3.0


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


class _Messages(logging.Handler):
    """Keeps the messages of the records it receives."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_worker(method: str, data_dir: Path, chunk_size: int, profile: bool, device: str) -> None:
    """Child process: time one metric call on ``device`` and print a JSON line with seconds, peak RSS (and peak GPU
    memory on CUDA), results and kernels."""
    import torch

    kernels = _Messages()
    if device == "cuda":
        kernels.messages.append(f"device {torch.cuda.get_device_name()}")
    if method == "pml":
        import faiss
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calculator = AccuracyCalculator(include=tuple(PML_KEYS.values()), k="max_bin_count", device=torch.device(device))
        compute = calculator.get_accuracy
        kernels.messages.append(f"faiss {faiss.__version__}, SIMD level {faiss.SIMDConfig.get_level_name()}")
    else:
        from gsp_hub.metrics import retrieval_metrics
        from gsp_hub.metrics.topk import screening_available

        search_logger = logging.getLogger("gsp_hub.metrics.topk")
        search_logger.setLevel(logging.DEBUG)
        search_logger.addHandler(kernels)
        kernels.messages.append(f"fast bf16 dot products on this {device.upper()}: "
                                f"{'yes' if screening_available(torch.device(device)) else 'no'}")

        def compute(embeddings: torch.Tensor, labels: torch.Tensor) -> dict:
            if method == "products":
                return symmetric_products(embeddings, chunk_size)
            return retrieval_metrics(embeddings, labels, chunk_size=chunk_size or None,
                                     bf16_screening=METHODS[method][1])
    embeddings = torch.from_numpy(np.load(data_dir / "embeddings.npy")).to(device)
    labels = torch.from_numpy(np.load(data_dir / "labels.npy")).to(device)
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    profiled = profile and method != "pml"
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profiled else None
    start = time.perf_counter()
    with profiler or contextlib.nullcontext():
        results = compute(embeddings, labels)
        if device == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15) if profiler else ""
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb, "rss_before_mb": rss_before_mb,
                      "peak_gpu_mb": peak_gpu_mb,
                      "threads": torch.get_num_threads(), "torch_cpu_kernels": torch.backends.cpu.get_cpu_capability(),
                      "kernels": kernels.messages, "profile": table, "results": results}))


def symmetric_products(embeddings: torch.Tensor, chunk_size: int) -> dict:
    """The float32 products of a symmetric blocked search of ``embeddings`` (N, D): every block pair (i <= j) of
    side ``chunk_size`` (0: :func:`gsp_hub.metrics.topk.block_size`) once, into one reused (B, B) buffer; no
    ranking. Returns no metrics (an empty dict)."""
    import torch

    from gsp_hub.metrics.topk import block_size

    rows, dim = embeddings.shape
    side = chunk_size or block_size(rows, rows, dim, torch.float32)
    matrix, buffer = embeddings, torch.empty(side * side, device=embeddings.device)
    starts = range(0, rows, side)
    for i in starts:
        queries = matrix[i:i + side]
        for j in starts[i // side:]:
            gallery = matrix[j:j + side]
            torch.mm(queries, gallery.T, out=buffer[:len(queries) * len(gallery)].view(len(queries), len(gallery)))
    return {}


def run_in_subprocess(arguments: list[str], environment: dict[str, str]) -> dict:
    """Run this script with ``arguments`` in a fresh interpreter and parse the JSON line it prints last.

    The parent stays small on purpose: a child's ru_maxrss starts from the parent's peak RSS (it is kept across
    fork + exec), so the parent neither generates the data nor imports torch.
    """
    load_before = os.getloadavg()[0]
    completed = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True, check=False,
                               env={**os.environ, **environment})
    if completed.returncode:
        raise SystemExit(f"{' '.join(arguments[:2])} failed:\n{completed.stderr[-3000:]}")
    return {**json.loads(completed.stdout.strip().splitlines()[-1]), "load": (load_before, os.getloadavg()[0])}


def write_data(data_dir: Path, seed: int) -> None:
    """Child process: generate the embeddings and labels into ``data_dir`` and print their summary as JSON."""
    embeddings, labels = make_embeddings(seed)
    np.save(data_dir / "embeddings.npy", embeddings)
    np.save(data_dir / "labels.npy", labels)
    sizes = np.bincount(labels)
    print(json.dumps({"items": len(labels), "dim": embeddings.shape[1], "classes": len(sizes),
                      "sizes": [int(sizes.min()), int(sizes.max()), float(sizes.mean())]}))


def print_report(runs: dict[str, dict], emulated: bool) -> None:
    """Side-by-side times and memory, the kernels each gsp_hub method ran, and every method's ratios to PML."""
    print(f"\n{'method':<24}{'wall time (s)':>15}{'peak RSS (MB)':>15}{'RSS before call':>17}{'threads':>9}"
          f"{'torch kernels':>15}{'load avg 1 min':>16}")
    for method, run in runs.items():
        load = f"{run['load'][0]:.1f} -> {run['load'][1]:.1f}"
        gpu = "" if run["peak_gpu_mb"] is None else f"  peak GPU memory {run['peak_gpu_mb']:.0f} MB"
        print(f"{METHODS[method][0]:<24}{run['seconds']:>15.2f}{run['peak_rss_mb']:>15.0f}{run['rss_before_mb']:>17.0f}"
              f"{run['threads']:>9}{run['torch_cpu_kernels']:>15}{load:>16}{gpu}")
    print("\nkernels" + (" (emulated AVX2: " + ", ".join(f"{k}={v}" for k, v in AVX2_ENVIRONMENT.items()) + ")"
                         if emulated else ""))
    for method, run in runs.items():
        for message in run["kernels"]:
            print(f"  {method:<8} {message}")
    for method, run in runs.items():
        if run["profile"]:
            print(f"\n{METHODS[method][0]}: most expensive torch operations (profiled call)\n{run['profile']}")
    if "pml" not in runs:
        return
    theirs = runs["pml"]
    print(f"\n{'vs AccuracyCalculator':<24}{'time ratio':>12}{'memory ratio':>14}{'max |difference|':>18}"
          f"{'>= 3x':>8}{'<= 1 GB':>9}")
    for method, ours in runs.items():
        if method == "pml":
            continue
        difference = max((abs(ours["results"][key] - theirs["results"][pml_key]) for key, pml_key in PML_KEYS.items()
                          if key in ours["results"]), default=float("nan"))  # products: no metrics
        speedup = theirs["seconds"] / ours["seconds"]
        print(f"{METHODS[method][0]:<24}{speedup:>11.2f}x{theirs['peak_rss_mb'] / ours['peak_rss_mb']:>13.2f}x"
              f"{difference:>18.2e}{'met' if speedup >= SPEED_TARGET else 'NOT met':>8}"
              f"{'met' if ours['peak_rss_mb'] <= MEMORY_TARGET_MB else 'NOT met':>9}")
    print("(numbers are identical when max |difference| <= 1e-6; AccuracyCalculator's results: "
          + ", ".join(f"{key}={theirs['results'][pml_key]:.6f}" for key, pml_key in PML_KEYS.items()) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["auto", "float32", "pml"], choices=list(METHODS))
    parser.add_argument("--chunk-size", type=int, default=0, help="side of gsp_hub's score blocks (0: automatic)")
    parser.add_argument("--emulate-avx2", action="store_true", help="limit every child's libraries to AVX2")
    parser.add_argument("--profile", action="store_true", help="print each gsp_hub call's costliest torch ops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the embeddings live and every method computes (cuda: AccuracyCalculator searches "
                             "with faiss on the GPU where faiss has GPU support, else on the CPU)")
    parser.add_argument("--worker", choices=["data", *METHODS], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "data":
        write_data(args.data_dir, args.seed)
        return
    if args.worker:
        run_worker(args.worker, args.data_dir, args.chunk_size, args.profile, args.device)
        return

    environment = AVX2_ENVIRONMENT if args.emulate_avx2 else {}
    with tempfile.TemporaryDirectory() as data_dir:
        data = run_in_subprocess(["--worker", "data", "--data-dir", data_dir, "--seed", str(args.seed)], {})
        print(f"data: {data['items']:,} x {data['dim']} L2-normalised embeddings, {data['classes']:,} classes, "
              f"sizes {data['sizes'][0]}-{data['sizes'][1]} (mean {data['sizes'][2]:.2f})")
        runs = {}
        for method in dict.fromkeys(args.methods):
            arguments = ["--worker", method, "--data-dir", data_dir, "--chunk-size", str(args.chunk_size),
                         "--device", args.device]
            runs[method] = run_in_subprocess(arguments + (["--profile"] if args.profile else []), environment)
    print_report(runs, args.emulate_avx2)


if __name__ == "__main__":
    main()
