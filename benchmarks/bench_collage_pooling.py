"""A collage job against its pooling twins over paired seeds: does GSP select and win? (issue 21)

For every seed, the no-argument job (`gsp-hub train`, the embedded Fashion-Collage, classes 0-3 train, 4-6
validation, 7-9 test) — or the job that the `gsp-hub train` flags after ``--`` describe — runs once per pooling:
the default GSP and the same recipe with ``--pool avg`` and ``--pool attn`` (learned attention, the plainest
selector), each in a fresh process, with the model chosen on the validation split only. Reported from each run's
metrics.json (test split, never used to choose): R@1, MAP@R and the pooling weight on the label tile (uniform 0.25),
their mean and spread over seeds, the paired differences GSP - twin (mean, std, wins), and the baselines every run
measures (raw-pixel nearest neighbours, the untrained model); then the chosen models' validation numbers, the ones
a choice of recipe may look at.

    python benchmarks/bench_collage_pooling.py --seeds 0 1 2 3 4 --jobs 2 --out benchmarks/collage_pooling.json

Another collage data set, e.g. TIN-SuperCollage end to end (a folder of ``scripts/build_tin_superclass_collage.py``;
its splits share the 16 labels, hence ``--split-protocol own``), in its own ``--runs-dir``::

    python benchmarks/bench_collage_pooling.py --runs-dir runs/bench_tinsc32 --out benchmarks/tinsc32_e2e.json \\
        -- --dataset data/tinsc32 --split-protocol own --m-per-class 4 --batch-size 64 --loss proxy_anchor \\
        --loss-lr-scale 100 --epochs 8

``--jobs 2`` runs two jobs side by side at one thread each: the metrics do not depend on it, the run times do
(they are not reported here; `gsp-hub train` alone, quiet, is timed in RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

METRICS = ("recall@1", "map@r", "target_mass")
UNIFORM_MASS = 0.25  # average pooling weighs every location alike: the label tile's share of the map


def metric(run: dict[str, Any], key: str, split: str = "test") -> float:
    """A metric of the chosen model on ``split`` ('test' or 'validation'); a pool without location weights (avg)
    pools uniformly."""
    name = key if split == "test" else f"{split}/{key}"
    return run["best"].get(name, UNIFORM_MASS) if key == "target_mass" else run["best"][name]


def run_job(pool: str, seed: int, runs_dir: Path, extra: list[str], reuse: bool) -> dict[str, Any]:
    """One default job with ``--pool pool --seed seed`` in a fresh process (or, with ``reuse``, the finished run
    already in its folder); its metrics.json."""
    output_dir = runs_dir / f"{pool}-seed{seed}"
    if reuse and (output_dir / "metrics.json").is_file():
        return json.loads((output_dir / "metrics.json").read_text())
    command = [sys.executable, "-m", "gsp_hub", "train", "--pool", pool, "--seed", str(seed), "--output-dir",
               str(output_dir), "--overwrite", *extra]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    summary = json.loads((output_dir / "metrics.json").read_text())
    print(f"{pool:>5} seed {seed}: R@1 {100 * metric(summary, 'recall@1'):.2f}  MAP@R "
          f"{100 * metric(summary, 'map@r'):.2f}  label-tile weight {metric(summary, 'target_mass'):.3f}  "
          f"(validation MAP@R {100 * metric(summary, 'map@r', 'validation'):.2f}, label-tile weight "
          f"{metric(summary, 'target_mass', 'validation'):.3f})", flush=True)
    return summary


def spread(values: list[float]) -> str:
    """'mean ± std' in the units given."""
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {deviation:.3f}"


def per_pooling_table(results: dict[str, dict[int, dict[str, Any]]], split: str) -> list[str]:
    """Markdown rows: per pooling, mean ± std over seeds of the chosen models' ``split`` metrics (points for R@1 /
    MAP@R)."""
    lines = ["| pooling | seeds | R@1 | MAP@R | label-tile weight |", "|---|---|---|---|---|"]
    for pool, runs in results.items():
        columns = [spread([scale * metric(run, key, split) for run in runs.values()])
                   for key, scale in zip(METRICS, (100, 100, 1))]
        lines.append(f"| {pool} | {len(runs)} | " + " | ".join(columns) + " |")
    return lines


def report(results: dict[str, dict[int, dict[str, Any]]], reference: str) -> str:
    """Markdown: per pooling mean ± std over seeds (test), then paired differences vs the reference pooling, then
    the baselines of the reference runs, then the per-pooling table of the validation split."""
    lines = per_pooling_table(results, "test")
    lines += ["", f"| paired difference | R@1 | MAP@R | label-tile weight | {reference} wins (R@1 / MAP@R) |",
              "|---|---|---|---|---|"]
    for pool, runs in results.items():
        if pool == reference:
            continue
        seeds = sorted(set(runs) & set(results[reference]))
        differences = {key: [scale * (metric(results[reference][s], key) - metric(runs[s], key)) for s in seeds]
                       for key, scale in zip(METRICS, (100, 100, 1))}
        wins = [sum(value > 0 for value in differences[key]) for key in ("recall@1", "map@r")]
        lines.append(f"| {reference} - {pool} | " + " | ".join(spread(differences[key]) for key in METRICS)
                     + f" | {wins[0]}/{len(seeds)} / {wins[1]}/{len(seeds)} |")
    first = next(iter(results[reference].values()))
    raw, untrained = first["baselines"]["raw_pixels"]["test"], first["initial"]
    lines += ["", f"Baselines (test split): raw-pixel nearest neighbours R@1 {100 * raw['recall@1']:.2f}, MAP@R "
              f"{100 * raw['map@r']:.2f}; untrained {reference} model (seed {min(results[reference])}) R@1 "
              f"{100 * untrained['recall@1']:.2f}, MAP@R {100 * untrained['map@r']:.2f}, label-tile weight "
              f"{untrained['target_mass']:.3f}.", "", "Validation split (chose each run's model):", ""]
    return "\n".join(lines + per_pooling_table(results, "validation"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--pools", nargs="+", default=["gsp", "avg", "attn"], help="the first is the reference")
    parser.add_argument("--jobs", type=int, default=1, help="jobs run side by side (one thread each)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench_collage_pooling"))
    parser.add_argument("--reuse", action="store_true", help="keep the finished runs already in --runs-dir")
    parser.add_argument("--out", type=Path, default=None, help="write every run's metrics.json here (JSON)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `gsp-hub train` flags for every run")
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    tasks = [(pool, seed) for seed in args.seeds for pool in args.pools]
    with ThreadPoolExecutor(max_workers=args.jobs) as executor:
        summaries = list(executor.map(lambda task: run_job(*task, args.runs_dir, extra, args.reuse), tasks))
    results: dict[str, dict[int, dict[str, Any]]] = {pool: {} for pool in args.pools}
    for (pool, seed), summary in zip(tasks, summaries):
        results[pool][seed] = summary
    print(report(results, args.pools[0]))
    if args.out is not None:
        from gsp_hub.io import atomic_write_text

        atomic_write_text(args.out, json.dumps({"command": sys.argv, "results": results}, indent=1))


if __name__ == "__main__":
    main()
