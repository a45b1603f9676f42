"""Every ```python block of the README and docs/ runs, in a fresh directory, as a user would; and
again in the same directory, as a user who runs it a second time would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(doc):
    return [m.group(1) for m in BLOCK.finditer(doc.read_text(encoding="utf-8"))]


def snippets(docs=DOCS):
    for doc in docs:
        for i, code in enumerate(blocks(doc)):
            yield pytest.param(code, id=f"{doc.relative_to(ROOT)}#{i}")


def test_there_are_snippets_to_run():
    assert len(list(snippets())) >= 2


@pytest.mark.parametrize("code", list(snippets()))
def test_snippet_runs_and_runs_again(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for run in ("first", "second"):
        try:
            exec(compile(code, f"<snippet, {run} run>", "exec"), {"__name__": "__snippet__"})
        except Exception as e:
            raise AssertionError(f"the {run} run in the same directory failed: {e!r}") from e


@pytest.mark.parametrize("code", list(snippets([README])))
def test_readme_snippet_warns_nothing_in_a_fresh_interpreter(code, tmp_path):
    # A fresh interpreter, as a reader's: warnings raised at first import (Starlette's about
    # TestClient) would not show inside this test process, which imported everything already.
    p = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "Warning" not in p.stderr, p.stderr


OPENED = re.compile(r"""(?:Queue|RunRegistry)\(\s*["']([^"']+\.db)["']""")


@pytest.mark.parametrize("code", list(snippets()))
def test_snippet_starts_from_a_clean_file_or_says_it_keeps_one(code):
    # A second run some time after the first finds the first run's tasks due again (retries,
    # ended leases), which the immediate rerun above cannot see: so every file a snippet opens
    # is removed first, or the line that opens it says why it is kept between runs.
    for line in code.splitlines():
        for name in OPENED.findall(line):
            if "kept between runs" in line:
                continue
            assert re.search(rf"""Path\(\s*["']{re.escape(name)}["']\s*\)\.unlink\(missing_ok=True\)""", code) or (
                "Path(name).unlink" in code and f'"{name}"' in code.split("Path(name).unlink")[0]
            ), f"the snippet opens {name} without removing it first (or saying it is kept between runs):\n{code}"
