"""`gsp-hub distill`: one flag per :class:`~gsp_hub.train.distill.DistillConfig` field, plus ``--config run.yaml``.

Precedence: defaults < YAML < flags; with ``--resume`` and no ``--config`` the run's saved ``distill_config.yaml``
is the base, so ``gsp-hub distill --output-dir runs/x --resume`` continues ``runs/x`` as it was started.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]

_GROUP_TITLES = {
    "model": "teacher, student and method",
    "data": "data",
    "optimisation": "optimisation",
    "run": "run folder, checkpoints and evaluation",
}

_EPILOG = """\
CIFAR-10, ResNet-56 -> ResNet-20 (the shared JPEG copy and teacher weights; paths relative to the project root):

  gsp-hub distill --teacher cifar_resnet56 \\
      --teacher-weights ../shared/data/cifar10-resnets/resnet56.safetensors \\
      --dataset ../shared/data/cifar10-jpeg --student cifar_resnet20 --method letkd2 \\
      --epochs 240 --output-dir runs/letkd2-r56-r20

A quick look (a few minutes on a CPU): add --max-train-images 2048 --max-test-images 1000 --num-codes 256 --epochs 2.
Resume after a stop: gsp-hub distill --output-dir runs/letkd2-r56-r20 --resume
Evaluate the distilled student without teacher or labels (model/ is a timm Hub folder for every method):

  student = gsp_hub.load_model("runs/letkd2-r56-r20")     # or timm.create_model("local-dir:.../model", pretrained=True)
  classes = student(images).argmax(1)                     # images preprocessed as timm.data.resolve_model_data_config
"""


def _run_distill(args: argparse.Namespace) -> int:
    from gsp_hub.train.commands import config_from_args, configure_logging

    configure_logging()
    from gsp_hub.train.distill import DistillConfig
    from gsp_hub.train.distillation import distill

    summary = distill(config_from_args(args, DistillConfig))
    from accelerate import PartialState

    if PartialState().is_main_process:
        _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    best, teacher = summary["best"], summary["teacher"]
    if best is None:
        print("no training step was run; nothing exported.")
        return
    print(f"{summary['method']}: best student top-1 {best['top1']:.4f} (epoch {best['epoch']}, step {best['step']}), "
          f"last {summary['last']['top1']:.4f}; exported to {summary['model_dir']}")
    if teacher is not None:
        print(f"teacher top-1 {teacher['top1']:.4f} on the same test images")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `gsp-hub distill`."""
    from gsp_hub.train.commands import add_config_arguments
    from gsp_hub.train.distill import DistillConfig

    parser = subparsers.add_parser(
        "distill",
        help="distil a timm teacher into a timm student: vanilla, Hinton KD, letKD-1, letKD-2",
        description=(
            "Train a student classifier with accelerate from a frozen teacher: CE (vanilla), Hinton KD (T=4),\n"
            "or LeTKD (KD layers fed forward in the student, supervised by the teacher's k-means codewords\n"
            "and, letkd2, sub-class decisions; the targets are fitted once and saved in the run folder).\n"
            "Top-1 on the test split every epoch; the best student is exported to --output-dir/model.\n\n"
            "Required: --teacher, --teacher-weights, --dataset (a data set with train and test splits).\n"
            "--teacher-weights / --student-weights: a safetensors file of --teacher / --student, or any\n"
            "gsp_hub.load_model spec (export or run folder, hf-hub:org/name, zoo model).\n"
            "Writes: model/, metrics.json, distill_config.yaml, checkpoints/, logs/ (tensorboard), curves.png."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="YAML",
                        help="YAML file of options (names as in distill_config.yaml); flags override it")
    add_config_arguments(parser, DistillConfig, _GROUP_TITLES)
    parser.set_defaults(func=_run_distill)
