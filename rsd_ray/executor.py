"""Executors: the one surface the controller drives, whatever runs the hosts.

``InlineExecutor`` keeps every host and card as a plain object in this
process; ``RayExecutor`` (``rsd_ray.actors``) answers the same calls with
host and card actors.
"""
from __future__ import annotations

from rsd_ray.card import CardFrame
from rsd_ray.compiler import Plan
from rsd_ray.config import RunSpec
from rsd_ray.host import EpochReport, Host, HostSetup
from rsd_ray.request import Request, RequestRecord


def sum_counts(parts) -> dict[str, float]:
    """Per-host counters (link name → bytes) summed over the rack."""
    out: dict[str, float] = {}
    for part in parts:
        for name, value in part.items():
            out[name] = out.get(name, 0.0) + value
    return out


class InlineExecutor:
    name = "inline"

    def __init__(self, spec: RunSpec, plan: Plan, setups: list[HostSetup]):
        self.hosts = [Host.local(spec, plan, s) for s in setups]

    def advance(self, t_end: float, arrivals: dict[int, list[Request]]) -> list[EpochReport]:
        return [h.advance(t_end, arrivals.get(h.server, [])) for h in self.hosts]

    def card_frames(self, t: float) -> list[CardFrame]:
        return [f for h in self.hosts for f in h.card_frames(t)]

    def link_bytes(self) -> dict[str, float]:
        return sum_counts(h.link_bytes() for h in self.hosts)

    def unfinished(self) -> list[RequestRecord]:
        return [r for h in self.hosts for r in h.unfinished()]

    def shutdown(self) -> None:
        for h in self.hosts:
            h.close()
        self.hosts = []


def _ray_executor():
    from rsd_ray.actors.ray_executor import RayExecutor   # Ray is imported only when asked for
    return RayExecutor


EXECUTORS = {"inline": lambda: InlineExecutor, "ray": _ray_executor}


def get_executor(name: str):
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}")
    return EXECUTORS[name]()
