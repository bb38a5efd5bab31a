"""Typed configs: nested dataclasses loaded from YAML presets plus dotted `--set` overrides.

Config classes live with the concept they configure; this is only the machinery, and every
command (train, diagnose, sweep, eval, bench) reads its YAML and `--set` through it. A config
is a frozen stdlib dataclass or a `flax.struct.dataclass`; field types are int, float, bool,
str, tuple[X, ...], dict[str, X], Literal[...], Optional[X] or another config. Each field's
one-line doc and its valid range live next to its default; `field()` writes them (and flax's
`pytree_node`) into the field's metadata:

    @struct.dataclass
    class TrpoConfig:
        max_kl: float = config.field(0.01, "KL trust-region radius per update", gt=0)
        cg_iters: int = config.field(10, "conjugate-gradient iterations", static=True, ge=1)

Ranges (`ge`, `gt`, `le`, `lt`, `choices`) are checked when a value is loaded, with a one-line
error naming the field, the value and the range; `validate(obj)` checks a built (or stacked)
config the same way. Float fields must also be finite.

A YAML file may name `base: other.yaml` (relative to itself) to inherit and override it, so
`base` is reserved as a top-level key. Later layers win: base dict < base files < file <
`--set` overrides. Every user mistake raises a one-line `MimicError` naming its source.

Preset sections: a config class with the classmethods `from_preset(name)` and
`preset_names()` (the reward) also takes the key `preset`. The preset gives every field the
section does not set, and a `preset` in a layer starts the section afresh: fields set by
earlier layers (base files, a saved config.yaml) are dropped, fields in the same or later
layers apply on top. A null field in a preset section means "the preset's value" (run
directories written before presets were sections hold `pose_weight: null` and so on).

A dict field's keys may be dotted; nested mappings under it are flattened to dotted keys, so
`grid: {reward: {pose_scale: [1]}}`, `grid: {reward.pose_scale: [1]}` and
`--set grid.reward.pose_scale=[1]` are the same.
"""

import dataclasses
import functools
import math
import numbers
import pathlib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

import numpy as np
import yaml

from mimic_mjx import yamlfile
from mimic_mjx.errors import MimicError

OVERRIDE_SOURCE = "--set"
PRESET_KEY = "preset"
_BOUNDS = ("ge", "gt", "le", "lt")


def field(default: Any, doc: str, *, static: bool = False, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None, choices: tuple | None = None) -> Any:
    """A config field with its one-line `doc` and its valid range.

    `static=True`: not a pytree leaf (flax configs), for settings that fix shapes; numbers a
    sweep may vary stay leaves so configs can be vmapped. `ge`/`gt`/`le`/`lt`: inclusive and
    exclusive bounds (>=, >, <=, <); `choices`: the allowed values. For a tuple field they
    apply to every item; a null (Optional) value is not checked. `default=dataclasses.MISSING`
    makes the key required.
    """
    metadata = {"doc": doc, "pytree_node": not static}
    bounds = {name: value for name, value in zip(_BOUNDS, (ge, gt, le, lt)) if value is not None}
    if bounds:
        metadata["bounds"] = bounds
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if dataclasses.is_dataclass(default):
        # Configs are frozen, so sharing is safe; the factory just avoids the mutable-default check.
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# What each scalar field type accepts (YAML ints fill floats; lists fill tuples below).
_ACCEPTS = {bool: (bool, np.bool_), int: numbers.Integral, float: numbers.Real, str: str}


class _Mismatch(Exception):
    """A value does not fit a type; the caller words the error for the whole field."""


@functools.cache
def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """`{name: (field, resolved type)}` for the fields a config's constructor takes."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def declared_fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """`{name: (field, resolved type)}` of a config class (its metadata holds doc and range)."""
    return dict(_fields(cls))


def config_class(tp: Any) -> type | None:
    """The config class of a field typed X or Optional[X], else None."""
    return _config_class(tp)


def has_presets(cls: Any) -> bool:
    return isinstance(cls, type) and hasattr(cls, "from_preset") and hasattr(cls, "preset_names")


def _config_class(tp: Any) -> type | None:
    """The config class of a field typed X or Optional[X], else None."""
    return next((a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)), None)


def _is_float(tp: Any) -> bool:
    """Whether the field holds floats (float, Optional[float], tuple[float, ...])."""
    return tp is float or float in typing.get_args(tp)


def describe_type(tp: Any) -> str:
    """Words for a type in an error message: 'a float', 'a list of ints', 'one of ...'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe_type(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        plural = {bool: "bools", int: "ints", float: "floats", str: "strings"}.get(args[0])
        return f"a list of {plural}" if plural else f"a list, each item {describe_type(args[0])}"
    if origin is dict:
        return f"a mapping of keys to {_plural(args[1])}"
    names = {bool: "a bool (true or false)", int: "an int", float: "a float", str: "a string"}
    return names.get(tp, repr(tp))


def _plural(tp: Any) -> str:
    """'floats', 'lists of floats': what a mapping's values are, in the plural."""
    if typing.get_origin(tp) is tuple:
        return "lists of " + _plural(typing.get_args(tp)[0])
    return {bool: "bools", int: "ints", float: "floats", str: "strings"}.get(tp, describe_type(tp))


def _flatten(value: Mapping, prefix: str = "") -> dict:
    """`{a: {b: 1}, c.d: 2}` -> `{"a.b": 1, "c.d": 2}`."""
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise _Mismatch
        if isinstance(item, Mapping):
            out.update(_flatten(item, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = item
    return out


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
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        out = {}
        for k, v in _flatten(value).items():
            try:
                out[k] = _convert(args[1], v, f"{key}.{k}", source)
            except _Mismatch:  # name the entry, not the whole mapping
                raise MimicError(f"{source}: '{key}.{k}' must be {describe_type(args[1])}, got {_show(v)}") from None
        return out
    if tp in _ACCEPTS:
        # bool subclasses int, but `true` for a count or a weight is a mistake, not a 1.
        if isinstance(value, _ACCEPTS[tp]) and (tp is bool or not isinstance(value, _ACCEPTS[bool])):
            return tp(value)
        raise _Mismatch
    raise TypeError(f"config field '{key}' has unsupported type {tp!r}")


def range_text(f: dataclasses.Field) -> str:
    """The declared range in words: '> 0', 'in [0, 1]', 'one of 0, 1, 2'; '' if none."""
    if "choices" in f.metadata:
        return "one of " + ", ".join(_number_text(c) for c in f.metadata["choices"])
    bounds = f.metadata.get("bounds", {})
    low = next(((name, bounds[name]) for name in ("gt", "ge") if name in bounds), None)
    high = next(((name, bounds[name]) for name in ("lt", "le") if name in bounds), None)
    if low and high:
        return (f"in {'(' if low[0] == 'gt' else '['}{_number_text(low[1])}, "
                f"{_number_text(high[1])}{')' if high[0] == 'lt' else ']'}")
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{symbols[b[0]]} {_number_text(b[1])}" for b in (low, high) if b)


def _number_text(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _in_range(f: dataclasses.Field, tp: Any, value: Any) -> bool:
    """Whether `value` (a scalar, a tuple, or a numpy/jax array of a stacked config) fits."""
    if value is None:
        return True
    items = value if isinstance(value, (tuple, list)) else [value]
    if any(isinstance(v, Mapping) for v in items):
        return True  # dict fields (a sweep's grid) are checked by their owner
    if any(isinstance(v, str) for v in items):
        return "choices" not in f.metadata or all(v in f.metadata["choices"] for v in items)
    array = np.asarray(items, dtype=float)
    if _is_float(tp) and not np.all(np.isfinite(array)):
        return False
    if "choices" in f.metadata and not np.all(np.isin(array, f.metadata["choices"])):
        return False
    checks = {"ge": np.greater_equal, "gt": np.greater, "le": np.less_equal, "lt": np.less}
    return all(np.all(checks[name](array, bound)) for name, bound in f.metadata.get("bounds", {}).items())


def _range_error(f: dataclasses.Field, tp: Any, dotted: str, value: Any) -> str:
    """`'trpo.max_kl must be > 0, got -0.01'` (or `'... must be finite, got nan'`)."""
    shown = value.tolist() if hasattr(value, "tolist") else list(value) if isinstance(value, tuple) else value
    reals = [v for v in np.ravel(np.asarray(shown, dtype=object)) if isinstance(v, numbers.Real)]
    if _is_float(tp) and not all(math.isfinite(v) for v in reals):
        return f"{dotted} must be finite, got {_show(shown)}"
    return f"{dotted} must be {range_text(f)}, got {_show(shown)}"


def _check(cls: type, data: Any, source: str, prefix: str = "") -> dict[str, Any]:
    """Validate the keys, value types and ranges present in mapping `data`; missing keys are fine."""
    fields = _fields(cls)
    presets = has_presets(cls)
    out = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if presets and key == PRESET_KEY:
            out[key] = _check_preset(cls, value, dotted, source)
            continue
        if key not in fields:
            under = f"under '{prefix[:-1]}'" if prefix else "at the top level"
            valid = ", ".join(([PRESET_KEY] if presets else []) + list(fields))
            raise MimicError(f"{source}: unknown key '{dotted}' (valid keys {under}: {valid})")
        f, tp = fields[key]
        if presets and value is None and type(None) not in typing.get_args(tp):
            continue  # null in a preset section: the preset's value
        try:
            out[key] = _convert(tp, value, dotted, source)
        except _Mismatch:
            wanted = describe_type(tp)
            raise MimicError(f"{source}: '{dotted}' must be {wanted}, got {_show(value)}") from None
        if _config_class(tp) is None and not _in_range(f, tp, out[key]):
            raise MimicError(f"{source}: {_range_error(f, tp, dotted, out[key])}")
    return out


def _check_preset(cls: type, value: Any, dotted: str, source: str) -> str:
    if not isinstance(value, str):
        raise MimicError(f"{source}: '{dotted}' must be a preset name ({', '.join(cls.preset_names())}), "
                         f"got {_show(value)}")
    try:
        cls.from_preset(value)
    except MimicError as err:
        raise MimicError(f"{source}: {err}") from None
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _build(cls: type, checked: dict[str, Any], start: Any, source: str, prefix: str = "") -> Any:
    """Construct `cls` from checked values; unset fields come from `start`, else defaults
    (so a section set in part keeps the rest of its parent's default instance). In a preset
    section a checked `preset` replaces `start`."""
    if has_presets(cls) and PRESET_KEY in checked:
        start = cls.from_preset(checked[PRESET_KEY])
    kwargs = {}
    for name, (f, tp) in _fields(cls).items():
        current = getattr(start, name) if start is not None else default_value(f)
        if name in checked:
            value = checked[name]
            sub = _config_class(tp)
            if isinstance(value, dict) and sub is not None:
                base = current if isinstance(current, sub) else None
                value = _build(sub, value, base, source, f"{prefix}{name}.")
            kwargs[name] = value
        elif current is not dataclasses.MISSING:
            kwargs[name] = current
        else:
            raise MimicError(f"{source}: missing required key '{prefix}{name}'")
    return cls(**kwargs)


def default_value(f: dataclasses.Field) -> Any:
    """The field's default value, or MISSING for a required field."""
    has_factory = f.default_factory is not dataclasses.MISSING
    return f.default_factory() if has_factory else f.default


def _merge(cls: type, base: dict, over: Mapping) -> dict:
    """Deep merge of two checked layers of `cls`: config sections merge key by key (a
    `preset` starts its section afresh), dict fields merge key by key, anything else in
    `over` replaces."""
    out = dict(base)
    fields = _fields(cls)
    for key, value in over.items():
        sub = _config_class(fields[key][1]) if key in fields else None
        if not isinstance(value, dict) or not isinstance(out.get(key), dict):
            out[key] = dict(value) if isinstance(value, dict) else value
        elif sub is None:
            out[key] = {**out[key], **value}
        elif has_presets(sub) and PRESET_KEY in value:
            out[key] = dict(value)
        else:
            out[key] = _merge(sub, out[key], value)
    return out


def from_dict(cls: type, data: Mapping, source: str) -> Any:
    """Config `cls` from nested plain data; missing keys take defaults; errors start `source`."""
    return _build(cls, _check(cls, data, source), None, source)


def replace(obj: Any, overrides: Mapping, source: str) -> Any:
    """`obj` with `overrides` (dotted keys, `{"reward.pose_scale": 2.0}`, or nested) applied,
    checked exactly as a YAML layer or `--set` would be; MimicError names `source`."""
    nested = _nest(overrides)
    cls = type(obj)
    return _build(cls, _check(cls, nested, source), obj, source)


def _nest(flat: Mapping) -> dict:
    """`{"a.b": 1, "a.c": 2}` -> `{"a": {"b": 1, "c": 2}}` (nested mappings merge)."""
    out: dict = {}
    for key, value in flat.items():
        for part in reversed(str(key).split(".")):
            value = {part: value}
        out = _merge_plain(out, value)
    return out


def validate(obj: Any, prefix: str = "", source: str | None = None) -> Any:
    """Check every declared range of a built config (scalar or stacked array leaves) and that
    float fields are finite; returns `obj`. MimicError: `[source: ]prefix.field must be ...`."""
    for name, (f, tp) in _fields(type(obj)).items():
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value, f"{prefix}{name}.", source)
        elif not _in_range(f, tp, value):
            message = _range_error(f, tp, f"{prefix}{name}", value)
            raise MimicError(f"{source}: {message}" if source else message)
    return obj


def differences(a: Any, b: Any) -> dict[str, tuple[Any, Any]]:
    """`{dotted key: (a's value, b's value)}` for every key where two configs differ, sorted by
    key: what a resume that must continue a saved config names when it does not."""
    mine, theirs = _flatten(to_dict(a)), _flatten(to_dict(b))
    return {k: (mine.get(k), theirs.get(k)) for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k)}


def to_dict(obj: Any) -> Any:
    """A config as nested plain Python (dict, list, int, float, bool, str, None), YAML-safe."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {name: to_dict(getattr(obj, name)) for name in _fields(type(obj))}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
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
        value = yamlfile.parse_value(text, f"{OVERRIDE_SOURCE} '{item}'")
        for part in reversed(parts):
            value = {part.strip(): value}
        merged = _merge_plain(merged, value)
    return merged


def _merge_plain(base: dict, over: Mapping) -> dict:
    """Deep merge of plain dicts: mappings merge key by key, anything else in `over` replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge_plain(out[key], value)
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def load_config(cls: type, path: str | pathlib.Path | None, overrides: list[str],
                base: Mapping | None = None) -> Any:
    """Config `cls` from `base` (plain dict), then the YAML file at `path`, then `overrides`."""
    layers = [("base config", base)] if base else []
    if path is not None:
        layers += yamlfile.read_chain(pathlib.Path(path))
    if overrides:
        layers.append((OVERRIDE_SOURCE, parse_overrides(overrides)))
    merged: dict = {}
    for source, data in layers:
        merged = _merge(cls, merged, _check(cls, data, source))
    return _build(cls, merged, None, str(path) if path is not None else OVERRIDE_SOURCE)


def save_config(obj: Any, path: str | pathlib.Path) -> None:
    """Write the resolved config `obj` as YAML (a run directory keeps what it ran with)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None))
