"""Where the core finds what lives outside it: executors (``actors/``) and renderers (``dashboards/``).

They register as entry points of this package (``pyproject.toml``), so the core
never imports ``actors`` or ``dashboards``; another package can add its own.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points


def plugin(group: str, name: str, builtin: dict[str, str] | None = None):
    """The object registered as ``name`` in entry-point group ``rsd_ray.<group>``."""
    found = {e.name: e.value for e in entry_points(group=f"rsd_ray.{group}")}
    known = {**found, **(builtin or {})}
    if name not in known:
        raise ValueError(f"unknown {group[:-1]} {name!r}; available: {', '.join(sorted(known))}")
    module, attr = known[name].split(":")
    return getattr(importlib.import_module(module), attr)


def renderer(name: str):
    return plugin("renderers", name)
