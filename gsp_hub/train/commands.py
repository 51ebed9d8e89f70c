"""`gsp-hub train`, `gsp-hub eval` and `gsp-hub recipes`.

``train`` has one flag per :class:`~gsp_hub.train.config.TrainConfig` field (``--embed-dim``, ``--pool-kwargs
num_prototypes=32 gamma=5``, ``--no-verify-images``, ...), plus ``--recipe NAME`` (a paper's recipe,
:mod:`gsp_hub.train.recipes`, listed by ``gsp-hub recipes``) and ``--config run.yaml``. Precedence: defaults <
recipe < YAML < flags. With ``--resume`` and no ``--config`` the run's saved ``train_config.yaml`` takes the YAML's
place, so ``gsp-hub train --output-dir runs/x --resume`` continues ``runs/x`` as it was started. Multi-process:
``accelerate launch --multi_gpu --num_processes 2 -m gsp_hub train ...`` (two gloo processes on a CPU machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gsp_hub.cli import add_dataset_arguments, add_model_arguments, locate_model_argument

__all__ = ["add_config_arguments", "add_parser", "config_from_args", "configure_logging", "options_from_args",
           "parse_key_values", "train_config_from_args"]

_GROUP_TITLES = {
    "model": "model",
    "data": "data",
    "loss": "loss",
    "optimisation": "optimisation",
    "run": "run folder, checkpoints and evaluation",
}


def parse_key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["num_prototypes=32", "gamma=5.0"]`` -> ``{"num_prototypes": 32, "gamma": 5.0}`` (values read as YAML)."""
    import yaml

    values: dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"{flag} expects KEY=VALUE pairs (e.g. {flag} output_stride=8), got {pair!r}.")
        try:
            values[key] = yaml.safe_load(text) if text else None
        except yaml.YAMLError as error:
            raise ValueError(f"{flag} {pair!r}: the value is not valid YAML ({error}).") from error
    return values


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type | None = None,
                         group_titles: dict[str, str] | None = None) -> None:
    """One flag per field of ``config_cls`` (default :class:`TrainConfig`), grouped by the fields' ``group`` under
    ``group_titles``; defaults are shown but not set (only given flags override)."""
    from gsp_hub.train.config import TrainConfig, option_kinds

    config_cls = config_cls or TrainConfig
    groups = {key: parser.add_argument_group(title) for key, title in (group_titles or _GROUP_TITLES).items()}
    defaults = config_cls()
    for spec in config_cls.option_fields():
        group = groups[spec.metadata["group"]]
        default = getattr(defaults, spec.name)
        help_text = spec.metadata["help"]
        kind, _ = option_kinds(config_cls)[spec.name]  # X | None: the flag takes an X
        common: dict[str, Any] = dict(dest=spec.name, default=argparse.SUPPRESS)
        if spec.name == "resume":
            group.add_argument(_flag(spec.name), nargs="?", const="latest", metavar="CHECKPOINT",
                               help=f"{help_text} (bare --resume: latest)", **common)
        elif kind is bool:
            group.add_argument(_flag(spec.name), action=argparse.BooleanOptionalAction,
                               help=f"{help_text} (default: {default})", **common)
        elif kind is dict:
            shown = " ".join(f"{k}={v}" for k, v in default.items()) or "none"
            group.add_argument(_flag(spec.name), nargs="*", metavar="KEY=VALUE",
                               help=f"{help_text} (default: {shown})", **common)
        else:
            value_type = {int: int, float: float}.get(kind, str)
            metavar = {int: "N", float: "X"}.get(kind, spec.name.upper())
            shown = "" if default is None else f" (default: {default})"
            group.add_argument(_flag(spec.name), type=value_type, choices=spec.metadata["choices"],
                               metavar=None if spec.metadata["choices"] else metavar, help=help_text + shown,
                               **common)


def options_from_args(args: argparse.Namespace, config_cls: type, base: Mapping[str, Any]) -> dict[str, Any]:
    """The ``config_cls`` options of parsed arguments as a mapping: ``base`` (e.g. a recipe's options) < --config
    YAML (or the saved config of a resumed run, found in --output-dir, else ``base``'s, else the default) < explicit
    flags."""
    overrides = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(config_cls)
                 if hasattr(args, spec.name)}
    for name, value in overrides.items():
        if isinstance(value, list):
            overrides[name] = parse_key_values(value, _flag(name))
    if args.config is not None:
        return {**base, **config_cls.yaml_values(args.config, **overrides)}
    output_dir = overrides.get("output_dir", base.get("output_dir", config_cls().output_dir))
    saved = Path(output_dir) / config_cls.FILE_NAME
    if overrides.get("resume") and saved.is_file():
        return {**base, **config_cls.yaml_values(saved, **overrides)}
    return {**base, **overrides}


def config_from_args(args: argparse.Namespace, config_cls: type | None = None) -> Any:
    """The ``config_cls`` (default :class:`TrainConfig`) of parsed arguments: defaults < --config YAML (or the
    saved config of a resumed run) < explicit flags."""
    from gsp_hub.train.config import TrainConfig

    config_cls = config_cls or TrainConfig
    return config_cls.from_dict(options_from_args(args, config_cls, {}))


def train_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`TrainConfig` of `gsp-hub train`: :func:`config_from_args` over the options of ``--recipe NAME``
    when given (an unknown name, or a recipe without a data set, raises ValueError before any data is read)."""
    if args.recipe is None:
        return config_from_args(args)
    from gsp_hub.train.config import TrainConfig
    from gsp_hub.train.recipes import get_recipe

    try:
        recipe = get_recipe(args.recipe)
    except ValueError as error:
        raise ValueError(f"--recipe: {error}") from error
    config = recipe.config(**options_from_args(args, TrainConfig, recipe.options))
    logging.getLogger(__name__).info("recipe %s, version %d (%s)", recipe.name, recipe.version, recipe.source)
    return config


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "PIL", "matplotlib", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_summary(summary: dict[str, Any]) -> None:
    from gsp_hub.metrics import format_metrics

    best, initial = summary["best"], summary["initial"]
    if best is None:
        print("no training step was run; nothing exported.")
        return
    splits = summary["splits"]
    print(f"splits: train {splits['train']}; validation {splits['validation']}; test {splits['test']}")
    keys = [key for key in best if "/" not in key and ("@" in key or key in ("r_precision", "nmi"))]
    print(f"model chosen by {summary['selected_by']}: epoch {best['epoch']}, step {best['step']}, exported to "
          f"{summary['model_dir']}; its test-split metrics:")
    print(format_metrics({key: best[key] for key in keys}))
    if initial is not None:
        print(f"test split, untrained model: recall@1 {initial['recall@1']:.4f}, map@r {initial['map@r']:.4f}  ->  "
              f"trained: recall@1 {best['recall@1']:.4f}, map@r {best['map@r']:.4f}")
    raw_pixels = summary.get("baselines", {}).get("raw_pixels", {}).get("test")
    if raw_pixels is not None:
        print(f"test split, raw-pixel nearest neighbours: recall@1 {raw_pixels['recall@1']:.4f}, map@r "
              f"{raw_pixels['map@r']:.4f}")
    if "target_mass" in best:
        before = "" if initial is None else f"untrained {initial['target_mass']:.3f}  ->  trained "
        print(f"test split, pooling weight on the label tile (uniform 0.25): {before}{best['target_mass']:.3f}")


def _run_train(args: argparse.Namespace) -> int:
    configure_logging()
    from gsp_hub.train.metric_learning import train

    summary = train(train_config_from_args(args))
    from accelerate import PartialState

    if PartialState().is_main_process:
        _print_summary(summary)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    configure_logging()
    import torch
    from accelerate import Accelerator

    from gsp_hub.data import (
        DEFAULT_DATASET_NAME,
        create_image_transforms,
        load_image_dataset,
        make_splits,
        with_image_transform,
    )
    from gsp_hub.metrics import format_metrics
    from gsp_hub.train.data import eval_loader
    from gsp_hub.train.disk_embeddings import check_embeddings_directory, embed_split_to_disk, split_fingerprint
    from gsp_hub.train.evaluation import embed_split, split_retrieval_metrics

    if (args.query_split is not None or args.gallery_split is not None) and args.split != "test":
        raise ValueError(f"--query-split / --gallery-split make the test split's queries and gallery; drop them or "
                         f"--split {args.split}")
    if args.overwrite_embeddings and args.embeddings_dir is None:
        raise ValueError("--overwrite-embeddings starts an --embeddings-dir afresh; pass --embeddings-dir DIR too")
    if args.embeddings_dir is not None:
        check_embeddings_directory(args.embeddings_dir, "--embeddings-dir")
    source = locate_model_argument(args.model, args.weights)
    accelerator = Accelerator(cpu=args.cpu or not torch.cuda.is_available(), mixed_precision=args.mixed_precision)
    dataset = load_image_dataset(
        args.dataset, image_column=args.image_column, label_column=args.label_column,
        verify_images=args.verify_images, skip_bad_images=args.skip_bad_images,
        progress=accelerator.is_local_main_process,
    )
    splits = make_splits(dataset, args.split_protocol, query_split=args.query_split, gallery_split=args.gallery_split)
    model = source.load()
    transforms = create_image_transforms(model, input_size=args.img_size or None)
    rows = getattr(splits, args.split)
    loader = eval_loader(with_image_transform(rows, transforms.eval), args.batch_size, args.num_workers,
                         accelerator.device)
    num_queries = splits.num_test_queries if args.split == "test" else 0
    fingerprint = None if args.embeddings_dir is None else split_fingerprint(
        model, transforms.data_config, rows, split=args.split, mixed_precision=args.mixed_precision)
    network, loader = accelerator.prepare(model, loader)
    if fingerprint is None:
        embeddings, labels = embed_split(network, loader, accelerator)
        metrics = split_retrieval_metrics(embeddings, labels, num_queries)
    else:  # memory maps of the files, read block by block (a bf16 copy would load them)
        embeddings, labels = embed_split_to_disk(network, loader, accelerator, args.embeddings_dir,
                                                 fingerprint=fingerprint, overwrite=args.overwrite_embeddings)
        metrics = split_retrieval_metrics(embeddings, labels, num_queries, bf16_screening=False)
    if accelerator.is_main_process:
        print(f"{args.model} on {args.dataset or DEFAULT_DATASET_NAME} ({args.split} split, {len(labels)} images, "
              f"{splits.summary}):")
        print(format_metrics(metrics))
        if args.output:
            from gsp_hub.io import write_json

            write_json(args.output, metrics)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


def _describe_recipe(recipe: Any, *, details: bool) -> str:
    """A recipe's name, version, what it trains, its --dataset form and source; ``details``: also its notes and its
    options (YAML, in ``--help`` order)."""
    import textwrap

    from gsp_hub.train.config import TrainConfig

    text = (f"{recipe.name} (version {recipe.version}): {recipe.trains}\n"
            f"    --dataset {recipe.benchmark.dataset_form}\n    source: {recipe.source}\n")
    if not details:
        return text
    import yaml

    notes = textwrap.fill(recipe.notes, width=116, initial_indent="    notes: ", subsequent_indent="    ",
                          break_on_hyphens=False)
    options = {spec.name: recipe.options[spec.name] for spec in TrainConfig.option_fields()
               if spec.name in recipe.options}
    return f"{text}{notes}\n    options:\n" + textwrap.indent(yaml.safe_dump(options, sort_keys=False), " " * 6)


def _run_recipes(args: argparse.Namespace) -> int:
    from gsp_hub.train.recipes import get_recipe, list_recipes

    if args.name is not None:
        print(_describe_recipe(get_recipe(args.name), details=True), end="")
        return 0
    recipes = list_recipes()
    print(f"{len(recipes)} training recipes (gsp-hub train --recipe NAME --dataset PREFIX:ROOT; flags override a "
          "recipe's values; gsp-hub recipes NAME shows its notes and options):")
    print("".join(_describe_recipe(recipe, details=False) for recipe in recipes), end="")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `gsp-hub train`, `gsp-hub recipes` and `gsp-hub eval`."""
    train_parser = subparsers.add_parser(
        "train",
        help="train a metric-learning model (GSP + ZSR by default) with accelerate",
        description=(
            "Train a timm metric-learning model on an image data set with AdamW and accelerate; evaluate\n"
            "retrieval (Recall@K, R-Precision, MAP@R) on the validation and test splits every epoch. Validation\n"
            "chooses the exported model; the test split is only reported.\n\n"
            "Without arguments: a GSP model on the embedded Fashion-Collage (64x64 collages of one\n"
            "Fashion-MNIST label tile among three MNIST digits; classes 0-3 train, 4-6 validation, 7-9 test),\n"
            "a few minutes on 2 CPU cores. It reports what it must beat (raw-pixel nearest neighbours, the\n"
            "untrained model) and the pooling weight on the label tile (uniform: 0.25).\n\n"
            "Writes into --output-dir: model/ (best by validation MAP@R, Hub format), metrics.json,\n"
            "train_config.yaml, checkpoints/, logs/ (tensorboard) and curves.png.\n\n"
            "Options come from the defaults shown below, then --recipe, then --config YAML, then the\n"
            "flags: an explicit flag always wins (gsp-hub train --recipe gsp-pytorch-cub200 --dataset\n"
            "cub200:ROOT --epochs 5 trains that recipe for 5 epochs).\n"
            "Multi-process: accelerate launch --multi_gpu --num_processes 2 -m gsp_hub train ..."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train_parser.add_argument("--recipe", metavar="NAME",
                              help="start from a paper's recipe (`gsp-hub recipes` lists them); --config and the "
                              "flags override its values (a KEY=VALUE flag such as --loss-kwargs replaces the "
                              "recipe's whole mapping: `gsp-hub recipes NAME` shows it); a benchmark recipe needs "
                              "--dataset PREFIX:ROOT")
    train_parser.add_argument("--config", type=Path, metavar="YAML",
                              help="YAML file of options (names as in train_config.yaml); it overrides --recipe, "
                              "the flags override it")
    add_config_arguments(train_parser)
    train_parser.set_defaults(func=_run_train)

    recipes_parser = subparsers.add_parser(
        "recipes",
        help="list the papers' training recipes for `gsp-hub train --recipe NAME`",
        description="List the named, versioned training recipes (GSP, CCP, XML on CUB-200-2011, Cars196, SOP, "
        "In-shop): name, version, what each trains, the --dataset it expects and its source in the specs. With a "
        "NAME: also its substitutions, approximations and options.",
    )
    recipes_parser.add_argument("name", nargs="?", metavar="NAME", help="show this recipe's notes and options")
    recipes_parser.set_defaults(func=_run_recipes)

    eval_parser = subparsers.add_parser(
        "eval",
        help="evaluate a trained model's retrieval metrics on a data set",
        description="Embed a data set's test split with a saved model (a run or export folder, a Hub id, a zoo "
        "model, or a timm name with --weights) and print Recall@K, R-Precision and MAP@R (cosine; leave-one-out, or "
        "queries searching a gallery with --query-split / --gallery-split).",
    )
    add_model_arguments(eval_parser)
    add_dataset_arguments(eval_parser, "evaluate")
    eval_parser.add_argument("--query-split", default=None,
                             help="with --gallery-split: the test rows of this split search those of the gallery "
                             "split (In-shop: --query-split query --gallery-split gallery) instead of leave-one-out")
    eval_parser.add_argument("--gallery-split", default=None, help="the gallery searched by --query-split")
    eval_parser.add_argument("--verify-images", action=argparse.BooleanOptionalAction, default=True,
                             help="decode every image once first to find corrupt files (default: on)")
    eval_parser.add_argument("--skip-bad-images", action="store_true",
                             help="drop corrupt images with a counted warning instead of failing")
    eval_parser.add_argument("--img-size", type=int, default=0,
                             help="input size in pixels (default: the model's exported preprocessing)")
    eval_parser.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    eval_parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (default: 0)")
    eval_parser.add_argument("--mixed-precision", choices=("no", "bf16"), default="no",
                             help="autocast precision of the model (default: no)")
    eval_parser.add_argument("--output", type=Path, default=None, help="also write the metrics to this JSON file")
    eval_parser.add_argument("--embeddings-dir", type=Path, default=None, metavar="DIR",
                             help="write the embeddings to DIR/embeddings.npy batch by batch and score them from "
                             "disk (for galleries larger than memory); a rerun resumes an interrupted DIR and "
                             "reuses a complete one")
    eval_parser.add_argument("--overwrite-embeddings", action="store_true",
                             help="embed again into an --embeddings-dir that holds another model's or data set's "
                             "embeddings (or this one's)")
    eval_parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")
    eval_parser.set_defaults(func=_run_eval)
