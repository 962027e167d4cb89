"""Writing the configuration back as TOML (tables of scalars, lists and nested tables)."""

from __future__ import annotations

import json
from typing import Any


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, list | tuple):
        if any(isinstance(v, dict) for v in value):
            raise TypeError("arrays of tables are written as [[tables]]")
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(data: dict[str, Any], _prefix: str = "") -> str:
    """``data`` as TOML: plain keys first, then each table, then arrays of tables."""
    lines = []
    tables: list[tuple[str, dict[str, Any]]] = []
    arrays: list[tuple[str, list[dict[str, Any]]]] = []
    for key, value in data.items():
        name = f"{_prefix}.{key}" if _prefix else key
        if isinstance(value, dict):
            tables.append((name, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((name, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for name, table in tables:
        body = dumps_toml(table, name)
        out += f"\n[{name}]\n{body}" if not body.startswith("\n[") else body
    for name, items in arrays:
        for item in items:
            out += f"\n[[{name}]]\n{dumps_toml(item, name)}"
    return out
