"""The core's layers stay layered: a module may only use the layers below it (python -> adapters
-> ops -> engine -> storage -> model), the engine and the operations reach storage only through
its trait (never `storage::sqlite`), the layers the SQLite driver serves know no SQLite
(rusqlite), and nothing outside `src/python/` uses pyo3.

The check reads the Rust sources (comments and string literals removed, so SQL and prose are
not code) and resolves every `crate::`, `super::` and `self::` path to the layer it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
LAYERS = ["model", "storage", "engine", "ops", "adapters", "python"]
# Layers that must not name a backend: they see storage through `storage::Driver` only.
BACKEND_BLIND = {"engine", "ops"}
# Layers that hold no database code at all.
DATABASE_FREE = {"model", "engine", "ops"}

CODE_NOISE = re.compile(
    r"""//[^\n]*                       # line comment (doc comments too)
      | /\*.*?\*/                      # block comment
      | b?r(\#*)".*?"\1                # raw string, r"..." or r#"..."#
      | b?"(?:\\.|[^"\\])*"            # string
      | b?'(?:\\.|[^'\\\n])'           # char literal (not a lifetime)
    """,
    re.S | re.X,
)
PATH = re.compile(r"\b((?:crate|super|self)(?:::\w+)+)")
SQLITE = re.compile(r"\b(?:rusqlite|libsqlite3_sys)::")
PYO3 = re.compile(r"\bpyo3\b|#\[\s*py(?:class|methods|function|module)\b")


def module_path(file: Path, src: Path) -> list[str]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return parts


def resolve(path: str, module: list[str]) -> list[str]:
    """The module path from the crate root that a `crate::`/`super::`/`self::` path names (a
    `super` inside an inline `mod tests` is read as the file's: one level too high at worst,
    which stays inside the same layer or names none)."""
    head, *rest = path.split("::")
    if head == "crate":
        return rest
    base = list(module)
    while head in ("super", "self") and rest:
        if head == "super":
            base = base[:-1]
        head, *rest = rest
    return base + [head, *rest]


def violations(src: Path = SRC) -> list[str]:
    found = []
    for file in sorted(src.rglob("*.rs")):
        module = module_path(file, src)
        if not module:
            continue  # lib.rs: the root declares every layer and re-exports the public types
        layer = module[0]
        rel = file.relative_to(src.parent).as_posix()
        code = CODE_NOISE.sub(" ", file.read_text(encoding="utf-8"))
        if layer != "python" and PYO3.search(code):
            found.append(f"{rel}: uses pyo3 outside src/python/")
        if layer in DATABASE_FREE and SQLITE.search(code):
            found.append(f"{rel}: {layer} uses SQLite (rusqlite); that belongs in storage/sqlite/")
        for match in PATH.finditer(code):
            target = resolve(match.group(1), module)
            if not target or target[0] not in LAYERS or layer not in LAYERS:
                continue
            if LAYERS.index(target[0]) > LAYERS.index(layer):
                found.append(f"{rel}: {layer} uses {match.group(1)} of the layer above ({target[0]})")
            elif layer in BACKEND_BLIND and target[:2] == ["storage", "sqlite"]:
                found.append(f"{rel}: {layer} names a backend ({match.group(1)}); use storage::Driver")
    return found


def test_no_module_uses_a_layer_above_it_or_pyo3_outside_the_binding():
    assert violations() == []


@pytest.mark.parametrize(
    ("file", "code", "expected"),
    [
        ("storage/sqlite/db.rs", "use crate::engine::queue::Queue;", "of the layer above (engine)"),
        ("storage/sqlite/claim/mod.rs", "use super::super::super::ops::list;", "layer above (ops)"),
        ("model/task.rs", "fn f() { crate::storage::open(); }", "layer above (storage)"),
        ("engine/claim.rs", "use crate::storage::sqlite::SqliteDriver;", "names a backend"),
        ("ops/list.rs", "use pyo3::prelude::*;", "uses pyo3 outside src/python/"),
        ("storage/mod.rs", "#[pyclass]\nstruct S;", "uses pyo3 outside src/python/"),
        ("model/task.rs", "use rusqlite::Row;", "model uses SQLite"),
        ("engine/claim.rs", "fn f(c: &rusqlite::Connection) {}", "engine uses SQLite"),
    ],
)
def test_the_check_finds_an_import_that_runs_up(tmp_path, file, code, expected):
    target = tmp_path / "src" / file
    target.parent.mkdir(parents=True)
    target.write_text(code + "\n", encoding="utf-8")
    found = violations(tmp_path / "src")
    assert len(found) == 1 and expected in found[0], found


def test_the_check_ignores_comments_strings_and_downward_paths(tmp_path):
    target = tmp_path / "src" / "storage" / "sqlite" / "ack.rs"
    target.parent.mkdir(parents=True)
    target.write_text(
        "// the GIL bridge (pyo3-log), see crate::engine::queue\n"
        '/// `crate::ops::list` reads this\nconst Q: &str = r#"SELECT "crate::python" "#;\n'
        "use crate::model::task::Status;\nuse super::db::Db;\nuse crate::storage::Driver;\n",
        encoding="utf-8",
    )
    assert violations(tmp_path / "src") == []
