"""Load a gsp_hub export (a timm Hub folder) from the Hub or a local folder, with checks and clear errors.

:func:`from_pretrained` accepts ``hf-hub:org/name[@revision]``, ``org/name[@revision]``, ``local-dir:/path`` or a
plain folder path. Before building anything it checks that ``config.json`` parses and names a registered
architecture, and that ``model.safetensors`` exists, parses, matches the checksum recorded at export, and fits the
architecture key by key and shape by shape. The model itself is built by timm from the same ``config.json``
(``timm.create_model('hf-hub:...' | 'local-dir:...')``), so ``model.pretrained_cfg`` describes the preprocessing and
``timm.data.resolve_model_data_config(model)`` works on the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import timm
import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from torch import nn

import gsp_hub.models  # noqa: F401  (registers the gsp_hub architectures with timm)

__all__ = [
    "CONFIG_NAME",
    "HF_HUB_PREFIX",
    "LOCAL_DIR_PREFIX",
    "WEIGHTS_NAME",
    "ExportFiles",
    "file_sha256",
    "from_pretrained",
    "load_weights",
    "read_export_config",
    "resolve_export",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$")
_MAX_LISTED = 5


@dataclass(frozen=True)
class ExportFiles:
    """The two files of an export and the name timm's factory uses for it."""

    timm_name: str  # 'hf-hub:org/name[@rev]' or 'local-dir:/abs/path'
    config_file: Path
    weights_file: Path


def _local_export(folder: Path) -> ExportFiles:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the export folder that holds {CONFIG_NAME}.")
    config_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} is missing: {folder} is not a gsp_hub / timm export. Write one with "
            "gsp_hub.hub.save_pretrained(model, folder) or `gsp-hub export`."
        )
    if not weights_file.is_file():
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pth"))
        hint = f" (found {pickles}: gsp_hub never loads pickled weights)" if pickles else ""
        raise FileNotFoundError(
            f"{weights_file} is missing{hint}. Re-export the model with gsp_hub.hub.save_pretrained, "
            "which writes model.safetensors."
        )
    return ExportFiles(f"{LOCAL_DIR_PREFIX}{folder}", config_file, weights_file)


def _download(repo_id: str, revision: str | None, filename: str, hint: str) -> Path:
    where = f"Hub repository {repo_id!r}" + (f" at revision {revision!r}" if revision else "") + hint
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except RepositoryNotFoundError as error:
        raise FileNotFoundError(
            f"{where} does not exist or is private/gated: check the id, or log in (`hf auth login` / HF_TOKEN)."
        ) from error
    except RevisionNotFoundError as error:
        raise FileNotFoundError(f"{where}: the revision does not exist; use a branch, tag or commit sha.") from error
    except EntryNotFoundError as error:
        raise FileNotFoundError(
            f"{where} has no {filename} (or it is not in the local cache and the Hub is unreachable or "
            f"HF_HUB_OFFLINE=1). A gsp_hub export holds {CONFIG_NAME} and {WEIGHTS_NAME}."
        ) from error


def resolve_export(id_or_path: str | os.PathLike[str]) -> ExportFiles:
    """Locate an export: a folder (plain path or ``local-dir:``) or a Hub repo (``hf-hub:org/name`` or ``org/name``,
    optionally ``@revision``); Hub files are downloaded into / read from the Hugging Face cache."""
    if isinstance(id_or_path, os.PathLike):
        return _local_export(Path(id_or_path).absolute())
    if not isinstance(id_or_path, str) or not id_or_path:
        raise TypeError(f"id_or_path must be a folder path or a Hub repo id 'org/name', got {id_or_path!r}.")
    if id_or_path.startswith(LOCAL_DIR_PREFIX):
        return _local_export(Path(id_or_path[len(LOCAL_DIR_PREFIX) :]).expanduser().absolute())
    hub_id = next((id_or_path[len(p) :] for p in (HF_HUB_PREFIX, "hf_hub:") if id_or_path.startswith(p)), None)
    hint = ""
    if hub_id is None:
        local = Path(id_or_path).expanduser().absolute()
        if local.exists() or not _REPO_ID.match(id_or_path):
            return _local_export(local)
        hub_id, hint = id_or_path, f" (read as a Hub id because no folder {local} exists)"
    if not _REPO_ID.match(hub_id):
        raise ValueError(f"{id_or_path!r} is not a Hub model id; expected 'hf-hub:org/name' or 'hf-hub:org/name@rev'.")
    repo_id, _, revision = hub_id.partition("@")
    config_file = _download(repo_id, revision or None, CONFIG_NAME, hint)
    weights_file = _download(repo_id, revision or None, WEIGHTS_NAME, hint)
    return ExportFiles(f"{HF_HUB_PREFIX}{hub_id}", config_file, weights_file)


def read_export_config(config_file: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse an export's config.json and check that its architecture is registered with timm."""
    try:
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}); re-download or re-export the model.") from error
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise ValueError(f"{config_file} has no 'architecture' entry: it is not a timm / gsp_hub export config.")
    architecture = config["architecture"]
    if not timm.is_model(architecture):
        import gsp_hub

        exported_with = (config.get("gsp_hub") or {}).get("version")
        origin = f" It was exported with gsp_hub {exported_with}." if exported_with else ""
        raise ValueError(
            f"{config_file} names the architecture {architecture!r}, which is not registered with timm "
            f"(installed gsp_hub {gsp_hub.__version__} registers {len(gsp_hub.models.list_gsp_models())} models, "
            f"see `gsp-hub models`).{origin} `import gsp_hub` registers the gsp_hub architectures; if this one is "
            "newer, upgrade: `pip install -U gsp_hub`; if it comes from another timm plug-in, import that package "
            "first."
        )
    return config


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_weights(weights_file: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    try:
        state_dict = safetensors.torch.load_file(weights_file, device="cpu")
    except safetensors.SafetensorError as error:
        raise ValueError(
            f"{weights_file} is corrupt or truncated ({error}); re-download it or re-export the model."
        ) from error
    if expected_sha256 and file_sha256(weights_file) != expected_sha256:
        raise ValueError(
            f"{weights_file} does not match the SHA-256 recorded in config.json at export: the file is corrupt "
            "or was replaced. Re-download it or re-export the model."
        )
    return state_dict


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return tuple(f"{name}." for name in ([names] if isinstance(names, str) else names))


def load_weights(
    model: nn.Module, weights: Mapping[str, torch.Tensor] | str | os.PathLike[str], *, skip_classifier: bool = False
) -> nn.Module:
    """Load a state dict (or a ``.safetensors`` file) into ``model`` after checking every key and shape.

    Args:
        model: the target model.
        weights: tensors by parameter / buffer name, or the path of a safetensors file.
        skip_classifier: leave the classifier (``model.pretrained_cfg['classifier']``) as initialised, for a model
            built with a different ``num_classes`` than the weights.

    Raises:
        ValueError: listing missing, unexpected and wrongly shaped tensors, before anything is copied.
    """
    if not isinstance(weights, Mapping):
        weights = _read_weights(Path(weights), expected_sha256=None)
    skipped = _classifier_prefixes(model) if skip_classifier else ()
    given = {k: v for k, v in weights.items() if not k.startswith(skipped)}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(skipped)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [
        f"{k}: weights {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    problems = [
        f"{label} ({len(items)}): {items[:_MAX_LISTED]}{' ...' if len(items) > _MAX_LISTED else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if items
    ]
    if problems:
        args = getattr(model, "pretrained_model_args", None) or getattr(model, "_model_args", {})
        raise ValueError(
            f"the weights do not fit {type(model).__name__} built with model_args {args}: "
            + "; ".join(problems)
            + ". Build the model with the arguments the weights were trained with (config.json 'model_args'), "
            "or re-export it with gsp_hub.hub.save_pretrained."
        )
    model.load_state_dict(given, strict=not skipped)
    return model


def from_pretrained(id_or_path: str | os.PathLike[str], **kwargs: Any) -> nn.Module:
    """Load a gsp_hub / timm export and return the model in eval mode.

    Args:
        id_or_path: ``hf-hub:org/name[@rev]``, ``org/name[@rev]``, ``local-dir:/path`` or a folder path.
        **kwargs: forwarded to ``timm.create_model`` and override the exported ``model_args``; a different
            ``num_classes`` builds a fresh classifier (the other weights are loaded).

    Raises:
        FileNotFoundError: no such folder / repo / revision, or config.json or model.safetensors missing.
        ValueError: unparsable config, unregistered architecture, corrupt weights, keys or shapes that do not fit.
        TypeError: model_args the installed architecture does not accept.
    """
    if "pretrained" in kwargs:
        raise TypeError("from_pretrained always loads the exported weights; drop the pretrained= argument.")
    files = resolve_export(id_or_path)
    config = read_export_config(files.config_file)
    state_dict = _read_weights(files.weights_file, (config.get("gsp_hub") or {}).get("weights_sha256"))
    try:
        model = timm.create_model(files.timm_name, pretrained=False, **kwargs)
    except TypeError as error:
        arguments = {**config.get("model_args", {}), **kwargs}
        raise TypeError(
            f"{files.config_file}: architecture {config['architecture']!r} rejects the model arguments {arguments} "
            f"({error}). The export may come from a newer gsp_hub: `pip install -U gsp_hub`."
        ) from error
    new_classifier = "num_classes" in kwargs and kwargs["num_classes"] != config.get("num_classes")
    load_weights(model, state_dict, skip_classifier=new_classifier)
    return model.eval()
