"""The `gsp-hub` command line itself: a parser that builds without torch / timm, one-line user errors, --debug."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gsp_hub.cli import main, user_error

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter at the repository root (nothing imported before it)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_parser_builds_without_importing_torch_or_timm() -> None:
    result = run_python("""
        import argparse, sys
        from gsp_hub.cli import build_parser

        parser = build_parser()
        commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
        for name, sub_parser in commands.choices.items():
            assert sub_parser.format_help().startswith(f"usage: gsp-hub {name}"), name
        print(sorted(commands.choices))
        print(sorted(name for name in ("torch", "timm") if name in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    listed, heavy = result.stdout.splitlines()
    assert "'train'" in listed and "'index'" in listed and "'models'" in listed and "'recipes'" in listed
    assert heavy == "[]"


def test_recipes_command_runs_without_importing_torch_or_timm() -> None:
    result = run_python("""
        import sys
        from gsp_hub.cli import main

        assert main(["recipes"]) == 0 and main(["recipes", "ccp-mlrc-sop"]) == 0
        print(sorted(name for name in ("torch", "timm") if name in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert "ccp-mlrc-sop (version 1)" in result.stdout and result.stdout.endswith("[]\n")


def test_user_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.jpg"
    assert main(["index", "search", "--index", str(tmp_path / "gallery.index"), "--query", str(missing)]) == 2
    assert capsys.readouterr().err == f"gsp-hub index search: error: --query {missing} is not an image file.\n"


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jpg"
    result = subprocess.run([sys.executable, "-m", "gsp_hub", "--debug", "index", "search", "--index",
                             str(tmp_path / "gallery.index"), "--query", str(missing)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert result.stderr.endswith(f"FileNotFoundError: --query {missing} is not an image file.\n")


def test_key_error_prints_its_message_not_its_repr(capsys: pytest.CaptureFixture[str]) -> None:
    assert user_error("eval", KeyError("'x' is not a zoo model")) == 2
    assert capsys.readouterr().err == "gsp-hub eval: error: 'x' is not a zoo model\n"
