"""Save a timm-built model as a Hugging Face Hub folder (an "export"): config.json + model.safetensors + README.md.

The counterpart of :mod:`gsp_hub.hub.loading`; deployment formats (ONNX, ``torch.export``) are :mod:`gsp_hub.export`.

The folder is timm's own Hub format (``timm.models.save_for_hf``), adjusted so every loader accepts it:
``model_args['num_classes']`` is removed (transformers' TimmWrapper passes ``num_classes`` itself; the top-level
``num_classes`` still tells timm the head size), ``backbone_pretrained`` is forced to ``False`` (the export holds the
trained weights), and the gsp_hub metadata (version, metrics, dataset, recipe, card options, weights checksum) goes into
a top-level ``"gsp_hub"`` block, which timm and transformers ignore. The README is the model card built from that
config (:mod:`gsp_hub.hub.card`). Everything is validated first, then written atomically
(:func:`gsp_hub.io.atomic_directory`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from timm.models import save_for_hf
from torch import nn

from gsp_hub.hub.card import CARD_OPTIONS, DatasetRef, build_model_card, detect_methods, metric_spec
from gsp_hub.hub.loading import CONFIG_NAME, WEIGHTS_NAME, file_sha256, read_export_config
from gsp_hub.hub.local_paths import public_dataset, without_local_paths
from gsp_hub.io import atomic_directory

__all__ = ["README_NAME", "check_repo_id", "read_export_metadata", "save_pretrained", "update_card"]

README_NAME = "README.md"
METADATA_KEY = "gsp_hub"


def check_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is a full Hub model id ``org/name``, else raise ValueError."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"repo_id {repo_id!r} is not a valid Hub repo id: {error}") from error
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must be 'org/name' (namespace included, used in the card), got {repo_id!r}.")
    return repo_id


def _package_version() -> str:
    import gsp_hub

    return gsp_hub.__version__


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _as_json(value: Any, what: str) -> Any:
    """A JSON round trip of ``value`` (dataclasses become dicts, paths strings); ValueError naming ``what``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be JSON-serialisable (numbers, strings, lists, dicts): {error}.") from error


def _checked_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"metrics must be a mapping like {{'recall@1': 0.71, 'map@r': 0.28}}, got {type(metrics).__name__}."
        )
    checked = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"metrics[{key!r}] must be a number, got {value!r}.") from error
        if not math.isfinite(number):
            raise ValueError(f"metrics[{key!r}] is {number}; only finite values can go on a model card.")
        if metric_spec(str(key)) is not None and not 0.0 <= number <= 1.0:
            raise ValueError(
                f"metrics[{key!r}] = {number}: card metrics are fractions in [0, 1] "
                "(as gsp_hub.metrics returns them); divide percentages by 100."
            )
        checked[str(key)] = number
    return checked


def _checked_card_options(card_extra: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(card_extra, Mapping):
        raise TypeError(f"card_extra must be a mapping with keys from {CARD_OPTIONS}, got {type(card_extra).__name__}.")
    unknown = sorted(set(card_extra) - set(CARD_OPTIONS))
    if unknown:
        raise ValueError(f"card_extra has unknown key(s) {unknown}; allowed: {list(CARD_OPTIONS)}.")
    options = _as_json(dict(card_extra), "card_extra")
    for key in ("license", "description", "model_name"):
        if key in options and not isinstance(options[key], str):
            raise ValueError(f"card_extra[{key!r}] must be a string, got {options[key]!r}.")
    for key in ("tags", "methods"):
        if key in options and not (isinstance(options[key], list) and all(isinstance(t, str) for t in options[key])):
            raise ValueError(f"card_extra[{key!r}] must be a list of strings, got {options[key]!r}.")
    if "recipe" in options and not isinstance(options["recipe"], dict):
        raise ValueError(
            f"card_extra['recipe'] must be a mapping (e.g. the training config), got {options['recipe']!r}."
        )
    if "baselines" in options:
        _check_baselines(options["baselines"])
    if "target_mass" in options and not (isinstance(options["target_mass"], (int, float))
                                         and 0.0 <= options["target_mass"] <= 1.0):
        raise ValueError(f"card_extra['target_mass'] must be a fraction of the pooling weight in [0, 1], got "
                         f"{options['target_mass']!r}.")
    if "figures" in options and not (isinstance(options["figures"], list) and all(
            isinstance(figure, dict) and set(figure) == {"file", "caption"}
            and all(isinstance(value, str) for value in figure.values()) for figure in options["figures"])):
        raise ValueError(f"card_extra['figures'] must be a list of {{'file': name, 'caption': text}} mappings, got "
                         f"{options['figures']!r}.")
    return options


def _check_baselines(baselines: Any) -> None:
    """ValueError unless ``baselines`` maps names to metrics like the model's (fractions in [0, 1])."""
    example = "{'raw pixels': {'recall@1': 0.51, 'map@r': 0.12}}"
    if not isinstance(baselines, dict) or not all(isinstance(values, dict) for values in baselines.values()):
        raise ValueError(f"card_extra['baselines'] must map a baseline's name to its metrics, e.g. {example}; got "
                         f"{baselines!r}.")
    for name, values in baselines.items():
        try:
            _checked_metrics(values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"card_extra['baselines'][{name!r}]: {error}") from error


def _check_figure_files(options: Mapping[str, Any], available: set[str], where: str) -> None:
    """ValueError unless every figure the card shows is one of the ``available`` file names (``where`` says how)."""
    missing = [figure["file"] for figure in options.get("figures", []) if figure["file"] not in available]
    if missing:
        raise ValueError(f"card_extra['figures'] names {missing}, which the export would not hold; {where}.")


def _checked_files(files: Mapping[str, str | os.PathLike[str]]) -> dict[str, Path]:
    """The extra files of an export by name: plain file names other than the export's own, of existing files."""
    checked = {}
    for name, source in files.items():
        if not isinstance(name, str) or Path(name).name != name or name in (CONFIG_NAME, WEIGHTS_NAME, README_NAME):
            raise ValueError(f"files: {name!r} is not a file name an export can take; use plain names such as "
                             f"'figure.png', not paths or {CONFIG_NAME} / {WEIGHTS_NAME} / {README_NAME}.")
        if not Path(source).is_file():
            raise FileNotFoundError(f"files[{name!r}]: {source} is not a file.")
        checked[name] = Path(source)
    return checked


def _check_model(model: nn.Module) -> None:
    """Raise unless timm can export ``model`` and build its architecture again on reload."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module built by timm.create_model, got {type(model).__name__}.")
    missing = [attr for attr in ("pretrained_cfg", "num_classes", "num_features") if not hasattr(model, attr)]
    if missing:
        unwrap = " (unwrap it first: accelerator.unwrap_model(model))" if hasattr(model, "module") else ""
        raise TypeError(
            f"model {type(model).__name__} lacks {missing}{unwrap}: export needs a model built by "
            "timm.create_model(name, ...) after `import gsp_hub`, e.g. timm.create_model('gsp_resnet50')."
        )
    architecture = model.pretrained_cfg.get("architecture")
    if not architecture or not timm.is_model(architecture):
        raise ValueError(
            f"model.pretrained_cfg names architecture {architecture!r}, which timm does not know, so the export could "
            "not be loaded back. Build the model with timm.create_model(<registered name>, ...)."
        )


def _model_facts(model: nn.Module) -> dict[str, Any]:
    """Backbone name, pooling, output width, parameter count and base model (the backbone's timm Hub id if it was
    pretrained)."""
    backbone_module = getattr(model, "backbone", None)
    backbone_cfg = getattr(backbone_module, "pretrained_cfg", None) or {}
    pretrained_backbone = bool(getattr(model, "_model_args", {}).get("backbone_pretrained"))
    return {
        "backbone": backbone_cfg.get("architecture"),
        "pool": getattr(model, "global_pool", None) if backbone_module is not None else None,
        "embed_dim": getattr(model, "head_hidden_size", None),
        "num_params": sum(p.numel() for p in model.parameters()),
        "base_model": backbone_cfg.get("hf_hub_id") if pretrained_backbone else None,
    }


def _metadata(
    facts: Mapping[str, Any],
    metrics: dict[str, float],
    dataset: DatasetRef | None,
    options: Mapping[str, Any],
    repo_id: str | None,
) -> dict[str, Any]:
    if metrics and dataset is None:
        raise ValueError("metrics need a dataset: pass dataset='org/name' or {'id': ..., 'split': ..., 'name': ...}.")
    card = without_local_paths({key: value for key, value in options.items() if key != "methods"})
    if facts.get("base_model") and "base_model" not in card:
        card["base_model"] = facts["base_model"]
    return {
        "version": _package_version(),
        "repo_id": repo_id,
        "backbone": facts.get("backbone"),
        "pool": facts.get("pool"),
        "embed_dim": facts.get("embed_dim"),
        "num_params": facts.get("num_params"),
        "methods": detect_methods(facts.get("pool"), card.get("recipe"), options.get("methods", ())),
        "metrics": metrics,
        "dataset": public_dataset(dataset).to_dict() if dataset else None,
        "card": card,
    }


def _is_previous_export(folder: Path) -> bool:
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and METADATA_KEY in config and not any(p.is_dir() for p in folder.iterdir())


def _checked_target(directory: str | os.PathLike[str]) -> Path:
    target = Path(directory).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ValueError(f"directory {target} is a file; pass a folder path for the export.")
    if target.is_dir() and any(target.iterdir()) and not _is_previous_export(target):
        raise ValueError(
            f"directory {target} exists and is not a gsp_hub export ({sorted(p.name for p in target.iterdir())[:8]}); "
            f"the export replaces the whole folder, so give it its own (new or empty) folder, e.g. {target / 'hub'}."
        )
    return target


def _write_config_and_card(folder: Path, config: dict[str, Any], location: Path) -> None:
    """config.json (without ``model_args['num_classes']``, which TimmWrapper passes itself) and README.md."""
    config.get("model_args", {}).pop("num_classes", None)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    build_model_card(config, str(location)).save(folder / README_NAME)


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Any] | None = None,
    dataset: DatasetRef | Mapping[str, Any] | str | None = None,
    card_extra: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    data_config: Mapping[str, Any] | None = None,
    files: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Path:
    """Write ``model`` as a Hub folder (config.json, model.safetensors, README.md) that replaces ``directory``.

    Args:
        model: a model built by ``timm.create_model`` (any gsp_hub or timm architecture).
        directory: the export folder; must be new, empty, or a previous export (it is replaced as a whole).
        metrics: metric values in [0, 1] by gsp_hub key (``recall@1``, ``map@r``, ``r_precision``, ...).
        dataset: where the metrics were measured: a Hub id, ``{'id', 'split', 'name', 'config'}`` or DatasetRef.
        card_extra: card options: ``license``, ``base_model``, ``description``, ``model_name``, ``tags``,
            ``methods`` (citation keys, see card.CITATIONS), ``recipe`` (the training config, a mapping/dataclass),
            ``baselines`` (name -> metrics on the same split, e.g. raw pixels, the untrained model),
            ``target_mass`` (mean pooling weight on a collage's label tile), ``figures`` (``[{"file", "caption"}]``,
            files given in ``files``).
        repo_id: the Hub id ``org/name`` the export is meant for (used by the card's usage snippets).
        data_config: preprocessing the weights were trained for (e.g. ``{'input_size': (3, 128, 128)}``);
            defaults to the model's ``pretrained_cfg``.
        files: extra files copied into the export, by file name -> source path (e.g. the card's figures).

    Returns:
        The absolute export folder.
    """
    _check_model(model)
    options = _checked_card_options(card_extra or {})
    extra_files = _checked_files(files or {})
    _check_figure_files(options, set(extra_files), "pass each figure in files={name: path}")
    metadata = _metadata(
        _model_facts(model),
        _checked_metrics(metrics or {}),
        DatasetRef.coerce(dataset) if dataset is not None else None,
        options,
        check_repo_id(repo_id) if repo_id is not None else None,
    )
    target = _checked_target(directory)
    reload_args = {"backbone_pretrained": False} if "backbone_pretrained" in getattr(model, "_model_args", {}) else None
    if not all(tensor.is_contiguous() for tensor in model.state_dict().values()):
        # e.g. a model trained channels-last: safetensors stores contiguous tensors only (same values, copied)
        model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    with atomic_directory(target) as staging:
        save_for_hf(model, staging, model_args=reload_args, safe_serialization=True, data_config=data_config)
        config = json.loads((staging / CONFIG_NAME).read_text(encoding="utf-8"))
        config[METADATA_KEY] = {**metadata, "weights_sha256": file_sha256(staging / WEIGHTS_NAME)}
        _write_config_and_card(staging, config, target)
        for name, source in extra_files.items():
            shutil.copyfile(source, staging / name)
    return target


def read_export_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``"gsp_hub"`` block of an export folder's config.json (empty for a plain timm export)."""
    config = read_export_config(Path(directory) / CONFIG_NAME)
    return dict(config.get(METADATA_KEY) or {})


def update_card(
    directory: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Any] | None = None,
    dataset: DatasetRef | Mapping[str, Any] | str | None = None,
    card_extra: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
) -> Path:
    """Re-render an export's card, replacing the given metadata (``card_extra`` keys are merged); the weights are
    kept byte for byte and the folder is replaced atomically. Works on plain timm exports too (adds the block)."""
    folder = Path(directory).expanduser().absolute()
    config = read_export_config(folder / CONFIG_NAME)
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{folder / WEIGHTS_NAME} is missing; update_card needs a complete export folder.")
    old: dict[str, Any] = dict(config.get(METADATA_KEY) or {})
    options = {**(old.get("card") or {}), "methods": old.get("methods", [])}
    options.update(card_extra or {})
    checked_options = _checked_card_options(options)
    _check_figure_files(checked_options, {p.name for p in folder.iterdir()}, f"put it into {folder} first")
    new_dataset = dataset if dataset is not None else old.get("dataset")
    metadata = _metadata(
        old,
        _checked_metrics(metrics if metrics is not None else old.get("metrics") or {}),
        DatasetRef.coerce(new_dataset) if new_dataset else None,
        checked_options,
        check_repo_id(repo_id) if repo_id is not None else old.get("repo_id"),
    )
    metadata["weights_sha256"] = old.get("weights_sha256") or file_sha256(folder / WEIGHTS_NAME)
    config[METADATA_KEY] = metadata
    keep = [p for p in folder.iterdir() if p.name not in (CONFIG_NAME, README_NAME)]
    if any(p.is_dir() for p in keep):
        raise ValueError(f"{folder} holds sub-folders; update_card only rewrites flat export folders.")
    with atomic_directory(folder) as staging:
        for path in keep:
            try:
                os.link(path, staging / path.name)
            except OSError:
                shutil.copy2(path, staging / path.name)
        _write_config_and_card(staging, config, folder)
    return folder
