"""Typed reading of YAML mappings into frozen dataclasses.

One generic reader instead of a hand-written parser per spec: each dataclass
field's type says what is accepted, its metadata gives bounds and choices, and
every refusal names the file, the dotted field, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from pathlib import Path
from typing import Any, Mapping

from rsd_ray.config.errors import ConfigError


def spec_field(default=dataclasses.MISSING, *, lo=None, hi=None, choices=None, doc=""):
    """A dataclass field with bounds (inclusive) or allowed choices; a mapping's bounds hold for its values."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "doc": doc}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def finite(kind, lo=None):
    """An argparse type: a finite number of ``kind`` (NaN and infinity are refused at once), ≥ ``lo``."""
    import argparse

    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r}: give a finite number")
        if kind is int and value != int(value):
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number")
        if lo is not None and value < lo:
            raise argparse.ArgumentTypeError(f"{text!r}: must be ≥ {lo}")
        return kind(value)
    parse.__name__ = kind.__name__
    return parse


def read_spec(cls, data: Any, source: str, prefix: str = ""):
    """Build dataclass ``cls`` from ``data``, refusing unknown or bad fields."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, prefix or "<top>", data, f"expected a mapping of {cls.__name__} fields")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(source, _join(prefix, key), data[key],
                              f"unknown field; {hint}allowed: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        path = _join(prefix, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, path, None, "required field is missing")
            continue
        values[name] = _convert(hints[name], data[name], source, path, f.metadata)
    spec = cls(**values)
    for name, value, fix in getattr(spec, "problems", lambda: ())():
        raise ConfigError(source, _join(prefix, name), value, fix)
    return spec


def _join(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _convert(tp, value, source, path, meta):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, source, path, meta)
    if dataclasses.is_dataclass(tp):
        return read_spec(tp, value, source, path)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(source, path, value, "expected a mapping")
        vt = args[1] if args else Any
        return {str(k): _convert(vt, v, source, f"{path}.{k}", meta) for k, v in value.items()}
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, path, value, "expected a list")
        return tuple(_convert(args[0], v, source, f"{path}[{i}]", meta) for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, value, "expected true or false")
        return value
    if tp in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ConfigError(source, path, value, "must be a finite number")
        if tp is int and ok and float(value) != int(value):
            ok = False
        if not ok:
            raise ConfigError(source, path, value, f"expected a{'n integer' if tp is int else ' number'}")
        value = tp(value)
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and value < lo:
            raise ConfigError(source, path, value, f"must be ≥ {lo}")
        if hi is not None and value > hi:
            raise ConfigError(source, path, value, f"must be ≤ {hi}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, path, value, "expected a string")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(source, path, value, f"choose one of: {', '.join(choices)}")
        return value
    raise TypeError(f"schema cannot read type {tp!r} at {path}")


def writable(path: str | None, flag: str) -> None:
    """Refuse an output path before anything runs, not after the run has finished."""
    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise ConfigError("command line", flag, path, "is a directory; give a file name")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError("command line", flag, path, f"folder {folder} does not exist; create it or choose another")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ConfigError("command line", flag, path, "is not writable here; choose another path")
