"""How fast the command line answers: `gsp-hub --help` and every sub-command's ``--help``, and ``import gsp_hub``.

Each measurement is a fresh ``python -m gsp_hub ... --help`` process (``sys.executable``, run from the repository
root so that this checkout's gsp_hub is the one imported), timed from spawn to exit; the median of ``--repeats``
runs is printed per command with whether it is under the 0.5 s goal (issue 18). The import time of
``import gsp_hub`` is measured inside fresh interpreters (interpreter start-up excluded). The machine's load
average is printed too: timings on a shared machine are only comparable at similar load.

    python benchmarks/bench_cli.py                # 5 runs per command
    python benchmarks/bench_cli.py --repeats 11
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 0.5

# Printed by a fresh interpreter: every command path of the parser, e.g. [], ["index"], ["index", "build"].
_LIST_COMMANDS = """
import argparse, json
from gsp_hub.cli import build_parser

def paths(parser, prefix):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub_parser in action.choices.items():
                yield from paths(sub_parser, [*prefix, name])

print(json.dumps(list(paths(build_parser(), []))))
"""

_IMPORT_SECONDS = "import time; start = time.perf_counter(); import gsp_hub; print(time.perf_counter() - start)"


def python(*args: str) -> subprocess.CompletedProcess[str]:
    """``sys.executable *args`` at the repository root; fails loudly on a non-zero exit."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True)


def help_seconds(command: list[str]) -> float:
    """Wall time of one fresh ``python -m gsp_hub *command --help`` process."""
    start = time.perf_counter()
    python("-m", "gsp_hub", *command, "--help")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command (default: 5)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}.")

    commands = json.loads(python("-c", _LIST_COMMANDS).stdout)
    print(f"{sys.executable} -m gsp_hub ... --help, median of {args.repeats} fresh processes "
          f"(load average {os.getloadavg()[0]:.2f}):")
    width = max(len(" ".join(["gsp-hub", *command, "--help"])) for command in commands)
    slow = 0
    for command in commands:
        median = statistics.median(help_seconds(command) for _ in range(args.repeats))
        slow += median >= GOAL_SECONDS
        verdict = "ok" if median < GOAL_SECONDS else f"SLOW (goal < {GOAL_SECONDS} s)"
        print(f"  {' '.join(['gsp-hub', *command, '--help']):<{width}}  {median:6.3f} s  {verdict}")
    imports = [float(python("-c", _IMPORT_SECONDS).stdout) for _ in range(args.repeats)]
    print(f"  {'import gsp_hub':<{width}}  {statistics.median(imports):6.3f} s  (inside the interpreter)")
    print(f"{len(commands) - slow} of {len(commands)} commands answer --help in < {GOAL_SECONDS} s "
          f"(load average now {os.getloadavg()[0]:.2f}).")


if __name__ == "__main__":
    main()
