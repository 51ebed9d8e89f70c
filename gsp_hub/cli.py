"""The `gsp-hub` command line: parse the arguments, then call the package.

Every sub-command lives in its own module that defines ``add_parser(subparsers)``; that function adds one
sub-parser and sets ``func`` (called with the parsed ``argparse.Namespace``, returns an exit code). Command
modules import heavy libraries inside ``func`` so that ``gsp-hub --help`` stays instant. They belong to this layer:
they may use the helpers below (shared options, the bad-input report), the library modules never do.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["add_dataset_arguments", "build_parser", "main", "user_error"]

COMMAND_MODULES: tuple[str, ...] = (
    "gsp_hub.models_commands",
    "gsp_hub.hub.commands",
    "gsp_hub.train.commands",
    "gsp_hub.index.commands",
    "gsp_hub.train.distill_commands",
    "gsp_hub.viz.commands",
)


def add_dataset_arguments(parser: argparse.ArgumentParser, purpose: str) -> None:
    """The options that pick a data set split: --dataset, --split-protocol, --split, --image-column,
    --label-column (``purpose`` completes "which side of the split to ...")."""
    parser.add_argument("--dataset", default=None, help="data set as for `gsp-hub train --dataset` (default: the "
                        "embedded fashion-mnist-subset)")
    parser.add_argument("--split-protocol", choices=("zero-shot", "own"), default="zero-shot",
                        help="how to split classes / rows (default: zero-shot)")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help=f"which side of the split to {purpose} (default: test)")
    parser.add_argument("--image-column", default=None, help="image column (default: detected)")
    parser.add_argument("--label-column", default=None, help="label column (default: detected)")


def user_error(command: str, error: Exception) -> int:
    """Print a bad-input error (wrong option, missing data, corrupt image, ...) without a traceback; exit code 2."""
    logging.getLogger(__name__).debug("%s failed", command, exc_info=error)
    print(f"gsp-hub {command}: error: {error}", file=sys.stderr)
    return 2


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
