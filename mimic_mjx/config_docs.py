"""A config class as documentation: every key with its type, default, valid range and meaning.

`mimic-mjx config --list` prints `markdown_table` for the training config and the sweep file;
docs/config.md is that output, checked by tests/test_config.py.
"""

import dataclasses
import math
import types
import typing
from typing import Any, Union

import yaml

from mimic_mjx import config as cfglib


def field_docs(cls: type, prefix: str = "", start: Any = None) -> list[tuple[str, str, Any, str, str]]:
    """`(dotted key, type words, default, range words, doc)` for every leaf field (and each
    preset section's `preset` key), for `--help` output and docs/config.md.
    A required field's default is `dataclasses.MISSING`."""
    rows = []
    if cfglib.has_presets(cls):
        names = ", ".join(cls.preset_names())
        current = next((n for n in cls.preset_names() if start is not None and cls.from_preset(n) == start), None)
        rows.append((f"{prefix}{cfglib.PRESET_KEY}", "a string", current, f"one of {names}",
                     "preset that gives every field this section does not set; setting it drops the "
                     "fields earlier layers (base files, a saved config) set here"))
    for name, (f, tp) in cfglib.declared_fields(cls).items():
        default = getattr(start, name) if start is not None else cfglib.default_value(f)
        sub = cfglib.config_class(tp)
        if sub is not None and typing.get_origin(tp) not in (Union, types.UnionType):
            rows += field_docs(sub, f"{prefix}{name}.", default if isinstance(default, sub) else None)
        else:
            shown = default if default is dataclasses.MISSING else cfglib.to_dict(default)
            rows.append((f"{prefix}{name}", cfglib.describe_type(tp), shown, cfglib.range_text(f), f.metadata.get("doc", "")))
    return rows


def markdown_table(cls: type, start: Any = None) -> str:
    """Every key of `cls` as a markdown table: key, type, default, valid range, meaning.
    (Every float must also be finite.)"""
    lines = ["| key | type | default | valid | meaning |", "|---|---|---|---|---|"]
    for key, words, default, valid, doc in field_docs(cls, start=start):
        cells = [f"`{key}`", words, _yaml_text(default), valid or "any", doc]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _yaml_text(value: Any) -> str:
    """A default as it would be written in YAML, in one cell."""
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()
