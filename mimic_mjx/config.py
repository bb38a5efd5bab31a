"""Typed configs: nested dataclasses loaded from YAML presets plus dotted `--set` overrides.

Config classes live with the concept they configure; this is only the machinery. A config is
a frozen stdlib dataclass or a `flax.struct.dataclass`; field types are int, float, bool, str,
tuple[X, ...], Literal[...], Optional[X] or another config. Each field's one-line doc lives in
`metadata={"doc": ...}`; `field()` writes that (and flax's `pytree_node`) for you:

    @struct.dataclass
    class TrpoConfig:
        max_kl: float = config.field(0.01, "KL trust-region radius per update")
        cg_iters: int = config.field(10, "conjugate-gradient iterations", static=True)

A YAML file may name `base: other.yaml` (relative to itself) to inherit and override it, so
`base` is reserved as a top-level key. Later layers win: base dict < base files < file <
`--set` overrides. Every user mistake raises a one-line `MimicError` naming its source.
"""

import dataclasses
import functools
import numbers
import pathlib
import re
import types
import typing
from collections.abc import Hashable, Mapping
from typing import Any, Literal, Union

import numpy as np
import yaml

from mimic_mjx.errors import MimicError

OVERRIDE_SOURCE = "--set"


def field(default: Any, doc: str, *, static: bool = False) -> Any:
    """A config field with its one-line `doc`. `static=True`: not a pytree leaf (flax configs),
    for settings that fix shapes; numbers a sweep may vary stay leaves so configs can be vmapped."""
    metadata = {"doc": doc, "pytree_node": not static}
    if dataclasses.is_dataclass(default):
        # Configs are frozen, so sharing is safe; the factory just avoids the mutable-default check.
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


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


# What each scalar field type accepts (YAML ints fill floats; lists fill tuples below).
_ACCEPTS = {bool: (bool, np.bool_), int: numbers.Integral, float: numbers.Real, str: str}


class _Mismatch(Exception):
    """A value does not fit a type; the caller words the error for the whole field."""


@functools.cache
def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """`{name: (field, resolved type)}` for the fields a config's constructor takes."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _describe(tp: Any) -> str:
    """Words for a type in an error message: 'a float', 'a list of ints', 'one of ...'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        plural = {bool: "bools", int: "ints", float: "floats", str: "strings"}.get(args[0])
        return f"a list of {plural}" if plural else f"a list, each item {_describe(args[0])}"
    names = {bool: "a bool (true or false)", int: "an int", float: "a float", str: "a string"}
    return names.get(tp, repr(tp))


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    """`value` as type `tp`; nested configs come back as checked dicts. Raises _Mismatch."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return _check(tp, value, source, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _convert(arg, value, key, source)
                except _Mismatch:
                    pass
        raise _Mismatch
    if origin is Literal:
        # Compare types too: True == 1, but a bool is not the Literal 1.
        for allowed in args:
            if type(value) is type(allowed) and value == allowed:
                return allowed
        raise _Mismatch
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return tuple(_convert(args[0], v, key, source) for v in value)
    if tp in _ACCEPTS:
        # bool subclasses int, but `true` for a count or a weight is a mistake, not a 1.
        if isinstance(value, _ACCEPTS[tp]) and (tp is bool or not isinstance(value, _ACCEPTS[bool])):
            return tp(value)
        raise _Mismatch
    raise TypeError(f"config field '{key}' has unsupported type {tp!r}")


def _check(cls: type, data: Any, source: str, prefix: str = "") -> dict[str, Any]:
    """Validate the keys and value types present in mapping `data`; missing keys are fine."""
    fields = _fields(cls)
    out = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            under = f"under '{prefix[:-1]}'" if prefix else "at the top level"
            valid = ", ".join(fields)
            raise MimicError(f"{source}: unknown key '{dotted}' (valid keys {under}: {valid})")
        tp = fields[key][1]
        try:
            out[key] = _convert(tp, value, dotted, source)
        except _Mismatch:
            wanted = _describe(tp)
            raise MimicError(f"{source}: '{dotted}' must be {wanted}, got {_show(value)}") from None
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _build(cls: type, checked: dict[str, Any], start: Any, source: str, prefix: str = "") -> Any:
    """Construct `cls` from checked values; unset fields come from `start`, else defaults
    (so a section set in part keeps the rest of its parent's default instance)."""
    kwargs = {}
    for name, (f, tp) in _fields(cls).items():
        current = getattr(start, name) if start is not None else _default(f)
        if name in checked:
            value = checked[name]
            if isinstance(value, dict):
                # tp is the config class X or Optional[X].
                sub = next(a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a))
                base = current if isinstance(current, sub) else None
                value = _build(sub, value, base, source, f"{prefix}{name}.")
            kwargs[name] = value
        elif current is not dataclasses.MISSING:
            kwargs[name] = current
        else:
            raise MimicError(f"{source}: missing required key '{prefix}{name}'")
    return cls(**kwargs)


def _default(f: dataclasses.Field) -> Any:
    """The field's default value, or MISSING for a required field."""
    has_factory = f.default_factory is not dataclasses.MISSING
    return f.default_factory() if has_factory else f.default


def _merge(base: dict, over: Mapping) -> dict:
    """Deep merge: mappings merge key by key, anything else in `over` replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def from_dict(cls: type, data: Mapping, source: str) -> Any:
    """Config `cls` from nested plain data; missing keys take defaults; errors start `source`."""
    return _build(cls, _check(cls, data, source), None, source)


def to_dict(obj: Any) -> Any:
    """A config as nested plain Python (dict, list, int, float, bool, str, None), YAML-safe."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {name: to_dict(getattr(obj, name)) for name in _fields(type(obj))}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    # Before the plain types: np.float64 subclasses float but YAML's safe dumper refuses it.
    if hasattr(obj, "dtype"):  # numpy or jax scalar/array (a leaf of a pytree config)
        array = np.asarray(obj)
        if array.ndim:
            return [to_dict(v) for v in array]
        if np.issubdtype(array.dtype, np.floating):
            # str() gives the shortest digits at the array's precision: float32 0.1 -> 0.1.
            return float(str(array[()]))
        return array.item()
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    raise TypeError(f"cannot turn {type(obj).__name__} into a config value")


def parse_overrides(items: list[str]) -> dict:
    """`['trpo.max_kl=0.02', 'hidden=[64,64]']` -> one nested dict; values are YAML, later wins."""
    merged: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise MimicError(f"{OVERRIDE_SOURCE} '{item}': expected KEY=VALUE")
        try:
            value = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as err:
            problem = _problem(err)
            raise MimicError(f"{OVERRIDE_SOURCE} '{item}': value is not valid YAML: {problem}") from None
        for part in reversed(parts):
            value = {part.strip(): value}
        merged = _merge(merged, value)
    return merged


def load_config(cls: type, path: str | pathlib.Path | None, overrides: list[str],
                base: Mapping | None = None) -> Any:
    """Config `cls` from `base` (plain dict), then the YAML file at `path`, then `overrides`."""
    layers = [("base config", base)] if base else []
    if path is not None:
        layers += _read_chain(pathlib.Path(path), ())
    if overrides:
        layers.append((OVERRIDE_SOURCE, parse_overrides(overrides)))
    merged: dict = {}
    for source, data in layers:
        merged = _merge(merged, _check(cls, data, source))
    return _build(cls, merged, None, str(path) if path is not None else OVERRIDE_SOURCE)


def save_config(obj: Any, path: str | pathlib.Path) -> None:
    """Write the resolved config `obj` as YAML (a run directory keeps what it ran with)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None))


def field_docs(cls: type, prefix: str = "", start: Any = None) -> list[tuple[str, str, Any, str]]:
    """`(dotted key, type words, default, doc)` for every leaf field, for `--help` output."""
    rows = []
    for name, (f, tp) in _fields(cls).items():
        default = getattr(start, name) if start is not None else _default(f)
        if dataclasses.is_dataclass(tp):
            rows += field_docs(tp, f"{prefix}{name}.", default if isinstance(default, tp) else None)
        else:
            shown = None if default is dataclasses.MISSING else to_dict(default)
            rows.append((f"{prefix}{name}", _describe(tp), shown, f.metadata.get("doc", "")))
    return rows


def _read_chain(path: pathlib.Path, seen: tuple[pathlib.Path, ...]) -> list[tuple[str, dict]]:
    """`[(source, data), ...]` for `path` and the files its `base:` keys name, base first."""
    real = path.resolve()
    if real in seen:
        chain = " -> ".join(str(p) for p in (*seen, real))
        raise MimicError(f"{path}: 'base' files form a cycle: {chain}")
    try:
        text = path.read_text()
    except OSError as err:
        why = "config file not found" if isinstance(err, FileNotFoundError) else (
            f"cannot read config file: {err.strerror or err}")
        named_by = f" (named by 'base' in {seen[-1]})" if seen else ""
        raise MimicError(f"{path}: {why}{named_by}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise MimicError(f"{path}: malformed YAML{at}: {_problem(err)}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise MimicError(f"{path}: the top level must be a mapping of keys, got {_show(data)}")
    base = data.pop("base", None)
    if base is None:
        return [(str(path), data)]
    if not isinstance(base, str) or not base:
        raise MimicError(f"{path}: 'base' must be a YAML file name, got {_show(base)}")
    return _read_chain(path.parent / base, (*seen, real)) + [(str(path), data)]


def _problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message cut to its one-line problem."""
    text = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    return " ".join(str(text).split())
