"""The one place router policies register; a duplicate name is an error.

A policy is a class built with ``(num_instances, rng)`` whose ``choose(loads, eligible)`` returns an
instance id: ``loads`` is each instance's running + waiting + sent (an int array), ``eligible`` a
boolean mask with at least one True. A policy that reads only the loads may also pick for many requests
in one go, ``choose_in_turn(loads, eligible, room, count)``: the ids ``choose`` would return one after
another, each adding one to its instance's load and taking one of its ``room`` (``least_loaded``).
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
