"""Reading the project's YAML files: one loader, one-line errors, and `base:` chains.

config.py builds typed configs from what this reads; this module knows only YAML text and
files (which keys a file may hold is config.py's business).
"""

import pathlib
import re
from collections.abc import Hashable
from typing import Any

import yaml

from mimic_mjx.errors import MimicError


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (PyYAML's YAML 1.1 makes it a string) and
    rejects a repeated key (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        keys = [(self.construct_object(k, deep=True), k.start_mark) for k, _ in node.value]
        hashable = [(key, mark) for key, mark in keys if isinstance(key, Hashable)]
        for i, (key, mark) in enumerate(hashable):
            if key in {k for k, _ in hashable[:i]}:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", mark)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML text with the project's loader; a mistake is a one-line MimicError."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise MimicError(f"{source}: malformed YAML{at}: {_problem(err)}") from None


def parse_value(text: str, what: str) -> Any:
    """One YAML value (an override's right-hand side); a mistake is one line starting `what`."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise MimicError(f"{what}: value is not valid YAML: {_problem(err)}") from None


def read_chain(path: pathlib.Path, seen: tuple[pathlib.Path, ...] = ()) -> list[tuple[str, dict]]:
    """`[(source, data), ...]` for `path` and the files its `base:` keys name, base first."""
    real = path.resolve()
    if real in seen:
        chain = " -> ".join(str(p) for p in (*seen, real))
        raise MimicError(f"{path}: 'base' files form a cycle: {chain}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise MimicError(f"{path}: not a YAML file (its bytes are not UTF-8 text)") from None
    except OSError as err:
        why = "config file not found" if isinstance(err, FileNotFoundError) else (
            f"cannot read config file: {err.strerror or err}")
        named_by = f" (named by 'base' in {seen[-1]})" if seen else ""
        raise MimicError(f"{path}: {why}{named_by}") from None
    data = load_yaml(text, str(path))
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise MimicError(f"{path}: the top level must be a mapping of keys, got {_show(data)}")
    base = data.pop("base", None)
    if base is None:
        return [(str(path), data)]
    if not isinstance(base, str) or not base:
        raise MimicError(f"{path}: 'base' must be a YAML file name, got {_show(base)}")
    return read_chain(path.parent / base, (*seen, real)) + [(str(path), data)]


def _problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message cut to its one-line problem."""
    text = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    return " ".join(str(text).split())
