"""Specs are frozen pydantic v2 dataclasses; this module makes them and turns their errors into ``ConfigError``.

A spec's fields carry their types and ranges (``Field(ge=..., le=...)``) and its
cross-field rules are ``model_validator``s, so a spec is checked whenever it is
built: from YAML, from code, or copied with a change by ``dataclasses.replace``
(which calls the validating ``__init__``). Dataclasses rather than ``BaseModel``
because ``dataclasses.replace`` and ``asdict`` are how the rest of the code
copies and dumps specs, and both stay correct. Unknown keys, NaN and infinity
are refused by the shared ``SPEC_CONFIG``; scalars are strict (YAML ``"64"`` or
``true`` is not a number; an integer is a number).

Every refusal keeps one form: the file, the dotted field, the value and the fix
(with "did you mean" for a misspelt key).
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from functools import cache
from typing import Annotated, Any, Mapping, get_args

from pydantic import ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import ArgsKwargs

from rsd_ray.config.errors import ConfigError

SPEC_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]      # strict float still takes an int
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]


def spec(cls):
    """``cls`` as a frozen, keyword-only, validating spec."""
    return pydantic_dataclass(frozen=True, kw_only=True, config=SPEC_CONFIG)(cls)


def choices(spec_cls, field: str) -> tuple:
    """The values a ``Literal`` field of a spec takes: the one list of them (command-line choices, tables)."""
    return get_args(spec_cls.__pydantic_fields__[field].annotation)


class Problem(ValueError):
    """A cross-field rule a spec's validator found broken: the field (dotted, relative to the spec), its
    value and the fix; ``read_spec`` puts the file and the spec's own place in front."""

    def __init__(self, field: str, value, fix: str):
        self.field, self.value, self.fix = field, value, fix
        super().__init__(f"{field} = {value!r} — {fix}")


@cache
def _adapter(cls) -> TypeAdapter:
    return TypeAdapter(cls)


def read_spec(cls, data: Any, source: str, prefix: str = ""):
    """Spec ``cls`` from a mapping (YAML), or a ``ConfigError`` naming ``source`` and the dotted field."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, prefix or "<top>", data, f"expected a mapping of {cls.__name__} fields")
    try:
        return _adapter(cls).validate_python(dict(data))
    except ValidationError as err:
        raise config_error(err, cls, source, prefix) from None


def replace(spec, where: str = "<replace>", **changes):
    """A copy of ``spec`` with some fields changed, validated again; a refusal names ``where``."""
    try:
        return dataclasses.replace(spec, **changes)
    except ValidationError as err:
        raise config_error(err, type(spec), where) from None


FIXES = {
    "missing": "required field is missing",
    "finite_number": "must be a finite number",
    "int_type": "expected an integer", "int_from_float": "expected an integer", "int_parsing": "expected an integer",
    "float_type": "expected a number", "float_parsing": "expected a number",
    "bool_type": "expected true or false", "string_type": "expected a string",
    "dict_type": "expected a mapping",
}
BOUNDS = {"greater_than_equal": ("≥", "ge"), "greater_than": (">", "gt"),
          "less_than_equal": ("≤", "le"), "less_than": ("<", "lt")}


def config_error(err: ValidationError, cls, source: str, prefix: str = "") -> ConfigError:
    """The first of pydantic's errors in ``ConfigError``'s form: file, dotted field, value, fix."""
    first = err.errors()[0]
    kind, loc, value, ctx = first["type"], [str(p) for p in first["loc"]], first["input"], first.get("ctx") or {}
    problem = ctx.get("error")
    if isinstance(problem, Problem):
        loc, value, fix = loc + problem.field.split("."), problem.value, problem.fix
    elif kind in ("unexpected_keyword_argument", "extra_forbidden", "invalid_key"):
        allowed = [f.name for f in dataclasses.fields(_type_at(cls, loc[:-1]))]
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        fix = f"unknown field; {f'did you mean {close[0]!r}? ' if close else ''}allowed: {', '.join(sorted(allowed))}"
    elif kind in BOUNDS:
        sign, key = BOUNDS[kind]
        fix = f"must be {sign} {ctx[key]}"
    elif kind == "literal_error":
        fix = f"choose one of: {', '.join(typing.get_args(_type_at(cls, loc)))}"
    elif kind in ("dataclass_type", "dataclass_exact_type"):
        fix = f"expected a mapping of {ctx.get('class_name', 'its')} fields"
    else:
        fix = FIXES.get(kind, first["msg"])
    if isinstance(value, ArgsKwargs) or kind == "missing":
        value = None
    return ConfigError(source, ".".join([prefix] * bool(prefix) + loc) or "<top>", value, fix)


def _type_at(cls, path: list[str]):
    """The type of the field at ``path`` under spec ``cls``, through nested and optional specs and mappings."""
    for name in path:
        if dataclasses.is_dataclass(cls):
            cls = typing.get_type_hints(cls).get(name)
        elif typing.get_origin(cls) is dict:
            cls = typing.get_args(cls)[1]
        cls = next((a for a in typing.get_args(cls) if dataclasses.is_dataclass(a)), cls)  # Optional[Spec]
    return cls
