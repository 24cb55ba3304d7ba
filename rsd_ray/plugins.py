"""Where the core finds what lives outside it: executors (``rsd_ray.inline``, ``actors/``) and renderers
(``dashboards/``).

They are found by name — the inline executor built in, the others entry points of this package
(``pyproject.toml``) — so the core never imports them; another package can add its own.
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


EXECUTORS = {"inline": "rsd_ray.inline:InlineExecutor"}
"""Built-in executors; the Ray executor registers under the ``rsd_ray.executors`` entry point."""


def get_executor(name: str):
    """The executor class registered as ``name`` (``inline``, ``ray``, ...)."""
    return plugin("executors", name, EXECUTORS)
