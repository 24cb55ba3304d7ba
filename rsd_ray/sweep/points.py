"""Sweep points: dotted field overrides applied to a validated RunSpec.

A point is a mapping such as ``{"rack.servers": 4, "tp": 8}``. Top-level parts
(``rack``, ``model``, ``engine``, ``router``, ``workload``) take a preset name
or path; dotted paths change one field of a part (``device.link.bandwidth_gbps``,
``engine.max_num_seqs``, ``workload.rate``, ``compiler.pipeline_chunks``, ``prefill.tp``,
``prefill.engine.max_num_batched_tokens``: a prefill engine starts as the run's) and are
re-read through the same schema, so a bad value is refused with its field.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import yaml

from rsd_ray.config import ConfigError, RunSpec, load_part, replace
from rsd_ray.config.loader import DEFAULT_RUN, PARTS
from rsd_ray.config.schema import read_spec

NESTED = ("device", "prefill")             # specs that are not parts, changed field by field
SCALARS = tuple(f for f in DEFAULT_RUN if f not in PARTS and f not in NESTED)     # tp, duration_s, ..., recover


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


def apply(spec: RunSpec, point: dict[str, Any]) -> RunSpec:
    """``spec`` with the point's overrides, validated once as a whole: a new rack is never checked against
    the old TP, nor ``workload.arrival`` against the old rate, half-way through a point."""
    where = "sweep point " + ", ".join(point)
    changes: dict[str, Any] = {}
    dotted: dict[str, dict] = {}
    for field, value in point.items():
        head, *rest = field.split(".")
        if field in PARTS:
            changes[field] = load_part(PARTS[field], value, where)
            if field == "rack":
                changes["device"] = load_part("devices", changes["rack"].device, where)
        elif not rest and field in SCALARS:
            changes[field] = value
        elif rest and (head in PARTS or head in NESTED):
            _nest(dotted.setdefault(head, {}), rest, value)
        else:
            raise ConfigError(where, field, value, "use a part (rack, model, ...), tp, or a dotted field "
                                                  "such as engine.max_num_seqs or device.link.bandwidth_gbps")
    for head, overrides in dotted.items():
        part = changes.get(head, getattr(spec, head))
        base = dataclasses.asdict(part)
        if head == "prefill" and "engine" in overrides:     # the prefill engine's fields differ from the run's
            base["engine"] = dataclasses.asdict(part.engine or changes.get("engine", spec.engine))
        changes[head] = read_spec(type(part), _merged(base, overrides), where, head)
    return replace(spec, where, **changes)


def _nest(tree: dict, path: list[str], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it, mapping by mapping."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
