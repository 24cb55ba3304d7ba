"""The one place router policies register; a duplicate name is an error."""
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
