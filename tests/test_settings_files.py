"""Settings files (worker settings, handlers files) in YAML and the shapes a file can take that
are no table: an empty file means no settings; a list or a scalar is refused naming the file; a
YAML file without PyYAML installed says what to install."""

from __future__ import annotations

import re
import sys

import pytest

from prismq_queue import InvalidArgument, TaskHandlerRegistry
from prismq_queue.config import WorkerSettings


def test_a_yaml_settings_file_is_read(tmp_path):
    path = tmp_path / "w.yml"
    path.write_text("worker:\n  concurrency: 3\n  queues: [a, b]\n")
    s = WorkerSettings.load(path, env={})
    assert (s.concurrency, s.queues) == (3, ["a", "b"])


@pytest.mark.parametrize(
    "name, text", [("w.yaml", ""), ("w.yaml", "# only a comment\n"), ("w.json", "null"), ("w.toml", "")]
)
def test_an_empty_settings_file_means_the_defaults(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert WorkerSettings.load(path, env={}) == WorkerSettings.load(env={})


@pytest.mark.parametrize(
    "name, text, got",
    [("w.yaml", "- concurrency\n- 3\n", "list"), ("w.json", "42", "int"), ("w.yml", "just text", "str")],
)
def test_a_settings_file_that_is_not_a_table_is_refused_naming_the_file(tmp_path, name, text, got):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidArgument) as e:
        WorkerSettings.load(path, env={})
    assert str(e.value) == f"{path}: the top level must be a table/object, got {got}"


def test_a_broken_yaml_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "h.yaml"
    path.write_text("handlers: [unclosed\n")
    # Escaped: a Windows path's backslashes are no pattern.
    with pytest.raises(InvalidArgument, match="^" + re.escape(f"{path}: not valid YAML: ")):
        TaskHandlerRegistry.from_config(path)


def test_yaml_without_pyyaml_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "h.yaml"
    path.write_text('handlers:\n  echo: {module: worker_handlers, function: echo}\n')
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(InvalidArgument) as e:
        TaskHandlerRegistry.from_config(path)
    assert str(e.value) == (
        f"{path}: reading YAML needs PyYAML: pip install 'prismq_queue[yaml]' (or use TOML or JSON)"
    )
    assert e.value.__cause__ is None  # one clear message, not an ImportError chained to it
    monkeypatch.delitem(sys.modules, "yaml")
    assert TaskHandlerRegistry.from_config(path).is_registered("echo")  # with PyYAML, the same file works
