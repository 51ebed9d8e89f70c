"""Gallery index benchmark: exact (flat inner product) vs approximate (HNSW, IVF) faiss search.

A gallery of random L2-normalised embeddings (default 100,000 x 512) and separate queries. ``--distribution random``
(default) draws isotropic Gaussian directions: no neighbourhood structure at all, every point is almost equally far
from every other (the hardest case for approximate search). ``--distribution clustered`` draws them around 1,000
random class centres (within-class cosine ~0.5, like trained metric-learning embeddings), queries from the same
centres. For each structure of
:mod:`gsp_hub.index.structures` it prints the build time, the single-query latency (one query per call, as
`gsp-hub index search` does) at the 50th and 99th percentile, the p50 speed-up over exact search, and recall@10
against exact search.

    python benchmarks/bench_index.py                 # 100k x 512, 1000 queries
    python benchmarks/bench_index.py --size 20000    # quicker
    python benchmarks/bench_index.py --distribution clustered
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from gsp_hub.index.structures import (
    IndexSettings,
    build_structure,
    configure_loaded,
    exact_search,
    recall_vs_exact,
)

# (structure to build, query-time variants): HNSW ef_search and IVF nprobe only change the search, not the build.
CONFIGURATIONS: tuple[tuple[IndexSettings, tuple[IndexSettings, ...]], ...] = (
    (IndexSettings(kind="flat"), (IndexSettings(kind="flat"),)),
    (IndexSettings(kind="hnsw"), tuple(IndexSettings(kind="hnsw", ef_search=ef) for ef in (64, 256))),
    (IndexSettings(kind="ivf"), tuple(IndexSettings(kind="ivf", nprobe=nprobe) for nprobe in (16, 64))),
)


def describe(settings: IndexSettings, size: int) -> str:
    if settings.kind == "hnsw":
        return f"hnsw M={settings.hnsw_m} ef_search={settings.ef_search}"
    if settings.kind == "ivf":
        return f"ivf lists={settings.lists_for(size)} nprobe={settings.nprobe}"
    return "flat (exact)"


def random_unit_vectors(count: int, dim: int, generator: np.random.Generator) -> np.ndarray:
    vectors = generator.standard_normal((count, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def clustered_unit_vectors(
    count: int, dim: int, generator: np.random.Generator, centres: np.ndarray
) -> np.ndarray:
    """Points around randomly chosen ``centres`` (unit vectors): centre + N(0, 1/dim) noise, normalised."""
    noise = generator.standard_normal((count, dim), dtype=np.float32) / np.sqrt(dim)
    points = centres[generator.integers(0, len(centres), size=count)] + noise
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def latencies_ms(structure: faiss.Index, queries: np.ndarray, k: int) -> np.ndarray:
    timings = np.empty(len(queries))
    for row in range(len(queries)):
        start = time.perf_counter()
        structure.search(queries[row : row + 1], k)
        timings[row] = (time.perf_counter() - start) * 1e3
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="gallery embeddings (default 100000)")
    parser.add_argument("--dim", type=int, default=512, help="embedding width (default 512)")
    parser.add_argument("--queries", type=int, default=1000, help="queries (default 1000)")
    parser.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    parser.add_argument("--distribution", choices=("random", "clustered"), default="random",
                        help="isotropic random directions (default) or 1000 clusters")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    generator = np.random.default_rng(args.seed)
    if args.distribution == "random":
        gallery = random_unit_vectors(args.size, args.dim, generator)
        queries = random_unit_vectors(args.queries, args.dim, generator)
    else:
        centres = random_unit_vectors(1000, args.dim, generator)
        gallery = clustered_unit_vectors(args.size, args.dim, generator, centres)
        queries = clustered_unit_vectors(args.queries, args.dim, generator, centres)
    print(f"gallery {args.size} x {args.dim} {args.distribution} unit vectors, {args.queries} queries, k = {args.k}, "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    exact_search(gallery, queries[:10], args.k)  # warm-up (thread pool, page faults)

    rows = []
    exact_p50 = None
    for build_settings, variants in CONFIGURATIONS:
        start = time.perf_counter()
        structure = build_structure(gallery, build_settings)
        build_seconds = time.perf_counter() - start
        for settings in variants:
            configure_loaded(structure, settings)
            timings = latencies_ms(structure, queries, args.k)
            recall = recall_vs_exact(structure, gallery, queries, args.k)
            p50, p99 = np.percentile(timings, [50, 99])
            exact_p50 = p50 if exact_p50 is None else exact_p50
            rows.append((describe(settings, args.size), build_seconds, p50, p99, exact_p50 / p50, recall))
            print(f"  {rows[-1][0]}: done", flush=True)

    print()
    print(f"| structure | build (s) | query p50 (ms) | query p99 (ms) | p50 speed-up | recall@{args.k} vs exact |")
    print("|---|---|---|---|---|---|")
    for name, build_seconds, p50, p99, speedup, recall in rows:
        print(f"| {name} | {build_seconds:.2f} | {p50:.3f} | {p99:.3f} | {speedup:.1f}x | {recall:.3f} |")


if __name__ == "__main__":
    main()
