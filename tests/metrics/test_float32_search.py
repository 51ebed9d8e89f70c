"""The float32 search's set-up: memory-bounded block sizes, IEEE float32 products whatever the global matmul
precision, the automatic choice between it and bf16 screening (and the log that names the kernels), memory-mapped
galleries swept once in shards, and CUDA tensors (where a GPU is present)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gsp_hub.metrics import nearest_neighbors, retrieval_metrics
from gsp_hub.metrics.retrieval import _as_embeddings
from gsp_hub.metrics.topk import (
    BLOCK_BUDGET_BYTES,
    SCREENING_MIN_PAIRS,
    block_size,
    blocked_topk,
    screening_available,
)

REPOSITORY = Path(__file__).resolve().parents[2]
SEARCH_LOGGER = "gsp_hub.metrics.topk"


def working_set(side: int, dim: int, dtype: torch.dtype) -> float:
    """Bytes of one block (documented in block_size): scores, row and column tile maxima, normalised rows."""
    return dtype.itemsize * (side * side * (1 + 1 / 32 + 1 / 16) + 2 * side * dim)


def gaussian(seed: int, num_points: int, dim: int) -> torch.Tensor:
    return torch.randn(num_points, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [4, 128, 512, 2048])
def test_block_size_is_the_largest_multiple_of_64_within_the_budget(dim: int, dtype: torch.dtype) -> None:
    for budget in (2**20, BLOCK_BUDGET_BYTES, 512 * 2**20):
        side = block_size(10**7, 10**7, dim, dtype, budget)
        step = 64 if side >= 64 else 1  # under 64 rows (1 MiB of 2048-d rows) any side will do
        assert side % step == 0 and side > 0
        assert working_set(side, dim, dtype) <= budget < working_set(side + step, dim, dtype)
        assert block_size(10**7, 10**7, dim, dtype, 4 * budget) > side  # more memory, larger blocks


def test_block_size_spans_small_searches_and_shrinks_for_wide_rows() -> None:
    assert block_size(60_502, 60_502, 512, torch.float32) == 3456  # SOP: 48 MB of scores, as documented
    assert block_size(56, 56, 512, torch.float32) == 56  # one block spans the whole search
    assert block_size(10, 1000, 512, torch.float32) == 1000  # the longer side decides
    side = block_size(10**6, 10**6, 200_000, torch.float32)  # under 64 rows fit: not rounded, still bounded
    assert 1 < side < 64 and working_set(side, 200_000, torch.float32) <= BLOCK_BUDGET_BYTES
    assert block_size(10**6, 10**6, 10**9, torch.float32) == 1  # not even one row fits: one row at a time


def test_float32_products_stay_ieee_whatever_the_global_matmul_precision() -> None:
    """With fp32_precision 'bf16' (what set_float32_matmul_precision('medium') selects on a CPU with bf16 units),
    oneDNN computes float32 matmuls from bf16 pieces, which changes their last bits and the order of near-ties;
    the search still returns the IEEE float32 ranking and leaves the user's settings as they were."""
    bases = gaussian(0, 100, 512)
    points = bases.repeat_interleave(6, 0) + 1e-3 * gaussian(1, 600, 512)  # near-ties: groups of 6 near-copies
    expected = {distance: nearest_neighbors(points, k=10, distance=distance, bf16_screening=False)
                for distance in ("cosine", "euclidean")}
    ieee_products = points @ points.T
    backends = (torch.backends.mkldnn.matmul, torch.backends.cuda.matmul)
    saved = [backend.fp32_precision for backend in backends]
    try:
        backends[0].fp32_precision, backends[1].fp32_precision = "bf16", "tf32"
        if torch.equal(points @ points.T, ieee_products):
            pytest.skip("this CPU computes float32 products in IEEE float32 even when allowed bf16 (no bf16 units)")
        for distance, neighbors in expected.items():
            assert torch.equal(nearest_neighbors(points, k=10, distance=distance, bf16_screening=False), neighbors)
        assert [backend.fp32_precision for backend in backends] == ["bf16", "tf32"]  # restored after the search
    finally:
        for backend, precision in zip(backends, saved):
            backend.fp32_precision = precision


def test_the_log_names_the_kernels_and_why(caplog: pytest.LogCaptureFixture) -> None:
    points = gaussian(1, 56, 8)
    cases = [
        ({"bf16_screening": False}, "float32 search in blocks of 56 (bf16_screening=False)"),
        ({"dtype": torch.float64}, "float64 search in blocks of 56 (bf16 screening is for cosine float32"),
        ({"distance": "euclidean", "bf16_screening": True}, "float32 search in blocks of 56 (bf16 screening is for"),
        ({}, f"float32 search in blocks of 56 (automatic: no bf16 screening below {SCREENING_MIN_PAIRS:,} pairs)"),
        ({"bf16_screening": True, "chunk_size": 16}, "bf16 screening + float32 re-scoring in blocks of 16 ("),
    ]
    for options, message in cases:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger=SEARCH_LOGGER):
            nearest_neighbors(points, k=3, **options)
        assert message in caplog.text, (options, caplog.text)
        assert "56 queries x 56 items (leave-one-out, symmetric blocks), k=3" in caplog.text


def test_automatic_choice_follows_the_speed_of_bf16_dot_products(caplog: pytest.LogCaptureFixture) -> None:
    """A search of 2^24 pairs screens in bf16 where bf16 dot products are fast, and runs the float32 search alone
    where they are not: on this machine as it is, and in a child process whose oneDNN is limited to AVX2."""
    points = gaussian(2, 4097, 8)  # 4097^2 > SCREENING_MIN_PAIRS
    with caplog.at_level(logging.DEBUG, logger=SEARCH_LOGGER):
        nearest_neighbors(points, k=3)
    fast = screening_available(torch.device("cpu"))
    expected = "automatic: fast bf16 dot products on this CPU" if fast else "automatic: no fast bf16 dot products"
    assert expected in caplog.text
    assert ("bf16 screening + float32 re-scoring" in caplog.text) == fast

    script = (
        "import logging, sys, torch\n"
        "from gsp_hub.metrics import nearest_neighbors\n"
        "from gsp_hub.metrics.topk import screening_available\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format='%(message)s')\n"
        "print('screening available:', screening_available(torch.device('cpu')))\n"
        "nearest_neighbors(torch.randn(4097, 8), k=3)\n"
    )
    environment = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": str(REPOSITORY)}
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                           cwd=REPOSITORY, check=True)
    assert "screening available: False" in child.stdout
    assert "float32 search in blocks of" in child.stdout
    assert "(automatic: no fast bf16 dot products on this CPU)" in child.stdout


def test_memory_mapped_gallery_is_searched_in_place(tmp_path: Path) -> None:
    """A read-only float32 memmap (np.load(mmap_mode='r')) is used without a copy or a warning, read block by block,
    and scores like the same gallery in memory."""
    rng = np.random.default_rng(3)
    labels = np.arange(700) % 50
    gallery = (rng.normal(size=(50, 16))[labels] + 0.8 * rng.normal(size=(700, 16))).astype(np.float32)
    queries, query_labels = gallery[:60] + 0.3 * rng.normal(size=(60, 16)).astype(np.float32), labels[:60]
    np.save(tmp_path / "gallery.npy", gallery)
    mapped = np.load(tmp_path / "gallery.npy", mmap_mode="r")
    assert _as_embeddings(mapped, "embeddings", torch.float32, "cosine", min_rows=1, why="").data_ptr() == (
        mapped.ctypes.data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = retrieval_metrics(mapped, labels, query_embeddings=queries, query_labels=query_labels,
                                  chunk_size=64, bf16_screening=False)
    assert found == retrieval_metrics(gallery, labels, query_embeddings=queries, query_labels=query_labels,
                                      chunk_size=64, bf16_screening=False)
    assert 0.2 < found["map@r"] < 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("bf16_screening", [False, True])
def test_cuda_tensors_give_the_float32_ranking(bf16_screening: bool) -> None:
    """The same code on the GPU, with TF32 allowed globally: neighbours with the best float64 scores (to float32
    rounding: cuBLAS and the CPU's BLAS may order last-bit near-ties differently), and the CPU's metrics."""
    points = gaussian(4, 3000, 64)
    labels = torch.arange(3000) % 300
    saved = torch.backends.cuda.matmul.fp32_precision
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        found = nearest_neighbors(points.cuda(), k=10, bf16_screening=bf16_screening, chunk_size=1000)
        on_gpu = retrieval_metrics(points.cuda(), labels.cuda(), bf16_screening=bf16_screening)
    finally:
        torch.backends.cuda.matmul.fp32_precision = saved
    normalised = F.normalize(points.double(), dim=1)
    scores = (normalised @ normalised.T).fill_diagonal_(-torch.inf)
    torch.testing.assert_close(scores.gather(1, found.cpu()), scores.topk(10, dim=1).values, rtol=0, atol=1e-6)
    assert on_gpu == pytest.approx(retrieval_metrics(points, labels, bf16_screening=False), abs=1e-6)


class RowReads(torch.Tensor):
    """A tensor that records the row slices read from it (``tensor[start:stop]``); every result is a plain tensor."""

    reads: list[tuple[int, int]] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__getitem__ and isinstance(args[1], slice):
            cls.reads.append((args[1].start, args[1].stop))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_query_gallery_search_reads_each_gallery_block_once(distance: str) -> None:
    """The running lists of all queries are kept, so the outer loop runs over the gallery's blocks: a gallery larger
    than memory is swept once, in shards of ``chunk_size`` rows (each read by every block of queries in turn while it
    is in memory), whatever the number of queries."""
    gallery, queries = gaussian(5, 1000, 16), gaussian(6, 450, 16)
    RowReads.reads = []
    found = torch.cat([indices for _, indices in blocked_topk(
        queries, gallery.as_subclass(RowReads), 7, distance=distance, leave_one_out=False, chunk_size=128,
        bf16_screening=False)])
    assert RowReads.reads == [(start, min(start + 128, 1000)) for start in range(0, 1000, 128) for _ in range(4)]
    assert torch.equal(found, nearest_neighbors(queries, gallery, k=7, distance=distance, chunk_size=1000))
