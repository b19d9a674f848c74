"""Typed, validated sections: `param(...)` declares a field with its rules beside its default,
`section` makes a frozen dataclass, and `build` turns a plain mapping (parsed YAML) into a
section, naming the dotted key of any unknown key, wrong type or out-of-range value (with a
did-you-mean hint). params.py declares SpiderGAN's sections with these.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any


class ParamsError(ValueError):
    """A parameter file that must not be run with. The message names the offending key."""


def param(default: Any = dataclasses.MISSING, *, ge=None, gt=None, le=None, lt=None,
          choices=None, default_factory: Any = dataclasses.MISSING, doc: str = ""):
    """A dataclass field with validation rules attached as metadata."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "doc": doc}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def section(cls):
    """Decorator for a params section: frozen dataclass."""
    return dataclass(frozen=True)(cls)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return the value in its canonical form."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping (section), got {type(value).__name__}")
        return build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ParamsError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ParamsError(f"{key}: expected {len(args)} items, got {len(value)}")
        if args:
            item_tp = args[0]
            return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
        return tuple(value)
    raise ParamsError(f"{key}: unsupported parameter type {_type_name(tp)}")


def _check_rules(value: Any, meta: dict, key: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ParamsError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
    for name, op, text in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                           ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        bound = meta.get(name)
        if bound is None:
            continue
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if not op(item, bound):
                raise ParamsError(f"{key}: {item!r} is out of range (must be {text} {bound})")


def build(cls, data: dict, prefix: str):
    """Section `cls` from `data`, checked key by key (`prefix`: the section's dotted key)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            where = f"{prefix}.{k}" if prefix else str(k)
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean {(prefix + '.' if prefix else '') + close[0]}?)" if close else ""
            raise ParamsError(f"unknown parameter {where}{hint}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _coerce(data[name], hints[name], key)
        elif dataclasses.is_dataclass(hints[name]):
            value = _coerce({}, hints[name], key)
        else:
            continue
        _check_rules(value, dict(f.metadata), key)
        kwargs[name] = value
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a field without default was not given
        raise ParamsError(f"{prefix or 'params'}: {e}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ParamsError as e:
            raise ParamsError(f"{prefix + '.' if prefix else ''}{e}") from None
    return obj




def to_dict(obj) -> dict:
    """Params (or a section) as plain data, e.g. to record beside a checkpoint."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v
    return conv(obj)
