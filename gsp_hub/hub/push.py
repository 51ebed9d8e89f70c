"""Publish an export folder (or a model, exported on the fly) to the Hugging Face Hub."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, HfApi
from torch import nn

from gsp_hub.hub.saving import README_NAME, check_repo_id, read_export_metadata, save_pretrained
from gsp_hub.hub.loading import CONFIG_NAME, WEIGHTS_NAME
from gsp_hub.hub.local_paths import local_paths_in_folder

__all__ = ["push_to_hub"]


def _checked_export_folder(folder: Path, repo_id: str) -> None:
    """Raise before any network call unless ``folder`` is a complete export whose card was made for ``repo_id``
    and whose text files name no local absolute path."""
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME, README_NAME) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {missing}: push a folder written by gsp_hub.hub.save_pretrained / `gsp-hub export`."
        )
    leaks = local_paths_in_folder(folder)
    if leaks:
        listed = "; ".join(f"{name}: {', '.join(paths[:3])}" for name, paths in leaks.items())
        raise ValueError(
            f"{folder} would publish local absolute paths ({listed}). Re-render the card, which reduces them to "
            f"their last part: `gsp-hub card {folder}` (or gsp_hub.hub.update_card(folder)); a path in timm's "
            "model_args or pretrained_cfg means the model was built from a local file: rebuild it without."
        )
    card_repo = read_export_metadata(folder).get("repo_id")
    if card_repo != repo_id:
        raise ValueError(
            f"the card in {folder} was written for {card_repo or 'a local folder'}, not {repo_id!r}, so its usage "
            f"snippets would point elsewhere. Run `gsp-hub card {folder} --repo-id {repo_id}` (or "
            f"gsp_hub.hub.update_card(folder, repo_id={repo_id!r})) first."
        )


def push_to_hub(
    directory_or_model: str | os.PathLike[str] | nn.Module,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload gsp_hub model",
    **export_kwargs: Any,
) -> CommitInfo:
    """Create ``repo_id`` on the Hub if needed and upload an export as one commit.

    Args:
        directory_or_model: an export folder whose card names ``repo_id``, or a timm-built model, which is exported
            into a temp folder first with ``save_pretrained(model, ..., repo_id=repo_id, **export_kwargs)``.
        repo_id: ``org/name``.
        token: Hub token; defaults to the logged-in one (``hf auth login`` / ``HF_TOKEN``).
        private: create the repository as private (no effect on an existing one).
        commit_message: the commit's title.
        **export_kwargs: ``metrics``, ``dataset``, ``card_extra``, ``data_config`` for a model.

    Returns:
        The ``huggingface_hub.CommitInfo`` of the upload (``commit_url``, ``oid``).
    """
    check_repo_id(repo_id)
    if isinstance(directory_or_model, nn.Module):
        with tempfile.TemporaryDirectory(prefix="gsp_hub-push-") as scratch:
            folder = save_pretrained(directory_or_model, Path(scratch) / "export", repo_id=repo_id, **export_kwargs)
            return push_to_hub(folder, repo_id, token=token, private=private, commit_message=commit_message)
    if export_kwargs:
        raise TypeError(
            f"{sorted(export_kwargs)} only apply when pushing a model; to change an export folder's card use "
            "gsp_hub.hub.update_card / `gsp-hub card`."
        )
    folder = Path(directory_or_model).expanduser().absolute()
    _checked_export_folder(folder, repo_id)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=folder, commit_message=commit_message)
