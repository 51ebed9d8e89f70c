"""The `gsp-hub` command line: parse the arguments, then call the package.

Every sub-command lives in its own module that defines ``add_parser(subparsers)``; that function adds one
sub-parser and sets ``func`` (called with the parsed ``argparse.Namespace``, returns an exit code); a command with
sub-commands stores their name in ``<command>_command``. Command modules import heavy libraries inside ``func`` so
that ``gsp-hub --help`` stays instant (``benchmarks/bench_cli.py``). They belong to this layer: they may use the
helpers below, the library modules never do.

Bad input is reported here, once for every command: a :data:`USER_ERRORS` exception raised by ``func`` prints one
line ``gsp-hub <command>: error: <message>`` (exit code 2); ``gsp-hub --debug <command> ...`` lets it propagate
with its traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["USER_ERRORS", "add_dataset_arguments", "add_model_arguments", "build_parser", "locate_model_argument",
           "main", "user_error"]

COMMAND_MODULES: tuple[str, ...] = (
    "gsp_hub.models_commands",
    "gsp_hub.hub.commands",
    "gsp_hub.train.commands",
    "gsp_hub.index.commands",
    "gsp_hub.train.distill_commands",
    "gsp_hub.viz.commands",
)

# Raised by the package for bad input: a wrong option value, a missing or unreadable file, an unknown name, no
# network. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, OSError)


def add_dataset_arguments(parser: argparse.ArgumentParser, purpose: str) -> None:
    """The options that pick a data set split: --dataset, --split-protocol, --split, --image-column,
    --label-column (``purpose`` completes "which side of the split to ...")."""
    parser.add_argument("--dataset", default=None, help="data set as for `gsp-hub train --dataset`: a Hub id, a "
                        "save_to_disk, Hub-layout, parquet or image folder, a .parquet file, a .csv / .jsonl table "
                        "of image paths and labels, or a DML benchmark folder as cub200:ROOT, cars196:ROOT, sop:ROOT "
                        "or inshop:ROOT, or an embedded data set, fashion-collage (the default) or fashion-mnist-subset")
    parser.add_argument("--split-protocol", choices=("zero-shot", "own"), default="zero-shot",
                        help="how to split classes / rows (default: zero-shot)")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help=f"which side of the split to {purpose} (default: test)")
    parser.add_argument("--image-column", default=None, help="image column (default: detected)")
    parser.add_argument("--label-column", default=None, help="label column (default: detected)")


def add_model_arguments(parser: argparse.ArgumentParser, *, required: bool = True, default: str = "") -> None:
    """--model (any ``gsp_hub.load_model`` spec) and --weights (safetensors weights of a timm --model);
    ``default`` completes --model's help when it is optional."""
    parser.add_argument("--model", required=required, help="run folder (uses its model/), export folder, "
                        "local-dir:PATH, Hub id (hf-hub:org/name), zoo model (e.g. gsp_tf_efficientnet_lite0.tin200), "
                        f"or timm name (with --weights, or with its own pretrained weights){default}")
    parser.add_argument("--weights", help="safetensors weights of the timm architecture --model (strict load)")


def locate_model_argument(model: str, weights: str | None) -> Any:
    """--model / --weights resolved and checked (``gsp_hub.hub.locate_model``) before any work; a bad spec raises
    the same error type with the flags in front."""
    from gsp_hub.hub.loading import locate_model

    try:
        return locate_model(model, weights=weights)
    except (FileNotFoundError, ValueError, TypeError) as error:
        flags = f"--model {model}" + (f" --weights {weights}" if weights else "")
        raise type(error)(f"{flags}: {error}") from error


def user_error(command: str, error: Exception) -> int:
    """Print a bad-input error (wrong option, missing data, corrupt image, ...) as one line; exit code 2."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error  # str(KeyError) is a repr
    print(f"gsp-hub {command}: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The full `gsp-hub` parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="gsp-hub",
        description="Transport- and prototype-based pooling, metric learning and distillation "
        "as timm / Hugging Face models.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show its full traceback instead of one line (for bug reports)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _command_name(args: argparse.Namespace) -> str:
    """``index search`` for `gsp-hub index search ...`: the command and its sub-command, if any."""
    sub_command = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub_command}" if sub_command else args.command


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gsp-hub` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as error:
        if args.debug:
            raise
        return user_error(_command_name(args), error)
