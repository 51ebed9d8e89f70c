"""The README's Python snippets work verbatim: each ```python block runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_readme_has_snippets_and_set_up_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(SNIPPETS) >= 2
    assert 'pip install -e ".[dev]"' in text and "python -m pytest" in text
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]"' in ci and "python -m pytest" in ci


def test_readme_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for number, snippet in enumerate(SNIPPETS, 1):
        exec(compile(snippet, f"README.md python snippet {number}", "exec"), namespace)
