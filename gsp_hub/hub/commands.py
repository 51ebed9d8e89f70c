"""`gsp-hub export | push | card`: publish trained models as Hub folders with model cards.

``export`` converts a trained model (any :func:`gsp_hub.hub.load_model` spec: an export or run folder, a Hub id, a
zoo tag, or a bare ``.safetensors`` checkpoint with ``--model``) into an output of the chosen ``--format``. Formats
are entries of :data:`EXPORT_FORMATS` (name -> writer taking the loaded model and the parsed arguments); ``hub``
writes a Hub folder (config.json + model.safetensors + README.md). A new format adds one writer and its own options
to the same command.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gsp_hub.export.commands import FORMAT_WRITERS, add_export_arguments

__all__ = ["EXPORT_FORMATS", "METRICS_FILE", "RECIPE_FILES", "add_parser"]

# A `gsp-hub train` run folder: the best model in model/, metrics.json ("best" entry) and train_config.yaml.
METRICS_FILE = "metrics.json"
RECIPE_FILES = ("train_config.yaml", "train_config.json", "config.yaml")


def _locate_source(args: argparse.Namespace) -> Any:
    """SOURCE as a :class:`gsp_hub.hub.ModelSource`: any load_model spec, or with --model the weights of that
    timm architecture."""
    from gsp_hub.hub.loading import locate_model

    if args.model is None:
        if args.model_args:
            raise ValueError("--model-args needs --model (the timm architecture of a bare checkpoint).")
        return locate_model(args.source)
    return locate_model(args.model, weights=args.source)


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """--model-args as keyword arguments of timm.create_model."""
    try:
        kwargs = json.loads(args.model_args or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"--model-args must be a JSON object like '{{\"embed_dim\": 128}}': {error}") from error
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-args must be a JSON object like '{{\"embed_dim\": 128}}', got {args.model_args}.")
    return kwargs


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{what} file {path} not found.") from error
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{what} file {path} does not parse: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{what} file {path} must hold a mapping, got {type(data).__name__}.")
    return data


def _read_metrics(path: Path) -> dict[str, float]:
    """Card metrics from a metrics JSON: its known metric keys, at top level or under ``best``."""
    from gsp_hub.hub.card import metric_spec

    data = _read_mapping(path, "metrics")
    values = data["best"] if isinstance(data.get("best"), dict) else data
    metrics = {key: value for key, value in values.items() if metric_spec(key) is not None}
    if not metrics:
        raise ValueError(
            f"metrics file {path} has no card metric (recall@k, map@r, r_precision, nmi, top1); keys: {sorted(values)}."
        )
    return metrics


def _card_inputs(args: argparse.Namespace, source: Path | None) -> dict[str, Any]:
    """metrics / dataset / card_extra / repo_id keyword arguments from the flags, else from files next to ``source``."""
    inputs: dict[str, Any] = {}
    metrics_file = args.metrics or (source / METRICS_FILE if source and (source / METRICS_FILE).is_file() else None)
    if metrics_file:
        inputs["metrics"] = _read_metrics(Path(metrics_file))
    if args.dataset:
        inputs["dataset"] = {"id": args.dataset, "split": args.split, "name": args.dataset_name}
    recipe_file = args.recipe or next((source / n for n in RECIPE_FILES if source and (source / n).is_file()), None)
    card_extra: dict[str, Any] = {
        key: value
        for key, value in (
            ("license", args.license),
            ("base_model", args.base_model),
            ("description", args.description),
        )
        if value
    }
    if recipe_file:
        card_extra["recipe"] = _read_mapping(Path(recipe_file), "recipe")
    if card_extra:
        inputs["card_extra"] = card_extra
    if args.repo_id:
        inputs["repo_id"] = args.repo_id
    return inputs


def _export_hub(model: Any, args: argparse.Namespace) -> Path:
    """Write a Hub folder; card metadata not given by flags is kept from the source export."""
    from gsp_hub.hub.saving import save_pretrained
    from gsp_hub.hub.loading import read_export_config

    export = _locate_source(args).export
    previous = (read_export_config(export.config_file).get("gsp_hub") or {}) if export is not None else {}
    inputs: dict[str, Any] = {
        "metrics": previous.get("metrics") or None,
        "dataset": previous.get("dataset"),
        "card_extra": {**(previous.get("card") or {}), "methods": previous.get("methods", [])},
        "repo_id": previous.get("repo_id"),
    }
    source = Path(args.source)
    new = _card_inputs(args, source if source.is_dir() else None)
    inputs["card_extra"].update(new.pop("card_extra", {}))
    inputs.update(new)
    channels = model.pretrained_cfg["input_size"][0]
    data_config = {"input_size": (channels, args.input_size, args.input_size)} if args.input_size else None
    return save_pretrained(model, args.output, data_config=data_config, **inputs)


EXPORT_FORMATS: dict[str, Callable[[Any, argparse.Namespace], Path]] = {"hub": _export_hub, **FORMAT_WRITERS}


def _export(args: argparse.Namespace) -> int:
    kwargs = _model_kwargs(args)
    model = _locate_source(args).load(**kwargs)
    output = EXPORT_FORMATS[args.format](model, args)
    print(f"exported {args.source} as {args.format} to {output}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from gsp_hub.hub.push import push_to_hub

    commit = push_to_hub(
        args.directory, args.repo_id, token=args.token, private=args.private, commit_message=args.message
    )
    print(f"pushed {args.directory} to https://huggingface.co/{args.repo_id} ({commit.commit_url})")
    return 0


def _card(args: argparse.Namespace) -> int:
    from gsp_hub.hub.saving import README_NAME, update_card

    inputs = _card_inputs(args, None)
    folder = update_card(args.directory, **inputs)
    print((folder / README_NAME).read_text(encoding="utf-8") if args.show else f"updated {folder / README_NAME}")
    return 0


def _add_card_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model card")
    group.add_argument("--metrics", type=Path, help="metrics JSON (keys recall@1, map@r, r_precision, ...; fractions)")
    group.add_argument("--dataset", help="dataset the metrics were measured on (Hub id or name)")
    group.add_argument("--split", default="test", help="evaluated split (default: test)")
    group.add_argument("--dataset-name", help="display name, e.g. 'CUB-200-2011 (test classes 101-200)'")
    group.add_argument("--recipe", type=Path, help="training config (YAML/JSON) shown as the recipe")
    group.add_argument("--repo-id", help="Hub id org/name the card's usage snippets name")
    group.add_argument("--license", help="licence id for the card (default: the model's pretrained_cfg licence)")
    group.add_argument("--base-model", help="Hub id of the model it was fine-tuned from")
    group.add_argument("--description", help="a paragraph describing the model")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="export a trained model to a Hub folder (config.json, model.safetensors, model card)",
        description="Load a trained model and write it in an export format. SOURCE is an export folder, a "
        "`gsp-hub train` / `distill` run folder (its model/ is loaded), local-dir:PATH, a Hub id (hf-hub:org/name), "
        "a zoo model (e.g. gsp_tf_efficientnet_lite0.tin200), or (with --model) a .safetensors checkpoint. "
        "Card metadata not given by flags is kept from the source export; metrics and recipe default to "
        f"SOURCE/{METRICS_FILE} and SOURCE/{{{','.join(RECIPE_FILES)}}} when present.",
    )
    export.add_argument("source", help="export or run folder, local-dir:PATH, hf-hub:org/name, zoo model, or "
                        ".safetensors file (with --model)")
    export.add_argument("output", type=Path, help="output folder (hub: new, empty, or a previous export, which is replaced); .onnx / .pt2 file or folder (onnx / torch-export)")
    export.add_argument("--format", choices=sorted(EXPORT_FORMATS), default="hub", help="export format (default: hub)")
    export.add_argument("--model", help="timm architecture of a bare checkpoint, e.g. gsp_resnet50")
    export.add_argument("--model-args", help="JSON keyword arguments for --model, e.g. '{\"embed_dim\": 128}'")
    export.add_argument("--input-size", type=int, help="image size the weights were trained for (sets input_size)")
    _add_card_arguments(export)
    add_export_arguments(export)
    export.set_defaults(func=_export)

    push = subparsers.add_parser(
        "push",
        help="upload an export folder to the Hugging Face Hub",
        description="Create the Hub repository if needed and upload the export folder in one commit. The folder's "
        "card must name the same repo id (set it with `gsp-hub card DIR --repo-id ...`).",
    )
    push.add_argument("directory", type=Path, help="export folder written by `gsp-hub export`")
    push.add_argument("repo_id", help="Hub repository id org/name")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--token", help="Hub token (default: the logged-in token / HF_TOKEN)")
    push.add_argument("--message", default="Upload gsp_hub model", help="commit message")
    push.set_defaults(func=_push)

    card = subparsers.add_parser(
        "card",
        help="re-render an export's model card with new metrics, dataset, recipe or repo id",
        description="Update the card metadata stored in the export's config.json and re-render README.md; the "
        "weights are kept byte for byte and the folder is replaced atomically.",
    )
    card.add_argument("directory", type=Path, help="export folder")
    card.add_argument("--show", action="store_true", help="print the card after writing it")
    _add_card_arguments(card)
    card.set_defaults(func=_card)
