"""Every test marked as failing under wine only is listed, by name, in docs/operations.md
("Windows"), so the list a Windows operator reads cannot drift from the marks."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
DOCS = TESTS.parent / "docs" / "operations.md"
# A marker line (the shared CTRL_BREAK_UNDER_WINE or a wine_only_failure mark), then any other
# decorators, then the test it marks.
MARKED = re.compile(r"^@(?:CTRL_BREAK_UNDER_WINE|pytest\.mark\.wine_only_failure)\b.*\n(?:@.*\n)*(?:async )?def (test_\w+)",
                    re.M)


def marked_tests() -> list[str]:
    return [name for path in sorted(TESTS.glob("test_*.py"))
            for name in MARKED.findall(path.read_text(encoding="utf-8"))]


def test_every_wine_only_failure_is_listed_in_the_windows_runbook():
    names = marked_tests()
    assert len(names) >= 10, names  # the pattern still finds the marks
    windows = DOCS.read_text(encoding="utf-8").split("\n## Windows", 1)[1]
    missing = [n for n in names if f"`{n}`" not in windows and f"::{n}`" not in windows]
    assert not missing, f"list these in docs/operations.md, section Windows: {missing}"


# A skip mark for Windows: `skipif(sys.platform == "win32", ...)`, or a module's `pytestmark`.
WINDOWS_SKIP = re.compile(r"skipif\(\s*(?:sys\.)?platform\s*==\s*[\"']win32[\"']|IS_WINDOWS, reason", re.S)


def test_every_file_with_windows_skips_is_named_in_the_windows_runbook():
    files = sorted(p.name for p in TESTS.glob("test_*.py")
                   if p.name != Path(__file__).name and WINDOWS_SKIP.search(p.read_text(encoding="utf-8")))
    assert len(files) >= 5, files  # the pattern still finds the marks
    windows = DOCS.read_text(encoding="utf-8").split("\n## Windows", 1)[1]
    missing = [f for f in files if f"tests/{f}" not in windows]
    assert not missing, f"name these files' Windows skips in docs/operations.md, section Windows: {missing}"
