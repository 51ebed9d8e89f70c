"""gsp_hub.io: a target is replaced only by a complete write, no temp file is left behind, and the module stays
standard-library only."""

from __future__ import annotations

import ast
import errno
import json
import stat
import sys
from pathlib import Path

import pytest

import gsp_hub.io
from gsp_hub.io import DiskWriteError, atomic_directory, atomic_file, atomic_write_text, write_json


def test_atomic_file_keeps_the_suffix_and_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "new folder" / "weights.safetensors"
    with atomic_file(target) as temp:
        assert temp.parent == target.parent and temp.suffix == ".safetensors" and temp.name.startswith(".weights.tmp-")
        temp.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["weights.safetensors"]  # the temp file is gone
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_write_json_and_text_are_read_back(tmp_path: Path) -> None:
    write_json(tmp_path / "metrics.json", {"map@r": 0.5, "history": [1, 2]})
    assert (tmp_path / "metrics.json").read_text() == json.dumps({"map@r": 0.5, "history": [1, 2]}, indent=2) + "\n"
    write_json(tmp_path / "metrics.json", {"a": 1}, indent=1)
    assert (tmp_path / "metrics.json").read_text() == '{\n "a": 1\n}\n'
    atomic_write_text(tmp_path / "config.yaml", "lr: 0.1\n")
    assert (tmp_path / "config.yaml").read_text() == "lr: 0.1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "metrics.json"]


def test_atomic_directory_swaps_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "a.txt").write_text("new")
        raise RuntimeError("writer failed")
    assert (target / "a.txt").read_text() == "old"
    with atomic_directory(target) as staging:
        (staging / "b.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["b.txt"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_io_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(gsp_hub.io.__file__).read_text(encoding="utf-8"))
    modules = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert {name.split(".")[0] for name in modules} - {"__future__"} <= sys.stdlib_module_names


def test_a_full_disk_is_one_clear_error_and_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(DiskWriteError, match=rf"cannot write {target} \(No space left on device; [\d.]+ MB free"):
        with atomic_file(target) as temp:
            temp.write_text("new, half written")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(DiskWriteError, match=r"Read-only file system"):
        with atomic_directory(folder) as staging:
            (staging / "config.json").write_text("{}")
            raise OSError(errno.EROFS, "Read-only file system")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model"]
    assert (folder / "config.json").read_text() == "{}"


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(ValueError, match="not a disk problem"):
        with atomic_file(tmp_path / "x.txt"):
            raise ValueError("not a disk problem")
