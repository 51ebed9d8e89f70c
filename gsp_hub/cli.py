"""The `gsp-hub` command line: parse the arguments, then call the package.

Every sub-command lives in its own module that defines ``add_parser(subparsers)``; that function adds one
sub-parser and sets ``func`` (called with the parsed ``argparse.Namespace``, returns an exit code). Command
modules import heavy libraries inside ``func`` so that ``gsp-hub --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

COMMAND_MODULES: tuple[str, ...] = (
    "gsp_hub.models.commands",
    "gsp_hub.hub.commands",
    "gsp_hub.train.commands",
    "gsp_hub.index.commands",
    "gsp_hub.train.distill_commands",
    "gsp_hub.viz.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The full `gsp-hub` parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="gsp-hub",
        description="Transport- and prototype-based pooling, metric learning and distillation "
        "as timm / Hugging Face models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gsp-hub` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
