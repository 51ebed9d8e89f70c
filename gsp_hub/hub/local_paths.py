"""Local paths stay local: what an export publishes (its card, its config.json) never names a folder of the user's disk.

A training run records its dataset and its whole configuration (``dataset``, ``output_dir``, ``resume``, commands)
in the export's metadata; on a local folder these are absolute paths of the user's disk. When an export is written
(:func:`gsp_hub.hub.save_pretrained`, :func:`~gsp_hub.hub.update_card`):

* the dataset, when it is a local folder, is named by its folder name and marked ``(local data)``:
  ``/home/me/data/cub`` -> id ``cub``, name ``cub (local data)``;
* every other absolute path in the card metadata keeps only its last part: ``/home/me/runs/a`` -> ``.../a``.

:func:`gsp_hub.hub.push_to_hub` refuses a folder whose text files still hold an absolute path
(:func:`local_paths_in_folder`), before any network call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gsp_hub.hub.card import DatasetRef

__all__ = ["LOCAL_DATA", "find_local_paths", "local_paths_in_folder", "public_dataset", "without_local_paths"]

LOCAL_DATA = "local data"
# An absolute POSIX (one slash: URLs' // are not paths), home or Windows-drive path that starts a token (or follows
# "prefix:", as in cub200:/data/CUB), up to the end of the token.
_ABSOLUTE_PATH = re.compile(r"""(?:^|(?<=[\s=:'"`(\[{,]))(?:/(?!/)|~/|[A-Za-z]:[/\\])[^\s'"`()\[\]{},;]+""")
_TEXT_SUFFIXES = (".md", ".json", ".yaml", ".yml", ".txt")


def find_local_paths(text: str) -> list[str]:
    """The absolute local paths written in ``text`` (``/data/cub``, ``~/runs``, ``C:\\data``), in order."""
    return _ABSOLUTE_PATH.findall(text)


def _last_part(path: str) -> str:
    parts = [part for part in re.split(r"[/\\]", path) if part and part != "~" and not re.fullmatch(r"[A-Za-z]:", part)]
    return parts[-1] if parts else path


def without_local_paths(value: Any) -> Any:
    """``value`` (strings, possibly nested in mappings, lists and tuples) with every absolute local path reduced to
    its last part behind ``.../`` (``/home/me/runs/a`` -> ``.../a``); other values as they are."""
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(lambda match: f".../{_last_part(match.group())}", value)
    if isinstance(value, Mapping):
        return {key: without_local_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(without_local_paths(item) for item in value)
    return value


def public_dataset(dataset: DatasetRef) -> DatasetRef:
    """``dataset`` as a card may show it: a local folder (an absolute path in its id, or an id that exists on disk)
    becomes its folder name, and its display name says ``(local data)``; a Hub id or short name is kept."""
    if find_local_paths(dataset.id):
        public_id = _ABSOLUTE_PATH.sub(lambda match: _last_part(match.group()), dataset.id)
        name = _ABSOLUTE_PATH.sub(lambda match: f"{_last_part(match.group())} ({LOCAL_DATA})", dataset.display_name)
    elif Path(dataset.id).expanduser().exists():
        public_id = _last_part(dataset.id)
        name = dataset.display_name.replace(dataset.id, f"{public_id} ({LOCAL_DATA})")
    else:
        return dataset
    if LOCAL_DATA not in name:
        name = f"{name} ({LOCAL_DATA})"
    return DatasetRef(id=public_id, split=dataset.split, name=name, config=dataset.config)


def _strings(value: Any) -> list[str]:
    """Every string of a decoded JSON value (keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (key, *_strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def local_paths_in_folder(folder: Path) -> dict[str, list[str]]:
    """``{file name: absolute local paths in it}`` over the text files of an export folder (README.md; the decoded
    strings of config.json and other JSON files); empty when nothing local would be published."""
    found = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix not in _TEXT_SUFFIXES:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".json":
            try:
                text = "\n".join(_strings(json.loads(text)))
            except ValueError:
                pass  # not JSON after all: scan it as text
        paths = find_local_paths(text)
        if paths:
            found[path.name] = paths
    return found
