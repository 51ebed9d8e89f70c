"""Load a model from any spec gsp_hub accepts, with checks and clear errors: :func:`load_model`.

Specs (:func:`locate_model` resolves and checks them before any model is built):

* a folder: an export (``config.json`` + ``model.safetensors``) or a ``gsp-hub train`` / ``distill`` run folder
  (its export in ``model/``), also as ``local-dir:/path``;
* ``hf-hub:org/name[@revision]`` or ``org/name[@revision]``: a Hub repository (downloaded into / read from the
  Hugging Face cache);
* a zoo tag (``gsp_tf_efficientnet_lite0.tin200``, :data:`gsp_hub.models.zoo.ZOO`): its Hub repository when the
  cache holds it (or it can be downloaded), else the repository's copy ``zoo/<tag>``;
* a timm name plus ``weights=file.safetensors`` (strict load; CIFAR ResNets through
  :func:`~gsp_hub.models.cifar_resnet.load_cifar10_weights`), or a timm name with its own pretrained weights.

Before building an export it checks that ``config.json`` parses and names a registered architecture, and that
``model.safetensors`` exists, parses, matches the checksum recorded at export, and fits the architecture key by key
and shape by shape. The model itself is built by timm from the same ``config.json``
(``timm.create_model('hf-hub:...' | 'local-dir:...')``), so ``model.pretrained_cfg`` describes the preprocessing and
``timm.data.resolve_model_data_config(model)`` works on the result. :func:`from_pretrained` is the same resolver
under its Hugging Face name.
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
from gsp_hub.models.cifar_resnet import CifarResNet, load_cifar10_weights
from gsp_hub.models import zoo
from gsp_hub.registry import did_you_mean

__all__ = [
    "CONFIG_NAME",
    "HF_HUB_PREFIX",
    "LOCAL_DIR_PREFIX",
    "RUN_MODEL_DIR",
    "WEIGHTS_NAME",
    "ExportFiles",
    "ModelSource",
    "file_sha256",
    "from_pretrained",
    "load_model",
    "load_weights",
    "locate_model",
    "read_export_config",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
RUN_MODEL_DIR = "model"  # a `gsp-hub train` / `gsp-hub distill` run folder holds its exported model here
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
    """The export in ``folder``, or in ``folder/model`` when ``folder`` is a training run folder."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the export folder that holds {CONFIG_NAME}.")
    if not (folder / CONFIG_NAME).is_file() and (folder / RUN_MODEL_DIR / CONFIG_NAME).is_file():
        folder = folder / RUN_MODEL_DIR
    config_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} is missing: {folder} is not a gsp_hub / timm export (nor a run folder with one in "
            f"{RUN_MODEL_DIR}/). Write one with gsp_hub.hub.save_pretrained(model, folder) or `gsp-hub export`."
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


def _hub_export(hub_id: str, hint: str = "") -> ExportFiles:
    """A Hub repository ``org/name[@revision]``: its config.json and model.safetensors from the cache / the Hub."""
    if not _REPO_ID.match(hub_id):
        raise ValueError(f"{hub_id!r} is not a Hub model id; expected 'hf-hub:org/name' or 'hf-hub:org/name@rev'.")
    repo_id, _, revision = hub_id.partition("@")
    config_file = _download(repo_id, revision or None, CONFIG_NAME, hint)
    weights_file = _download(repo_id, revision or None, WEIGHTS_NAME, hint)
    return ExportFiles(f"{HF_HUB_PREFIX}{hub_id}", config_file, weights_file)


def _zoo_export(name: str) -> ExportFiles:
    """Zoo model ``name``: its Hub repository (cache, or a download when online), else the repository's copy."""
    hub_id = zoo.ZOO[name].hf_hub_id
    try:
        return _hub_export(hub_id)
    except FileNotFoundError as hub_error:
        try:
            return _local_export(zoo.local_zoo_folder(name))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"zoo model {name!r} is neither in the Hugging Face cache as {hub_id} ({hub_error}) nor in the "
                f"repository's copy {zoo.ZOO_COPY_DIR / name}. Download it once with network access "
                f"(`hf download {hub_id}`), or run gsp_hub from a checkout of its repository (zoo/ holds the copy)."
            ) from hub_error


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


def _load_export(files: ExportFiles, **kwargs: Any) -> nn.Module:
    """Build an export's model with timm and load its checked weights; eval mode."""
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


@dataclass(frozen=True)
class ModelSource:
    """A model spec resolved to files and checked, before any model is built (:func:`locate_model`).

    One of: ``export`` (a Hub folder: local, in the Hugging Face cache, or the zoo copy); the timm ``architecture``
    with a safetensors ``weights`` file; or the timm ``architecture`` alone, with its own pretrained weights.
    """

    spec: str
    export: ExportFiles | None = None
    architecture: str | None = None
    weights: Path | None = None

    def load(self, **kwargs: Any) -> nn.Module:
        """Build the model and load its weights; returned in eval mode.

        Args:
            **kwargs: forwarded to ``timm.create_model``; for an export they override its ``model_args``, and a
                different ``num_classes`` builds a fresh classifier (the other weights are loaded).

        Raises:
            ValueError: unparsable config, unregistered architecture, corrupt weights, keys or shapes that do not fit.
            TypeError: model arguments the architecture does not accept, or ``pretrained=``.
        """
        if "pretrained" in kwargs:
            raise TypeError("load_model / from_pretrained always loads the exported weights (or the given ones); "
                            "drop the pretrained= argument.")
        if self.export is not None:
            return _load_export(self.export, **kwargs)
        if self.weights is not None:
            model = timm.create_model(self.architecture, **kwargs)
            if isinstance(model, CifarResNet):
                return load_cifar10_weights(model, self.weights).eval()
            return load_weights(model, self.weights).eval()
        try:
            return timm.create_model(self.architecture, pretrained=True, **kwargs).eval()
        except (OSError, RuntimeError, ValueError) as error:
            raise ValueError(
                f"could not load the pretrained weights of {self.architecture!r} ({error}); they must be in the "
                "local Hugging Face cache when offline. Pass an export or run folder, or weights=file.safetensors."
            ) from error


def _locate_weights(architecture: object, weights: str | os.PathLike[str]) -> ModelSource:
    if not isinstance(architecture, str) or not timm.is_model(architecture):
        raise ValueError(f"with weights, the model must be the timm architecture they belong to: {architecture!r} "
                         f"is not a registered timm architecture{did_you_mean(str(architecture), timm.list_models())}"
                         "; see `gsp-hub models` and timm.list_models().")
    path = Path(weights).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"weights {path}: no such file; pass a .safetensors state_dict of {architecture} "
                                f"(or a folder holding {WEIGHTS_NAME}).")
    return ModelSource(f"{architecture} + {path}", architecture=architecture, weights=path.absolute())


def _locate_timm_pretrained(name: str) -> ModelSource:
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as error:  # an unknown pretrained tag
        raise ValueError(f"model {name!r}: {error}{did_you_mean(name, timm.list_pretrained())}") from error
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise ValueError(
            f"model {name!r} is a timm architecture without pretrained weights, so its outputs would be random. "
            "Pass its trained weights (weights=file.safetensors, CLI --weights), an export or run folder, a Hub id, "
            f"or a zoo model ({', '.join(zoo.ZOO)})."
        )
    return ModelSource(name, architecture=name)


def locate_model(spec: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None) -> ModelSource:
    """Resolve and check a model spec without building the model (see the module docstring for the specs).

    Hub files are downloaded into / read from the Hugging Face cache; ``config.json`` is parsed and its
    architecture checked. Call :meth:`ModelSource.load` to build the model.

    Raises:
        FileNotFoundError: no such folder, file, Hub repository, revision or cached file; a zoo model found nowhere.
        ValueError: an unregistered architecture, a timm name without weights, a malformed Hub id.
        TypeError: ``spec`` is neither a string nor a path.
    """
    if weights is not None:
        return _locate_weights(spec, weights)
    if isinstance(spec, os.PathLike):
        source = ModelSource(os.fspath(spec), export=_local_export(Path(spec).expanduser().absolute()))
    elif not isinstance(spec, str) or not spec:
        raise TypeError(f"model must be a folder path or a Hub repo id ('org/name'), a zoo tag or a timm name, "
                        f"got {spec!r}.")
    elif spec.startswith(LOCAL_DIR_PREFIX):
        source = ModelSource(spec, export=_local_export(Path(spec[len(LOCAL_DIR_PREFIX) :]).expanduser().absolute()))
    elif spec.startswith((HF_HUB_PREFIX, "hf_hub:")):
        source = ModelSource(spec, export=_hub_export(spec.partition(":")[2]))
    elif spec in zoo.ZOO:
        source = ModelSource(spec, export=_zoo_export(spec))
    else:
        local = Path(spec).expanduser().absolute()
        if local.is_dir():
            source = ModelSource(spec, export=_local_export(local))
        elif local.is_file():
            raise ValueError(f"{local} is a file: weights need their architecture, load_model('<timm name>', "
                             f"weights={spec!r}) (CLI: --model <timm name> --weights {spec}).")
        elif timm.is_model(spec):
            return _locate_timm_pretrained(spec)
        elif _REPO_ID.match(spec):
            source = ModelSource(spec, export=_hub_export(spec, f" (read as a Hub id because no folder {local} "
                                                               "exists)"))
        else:
            known = did_you_mean(spec, [*zoo.ZOO, *timm.list_models()])
            raise FileNotFoundError(
                f"model {spec!r}: no such file or folder ({local}){known}; expected a run or export folder, "
                f"local-dir:PATH, hf-hub:org/name, a zoo model ({', '.join(zoo.ZOO)}) or a timm name with weights."
            )
    read_export_config(source.export.config_file)
    return source


def load_model(spec: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None,
               **kwargs: Any) -> nn.Module:
    """The model a spec names, with its weights, in eval mode: ``locate_model(spec, weights=weights).load(**kwargs)``.

    Args:
        spec: a run or export folder, ``local-dir:/path``, ``hf-hub:org/name[@rev]``, ``org/name[@rev]``, a zoo
            tag, or a timm name (with ``weights``, or with its own pretrained weights).
        weights: a safetensors state_dict (or a folder holding ``model.safetensors``) of the timm architecture
            ``spec``, loaded strictly.
        **kwargs: forwarded to ``timm.create_model`` (see :meth:`ModelSource.load`).

    Raises:
        FileNotFoundError, ValueError, TypeError: as :func:`locate_model` and :meth:`ModelSource.load` explain.
    """
    return locate_model(spec, weights=weights).load(**kwargs)


from_pretrained = load_model  # the Hugging Face name of the same resolver (model cards show it)
