"""Every ```python block of the README and docs/ runs, in a fresh directory, as a user would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets():
    for doc in DOCS:
        for i, m in enumerate(BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            yield pytest.param(m.group(1), id=f"{doc.relative_to(ROOT)}#{i}")


def test_there_are_snippets_to_run():
    assert len(list(snippets())) >= 2


@pytest.mark.parametrize("code", list(snippets()))
def test_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
