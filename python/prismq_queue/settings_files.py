"""Reading settings files: JSON, TOML or YAML, chosen by the file's extension."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import InvalidArgument

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.9/3.10 only
    import tomli as tomllib

FORMATS = {".json": "JSON", ".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}


def read_settings_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level table of a JSON, TOML or YAML file, with errors that name the file."""
    p = Path(path)
    kind = FORMATS.get(p.suffix.lower())
    if kind is None:
        raise InvalidArgument(f"{p}: unknown settings format {p.suffix!r}; use .json, .toml, .yaml or .yml")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidArgument(f"{p}: cannot read the settings file: {e.strerror or e}") from e
    try:
        if kind == "JSON":
            data = json.loads(text)
        elif kind == "TOML":
            data = tomllib.loads(text)
        else:
            try:
                import yaml
            except ImportError:
                raise InvalidArgument(
                    f"{p}: reading YAML needs PyYAML: pip install 'prismq_queue[yaml]' (or use TOML or JSON)"
                ) from None
            data = yaml.safe_load(text)
    except InvalidArgument:
        raise
    except Exception as e:  # json/toml/yaml each have their own error class
        raise InvalidArgument(f"{p}: not valid {kind}: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidArgument(f"{p}: the top level must be a table/object, got {type(data).__name__}")
    return data
