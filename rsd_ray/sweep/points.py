"""Sweep points: dotted field overrides applied to a validated RunSpec.

A point is a mapping such as ``{"rack.servers": 4, "tp": 8}``. Top-level parts
(``rack``, ``model``, ``engine``, ``router``, ``workload``) take a preset name
or path; dotted paths change one field of a part (``device.link.bandwidth_gbps``,
``engine.max_num_seqs``, ``workload.rate``, ``compiler.pipeline_chunks``) and are
re-read through the same schema, so a bad value is refused with its field.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import yaml

from rsd_ray.config import ConfigError, RunSpec, load_part, replace
from rsd_ray.config.loader import run_number
from rsd_ray.config.schema import read_spec

PARTS = {"rack": "racks", "model": "models", "engine": "engines", "router": "routers", "workload": "workloads"}


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """``field=v1,v2,...`` → (field, typed values)."""
    if "=" not in text:
        raise ConfigError("--grid", text, text, "write FIELD=V1,V2,... e.g. rack.servers=1,2,4,7,14")
    field, values = text.split("=", 1)
    return field.strip(), [yaml.safe_load(v) for v in values.split(",")]


def grid(axes: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """The cartesian product of the axes, in the order given."""
    names = [name for name, _ in axes]
    return [dict(zip(names, combo)) for combo in itertools.product(*(values for _, values in axes))]


def _set(obj, path: list[str], value, where: str):
    head = path[0]
    if not dataclasses.is_dataclass(obj) or head not in {f.name for f in dataclasses.fields(obj)}:
        raise ConfigError(where, ".".join(path), value, f"no such field in {type(obj).__name__}")
    if len(path) == 1:
        data = dataclasses.asdict(obj) | {head: value}
        return read_spec(type(obj), data, where)
    return dataclasses.replace(obj, **{head: _set(getattr(obj, head), path[1:], value, where)})


def apply(spec: RunSpec, point: dict[str, Any]) -> RunSpec:
    """``spec`` with the point's overrides, validated again."""
    for field, value in point.items():
        where = f"sweep point {field}"
        if field in PARTS:
            spec = dataclasses.replace(spec, **{field: load_part(PARTS[field], value, where)})
            if field == "rack":
                spec = dataclasses.replace(spec, device=load_part("devices", spec.rack.device, where))
        elif field in ("tp", "duration_s", "epoch_s", "drain_s", "seed"):
            number = run_number(point, field, type(getattr(spec, field)), where, allow_zero=field in ("drain_s", "seed"))
            spec = dataclasses.replace(spec, **{field: number})
        else:
            head, *rest = field.split(".")
            if not rest or not hasattr(spec, head):
                raise ConfigError(where, field, value, "use a part (rack, model, ...), tp, or a dotted field "
                                                      "such as engine.max_num_seqs or device.link.bandwidth_gbps")
            spec = dataclasses.replace(spec, **{head: _set(getattr(spec, head), rest, value, where)})
    return replace(spec)
