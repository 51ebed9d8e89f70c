"""Training throughput: a gsp_hub recipe's step against timm's own ``train.py`` loop, same model, batch and images.

Goal (issue 22): gsp_hub >= 0.95x timm's images/s for ResNet-50 at 224 px, batch 32, on the CPU, in fp32 and bf16
autocast, channels-last on and off.

What is compared, each run in a fresh process:

* **timm**: timm's own ``train.py`` (not a copy: the file of the pytorch-image-models repository, given with
  ``--timm-train``) training ``--model`` as an image classifier with cross-entropy, AdamW, its own data loader
  (ImageFolder, prefetcher) and its own per-update timing;
* **gsp_hub**: ``python -m gsp_hub train --recipe RECIPE`` (default ``gsp-mlrc-cub200``: GSP with 64 prototypes +
  ZSR + XBM + C1, 128-d, batches of 8 classes x 4 images, AdamW) with ``--backbone`` set to the same timm model,
  the m-per-class sampler, ``datasets`` decoding, accelerate, the engine's loop, callbacks and progress bar.

Same backbone, batch and images; what differs is what each trains on top (timm: a linear classifier and
cross-entropy; gsp_hub: the recipe's embedding, GSP pooling and losses) and its loop, so the ratio is what a
gsp_hub recipe step costs over timm's plain classification step.

Host memory (``--allocator``): in a CPU run gsp_hub keeps the memory a step frees for the next step (glibc's malloc
settings, :mod:`gsp_hub.train.host_memory`: no mmap / unmap and no page faults for the step's large buffers), and
timm's ``train.py`` does not. ``shipped`` (the default) compares each as it ships; ``reuse`` gives timm's process
the same settings (``GLIBC_TUNABLES``), to show what remains with the allocator equal; ``system`` turns them off
in gsp_hub (the comparison before gsp_hub had them).

Both read the same folder of real Tiny-ImageNet JPEGs (``ROOT/train/<class>/*.JPEG``, written from
``--tiny-imagenet`` into a temporary folder; gsp_hub also gets a small ``ROOT/test`` split of other classes, which
it evaluates once after the timed steps), with the recipe's training augmentation on both sides (random resized
crop with the recipe's scale and ratio, flip, no colour jitter, the model's interpolation and normalisation), the
same number of DataLoader workers (``--workers``), no pretrained weights, the recipe's learning rate and weight
decay. Each run trains one epoch of ``--warmup-steps`` + ``--steps`` optimizer steps (timm: every batch of the
folder, at least that many; gsp_hub: ``--max-steps``); the warm-up steps are excluded (they include worker
start-up, allocator growth and GSP's prototype warm-up: the recipe's ``memory_size`` is lowered to its minimum,
2 x 64 prototypes = 4 batches of 32, so that the measured gsp_hub steps include ZSR as in a long run).

Measured the same way on both sides: the seconds from the end of one optimizer step to the end of the next (data
loading included), as timm's ``train.py`` logs them (``Time: 0.123s``, ``--log-interval 1``) and gsp_hub's engine
logs them (``step N: ... 0.123 s per step``, ``--log-every 1``); a run's images/s is batch x steps / their sum.
Both logs also give the part of each step spent waiting for the next batch (timm's ``Data:``, gsp_hub's ``data ...
s per step``): the table prints each side's median, which tells a slower loader from a slower step. The
table (after one line per run) gives the median over ``--repeats`` runs of each side, interleaved (timm then
gsp_hub, then the other way round) so that changes in machine load hit both sides, their ratio, the CPU's
instruction sets, and the oneDNN kernels that ran the model's convolutions in each setting (one forward +
backward of the model with ``ONEDNN_VERBOSE=1``; e.g. ``jit_bf16:avx512_core_bf16`` where the CPU has AVX512-BF16,
``brg_conv_fwd:avx512_core`` for fp32).

Getting timm's ``train.py`` (from the repository, outside this one; the installed timm package has no train.py and
neither has its sdist). The v1.0.31 release has no tag in the repository mirror available here (its newest
snapshot is 1.0.29.dev0, commit aa4b5850, 2026-08-08); that snapshot's ``train.py`` runs on the installed timm
1.0.31 (checked on the CPU, fp32 and bf16, channels-last on and off)::

    git clone https://github.com/huggingface/pytorch-image-models /tmp/pytorch-image-models
    mkdir -p /work/timm_src
    git -C /tmp/pytorch-image-models archive v1.0.31 train.py | tar x -C /work/timm_src   # or aa4b5850

Usage (on a quiet machine: every run takes the CPU's cores; about 2 x 4 settings x repeats x 15 ResNet-50 steps)::

    python benchmarks/bench_train_vs_timm.py --timm-train /work/timm_src/train.py
    python benchmarks/bench_train_vs_timm.py --timm-train /work/timm_src/train.py --steps 20 --repeats 5
    python benchmarks/bench_train_vs_timm.py --timm-train /work/timm_src/train.py --settings bf16_nchw
    python benchmarks/bench_train_vs_timm.py --timm-train /work/timm_src/train.py --allocator reuse  # same malloc
    # a check of the machinery in a few minutes: a small model, 2 timed steps; --keep DIR keeps images and logs
    python benchmarks/bench_train_vs_timm.py --timm-train /work/timm_src/train.py --model resnet18 --img-size 64 \\
        --warmup-steps 1 --steps 2 --repeats 1

``--device cuda`` runs both on the GPU instead (gsp_hub without ``--cpu``; timm ``--device cuda``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
GOAL = 0.95  # gsp_hub images/s over timm's
# (update index from 0, seconds, of which waiting for data)
TIMM_STEP = re.compile(r"Train: \d+ \[\s*(\d+)/\d+.*?Time: ([\d.]+)s,.*?Data: ([\d.]+)")
# (optimizer step from 1, seconds, of which waiting for data)
GSP_HUB_STEP = re.compile(r"step (\d+): loss \S+, lr \S+, ([\d.]+) s per step, \S+ images/s, data ([\d.]+) s per step")
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
ONEDNN_CONVOLUTION = re.compile(r"onednn_verbose,(?:v1,)?primitive,exec,cpu,convolution,([^,]+),([^,]+),")
ALLOCATORS = {
    "shipped": "each side as it ships: gsp_hub reuses freed host memory in a CPU run, timm's train.py does not",
    "reuse": "both reuse freed host memory (timm's train.py through GLIBC_TUNABLES)",
    "system": "neither does (gsp_hub with --no-reuse-freed-memory)",
}
# the recipe's timm.data.create_transform options -> train.py's flags
TIMM_AUGMENTATION_FLAGS = {"scale": "--scale", "ratio": "--ratio", "hflip": "--hflip", "color_jitter": "--color-jitter",
                           "re_prob": "--reprob"}


@dataclass(frozen=True)
class Setting:
    """One measured configuration: bf16 autocast or fp32, channels-last memory format or not."""

    bf16: bool
    channels_last: bool

    @property
    def name(self) -> str:
        return f"{'bf16' if self.bf16 else 'fp32'}, channels-last {'on' if self.channels_last else 'off'}"

    @property
    def slug(self) -> str:
        return f"{'bf16' if self.bf16 else 'fp32'}_{'nhwc' if self.channels_last else 'nchw'}"

    def timm_flags(self) -> list[str]:
        return [*(["--amp", "--amp-dtype", "bfloat16"] if self.bf16 else []),
                *(["--channels-last"] if self.channels_last else [])]

    def gsp_hub_flags(self) -> list[str]:
        return ["--mixed-precision", "bf16" if self.bf16 else "no",
                "--channels-last" if self.channels_last else "--no-channels-last"]


SETTINGS = tuple(Setting(bf16, channels_last) for bf16 in (False, True) for channels_last in (False, True))


@dataclass(frozen=True)
class Workload:
    """What both sides train: ``recipe`` options (a mapping of TrainConfig options), model, input size, batch,
    steps, workers and device, on the image folder ``root`` (``train/`` of ``train_classes`` classes)."""

    recipe: str
    options: Mapping[str, Any]
    model: str
    img_size: int
    batch_size: int
    warmup_steps: int
    steps: int
    workers: int
    device: str
    root: Path
    train_classes: int
    allocator: str = "shipped"

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.steps

    def timm_command(self, train_py: Path, setting: Setting, output: Path) -> list[str]:
        """timm's train.py on ``root/train`` (no validation split), one epoch of :attr:`total_steps` updates."""
        options = self.options
        return [sys.executable, str(train_py), "--data-dir", str(self.root), "--train-split", "train",
                "--val-split", "", "--model", self.model, "--num-classes", str(self.train_classes),
                "--img-size", str(self.img_size), "--batch-size", str(self.batch_size), "--epochs", "1",
                "--opt", "adamw", "--lr", str(options["lr"]), "--weight-decay", str(options["weight_decay"]),
                *timm_augmentation_flags(options["augment_kwargs"]), "--train-interpolation", "",
                "--workers", str(self.workers), "--device", self.device, "--log-interval", "1", "--seed", "0",
                "--checkpoint-hist", "1", "--output", str(output), *setting.timm_flags()]

    def gsp_hub_command(self, setting: Setting, output: Path) -> list[str]:
        """``python -m gsp_hub train --recipe`` with the same model, input size, batch and workers, stopped after
        :attr:`total_steps` optimizer steps; no validation classes, no evaluation before training."""
        return [sys.executable, "-m", "gsp_hub", "train", "--recipe", self.recipe, "--dataset", str(self.root),
                "--backbone", self.model, "--no-pretrained", "--img-size", str(self.img_size),
                "--batch-size", str(self.batch_size), "--epochs", "1", "--max-steps", str(self.total_steps),
                "--validation-fraction", "0", "--no-eval-at-start", "--no-verify-images",
                "--pool-kwargs", *(f"{key}={value}" for key, value in gsp_pool_kwargs(self.options).items()),
                "--num-workers", str(self.workers), "--log-every", "1", "--seed", "0", "--output-dir", str(output),
                "--overwrite", *(["--cpu"] if self.device == "cpu" else []), *setting.gsp_hub_flags(),
                *(["--no-reuse-freed-memory"] if self.allocator == "system" else [])]

    def timm_environment(self) -> dict[str, str]:
        """train.py's environment: with ``allocator='reuse'`` glibc's malloc set at start-up (GLIBC_TUNABLES) as
        gsp_hub sets it for a CPU run (:mod:`gsp_hub.train.host_memory`)."""
        if self.allocator != "reuse":
            return dict(os.environ)
        from gsp_hub.train.host_memory import GLIBC_TUNABLES  # main() put this checkout on sys.path

        return {**os.environ, "GLIBC_TUNABLES": GLIBC_TUNABLES}


def timm_augmentation_flags(augment_kwargs: Mapping[str, Any]) -> list[str]:
    """train.py's flags for the recipe's augmentation options (``color_jitter: None`` -> ``--color-jitter 0``)."""
    unknown = sorted(set(augment_kwargs) - set(TIMM_AUGMENTATION_FLAGS))
    if unknown:
        raise ValueError(f"the recipe's augment_kwargs {unknown} have no train.py flag here; extend "
                         "TIMM_AUGMENTATION_FLAGS or choose another --recipe.")
    flags = []
    for key, value in augment_kwargs.items():
        values = value if isinstance(value, (list, tuple)) else [0 if value is None else value]
        flags += [TIMM_AUGMENTATION_FLAGS[key], *map(str, values)]
    return flags


def gsp_pool_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe's pool options, a GSP pool's warm-up memory lowered to its minimum (2 x num_prototypes)."""
    pool_kwargs = dict(options["pool_kwargs"])
    if options.get("pool") == "gsp":
        pool_kwargs["memory_size"] = 2 * pool_kwargs["num_prototypes"]
    return pool_kwargs


def write_image_folder(tiny_imagenet: Path, root: Path, train_classes: int, per_class: int,
                       test_classes: int = 4, test_per_class: int = 5) -> None:
    """``root/train/<wnid>/<file>.JPEG``: ``per_class`` JPEGs of each of the first ``train_classes`` Tiny-ImageNet
    classes, as stored (64x64); ``root/test/<wnid>/``: ``test_per_class`` of each of the next ``test_classes``."""
    import pyarrow.parquet as pq

    wanted = {**{label: ("train", per_class) for label in range(train_classes)},
              **{label: ("test", test_per_class) for label in range(train_classes, train_classes + test_classes)}}
    written = dict.fromkeys(wanted, 0)
    for parquet in sorted((tiny_imagenet / "data").glob("train-*.parquet")):
        for row in pq.read_table(parquet, columns=["image", "label"]).to_pylist():
            label = row["label"]
            if label not in wanted or written[label] == wanted[label][1]:
                continue
            name = Path(row["image"]["path"]).name
            folder = root / wanted[label][0] / name.split("_")[0]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(row["image"]["bytes"])
            written[label] += 1
    short = {label: count for label, count in written.items() if count < wanted[label][1]}
    if short:
        raise ValueError(f"{tiny_imagenet} has too few training images for classes {sorted(short)} "
                         f"({per_class} wanted per class); raise --train-classes or lower --steps.")


def step_seconds(log: str, pattern: re.Pattern[str], first: int, warmup_steps: int,
                 steps: int) -> list[tuple[float, float]]:
    """(seconds, of which waiting for data) of the steps after the first ``warmup_steps`` (numbered from ``first``)
    in a run's ``log``."""
    seconds = {int(step) - first: (float(total), float(data)) for step, total, data in pattern.findall(log)}
    measured = [seconds.get(index) for index in range(warmup_steps, warmup_steps + steps)]
    if None in measured:
        raise RuntimeError(f"the log has {len(seconds)} timed steps, fewer than {warmup_steps} + {steps}:\n"
                           f"{log[-3000:]}")
    return measured


def run_side(command: list[str], log_path: Path, environment: Mapping[str, str], cwd: Path) -> str:
    """Run ``command`` in a fresh process; its output (stdout and stderr) goes to ``log_path`` and is returned."""
    with log_path.open("w") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=dict(environment), cwd=cwd,
                                   check=False)
    text = log_path.read_text(errors="replace")
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}\nexited with {completed.returncode}:\n{text[-3000:]}")
    return text


def images_per_second(workload: Workload, side: str, setting: Setting, train_py: Path, folder: Path,
                      repeat: int) -> tuple[float, float]:
    """One run of ``side`` ('timm' or 'gsp_hub'): batch x measured steps / their seconds, and the mean seconds per
    step its loop waited for data."""
    name = f"{side}_{setting.slug}_{repeat}"
    output = folder / name
    output.mkdir(exist_ok=True)
    if side == "timm":
        text = run_side(workload.timm_command(train_py, setting, output), folder / f"{name}.log",
                        workload.timm_environment(), output)
        seconds = step_seconds(text, TIMM_STEP, 0, workload.warmup_steps, workload.steps)
    else:  # this checkout's gsp_hub, whatever is installed
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                                  os.environ.get("PYTHONPATH")]))}
        text = run_side(workload.gsp_hub_command(setting, output / "run"), folder / f"{name}.log", environment,
                        REPO_ROOT)
        seconds = step_seconds(text, GSP_HUB_STEP, 1, workload.warmup_steps, workload.steps)
    shutil.rmtree(output)  # checkpoints and exports of hundreds of MB; the log stays
    return (workload.batch_size * len(seconds) / sum(total for total, _ in seconds),
            statistics.mean(data for _, data in seconds))


def probe_convolutions(model: str, img_size: int, bf16: bool, channels_last: bool, device: str) -> None:
    """Child process: one forward + backward of ``model`` on a batch of 2 as the setting runs it (oneDNN prints the
    kernels it runs when the parent sets ONEDNN_VERBOSE=1)."""
    import timm
    import torch

    network = timm.create_model(model, num_classes=16).to(device).train()
    images = torch.randn(2, 3, img_size, img_size, device=device)
    if channels_last:
        network, images = network.to(memory_format=torch.channels_last), images.contiguous(
            memory_format=torch.channels_last)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        network(images).float().sum().backward()


def convolution_kernels(workload: Workload, setting: Setting) -> str:
    """The oneDNN implementations of the model's convolutions in ``setting`` ('prop kind: implementation, ...'),
    or a note that none ran through oneDNN."""
    command = [sys.executable, __file__, "--probe", workload.model, str(workload.img_size), str(int(setting.bf16)),
               str(int(setting.channels_last)), workload.device]
    completed = subprocess.run(command, capture_output=True, text=True, check=False,
                               env={**os.environ, "ONEDNN_VERBOSE": "1"})
    if completed.returncode != 0:
        return f"(probe failed: {completed.stderr.strip().splitlines()[-1:]})"
    kernels = sorted({f"{kind}: {implementation}"
                      for implementation, kind in ONEDNN_CONVOLUTION.findall(completed.stdout)})
    return ", ".join(kernels) or "no oneDNN convolution (ATen's own kernels)"


def describe_machine() -> str:
    """CPU model, its vector / matrix instruction sets, torch's kernel level and threads."""
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")),
                     []))
    present = [flag for flag in CPU_FLAGS if flag in flags]
    return (f"{model}, {os.cpu_count()} cores; instruction sets: {', '.join(present) or 'none of ' + str(CPU_FLAGS)}; "
            f"torch {torch.__version__} kernels {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads, oneDNN bf16 "
            f"{'supported' if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'not supported'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timm-train", type=Path,
                        help="timm's train.py from the pytorch-image-models repository (required; see above)")
    parser.add_argument("--recipe", default="gsp-mlrc-cub200", help="gsp_hub recipe (batch 32 = 8 x 4)")
    parser.add_argument("--model", default=None, help="timm model of both sides (default: the recipe's backbone)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's (32)")
    parser.add_argument("--warmup-steps", type=int, default=5, help="steps of each run not timed")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side per setting (median reported)")
    parser.add_argument("--allocator", choices=tuple(ALLOCATORS), default="shipped",
                        help="host memory reuse on the CPU: " + "; ".join(f"{key}: {text}"
                                                                        for key, text in ALLOCATORS.items()))
    parser.add_argument("--settings", nargs="+", choices=[setting.slug for setting in SETTINGS],
                        default=[setting.slug for setting in SETTINGS], help="the settings to run (default: all four)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="DataLoader workers of both sides (default: half the cores)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--train-classes", type=int, default=16, help="Tiny-ImageNet classes in the training folder")
    parser.add_argument("--tiny-imagenet", type=Path, default=Path("/work/shared/data/tiny-imagenet-200"),
                        help="the Tiny-ImageNet-200 parquet release (data/train-*.parquet)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the image folder and the runs' logs here")
    parser.add_argument("--probe", nargs=5, help=argparse.SUPPRESS)  # child: probe_convolutions
    args = parser.parse_args()
    if args.probe:
        model, img_size, bf16, channels_last, device = args.probe
        probe_convolutions(model, int(img_size), bf16 == "1", channels_last == "1", device)
        return
    if args.timm_train is None or not args.timm_train.is_file():
        parser.error(f"--timm-train must name timm's train.py, got {args.timm_train}; extract it from the "
                     "pytorch-image-models repository as --help describes.")

    if min(args.steps, args.repeats, args.img_size, args.workers + 1) < 1 or args.warmup_steps < 0:
        parser.error(f"--steps {args.steps}, --repeats {args.repeats}, --img-size {args.img_size} must be >= 1, "
                     f"--warmup-steps {args.warmup_steps} and --workers {args.workers} >= 0.")
    sys.path.insert(0, str(REPO_ROOT))
    from gsp_hub.train.recipes import get_recipe

    options = get_recipe(args.recipe).options
    batch_size = args.batch_size or options["batch_size"]
    if batch_size % options["m_per_class"] or args.train_classes < 2 * batch_size // options["m_per_class"]:
        parser.error(f"--batch-size {batch_size} must be a multiple of the recipe's m_per_class "
                     f"{options['m_per_class']}, and --train-classes {args.train_classes} at least twice the classes "
                     "of a batch.")
    total_images = (args.warmup_steps + args.steps) * batch_size
    per_class = math.ceil(total_images / args.train_classes)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        workload = Workload(recipe=args.recipe, options=options, model=args.model or options["backbone"],
                            img_size=args.img_size, batch_size=batch_size, warmup_steps=args.warmup_steps,
                            steps=args.steps, workers=args.workers, device=args.device, root=folder / "images",
                            train_classes=args.train_classes, allocator=args.allocator)
        write_image_folder(args.tiny_imagenet, workload.root, args.train_classes, per_class)
        print(describe_machine())
        print(f"{workload.model} at {args.img_size} px, batch {batch_size}, {args.workers} workers, {args.device}; "
              f"recipe {args.recipe}; {args.warmup_steps} warm-up + {args.steps} timed steps per run, "
              f"{args.repeats} interleaved runs per side; {args.train_classes} x {per_class} Tiny-ImageNet JPEGs; "
              f"allocator {args.allocator}: {ALLOCATORS[args.allocator]}", flush=True)
        settings = [setting for setting in SETTINGS if setting.slug in args.settings]
        rates: dict[tuple[Setting, str], list[float]] = {}
        data_waits: dict[tuple[Setting, str], list[float]] = {}
        for repeat in range(args.repeats):
            for setting in settings:
                for side in ("timm", "gsp_hub") if repeat % 2 == 0 else ("gsp_hub", "timm"):
                    rate, data_wait = images_per_second(workload, side, setting, args.timm_train, folder, repeat)
                    rates.setdefault((setting, side), []).append(rate)
                    data_waits.setdefault((setting, side), []).append(data_wait)
                    print(f"  run {repeat + 1}, {setting.name:<27} {side:<8} {rate:8.2f} images/s, "
                          f"waiting {data_wait:.3f} s per step for data", flush=True)
        print(f"\n{'setting':<27}{'timm img/s':>12}{'gsp_hub img/s':>15}{'ratio':>8}{'>= 0.95':>9}"
              f"{'data wait s/step (timm / gsp_hub)':>36}  oneDNN convolution kernels")
        for setting in settings:
            timm_rate, ours = (statistics.median(rates[setting, side]) for side in ("timm", "gsp_hub"))
            timm_wait, our_wait = (statistics.median(data_waits[setting, side]) for side in ("timm", "gsp_hub"))
            ratio = ours / timm_rate
            print(f"{setting.name:<27}{timm_rate:>12.2f}{ours:>15.2f}{ratio:>8.3f}"
                  f"{'met' if ratio >= GOAL else 'NOT met':>9}{f'{timm_wait:.3f} / {our_wait:.3f}':>36}  "
                  f"{convolution_kernels(workload, setting)}")
        print(f"(medians of {args.repeats} runs each; ratio = gsp_hub / timm images/s; logs in "
              f"{folder if args.keep else 'a deleted temporary folder (--keep DIR keeps them)'})")


if __name__ == "__main__":
    main()
