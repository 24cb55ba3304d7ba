"""The one place router policies register; a duplicate name is an error.

A policy is a class built with ``(num_instances, rng)`` whose ``choose(loads, eligible)`` returns an
instance id: ``loads`` is each instance's running + waiting + sent (an int array), ``eligible`` a
boolean mask with at least one True.
"""
from __future__ import annotations

POLICIES: dict[str, type] = {}


def register(name: str):
    def wrap(cls):
        if name in POLICIES:
            raise ValueError(f"router policy {name!r} is registered twice")
        POLICIES[name] = cls
        cls.name = name
        return cls
    return wrap
