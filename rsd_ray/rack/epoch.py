"""The one interface of the rack: an epoch in, an epoch out, as plain values.

::

    source ──arrivals──▶ router ──▶ EpochIn(t_end, arrivals per server, controls)
    executor.advance(EpochIn) ──one future per host──▶ EpochOut(tokens, finished, errored, orphans,
                                                        instance frames, card frames, links, failures)
    EpochOut ──▶ sinks (results, progress, dashboards, metrics, streams)

Everything here is a frozen dataclass of numbers, strings and tuples (msgpack-able
through ``dataclasses.asdict``): no live object crosses an epoch, so the same
values flow inline, through Ray, or over a socket. A lost card or host comes
back as a ``Failure`` value, never as an exception that ends the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rsd_ray.hardware.card import CardFrame
from rsd_ray.engine.frames import InstanceFrame
from rsd_ray.hardware.card_group import CardLost
from rsd_ray.engine.request import RequestRecord, Submit

__all__ = ["CardLost", "Control", "EpochIn", "EpochOut", "Failure", "Recovery", "Submit", "merge"]


@dataclass(frozen=True)
class Control:
    """A control message for the next epoch: ``kill_card`` (target: card id), ``kill_server`` (target: server;
    every card on it dies), ``ambient`` (target: server; its inlet air changes by ``value`` °C) or ``abort``
    (target: request id; the request leaves its instance, KV blocks freed, and comes back as a finished record
    with an error)."""
    kind: str
    target: int
    value: float = 0.0
    name: str = ""                 # degrade_link: the link (``card9->sw0.1``); value: % of its bandwidth left


@dataclass(frozen=True)
class Failure:
    """What was lost, when, and which instances it took down."""
    t: float
    kind: str                       # card | server | host
    server: int
    instances: tuple[int, ...]
    cards: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class Recovery:
    """A failed instance back in service (``--recover``): its lost cards restarted and reloaded."""
    t_failed: float
    t: float                        # when it rejoined
    server: int
    instance: int
    cards: tuple[int, ...]
    load_s: float                   # of the recovery time ``t - t_failed``: reloading the shards over the links

    @property
    def duration_s(self) -> float:
        return self.t - self.t_failed


@dataclass(frozen=True)
class EpochIn:
    """One epoch's input. ``telemetry``: also return card frames and link counters (they cost a round
    trip to every card on Ray, so the controller asks for them when a sink needs them); ``tokens``:
    return every token's timestamp as it happens (for streaming); ``trace``: every step's batch shape."""
    t_end: float
    arrivals: dict[int, tuple[Submit, ...]] = field(default_factory=dict)   # server → its arrivals
    controls: tuple[Control, ...] = ()
    telemetry: bool = False
    tokens: bool = False
    trace: bool = False                                       # return every step (instance, t0, t1, shape)


@dataclass(frozen=True)
class EpochOut:
    """One host's epoch (``server`` ≥ 0), or the rack's (``server`` = -1, everything merged)."""
    t_end: float
    server: int = -1
    finished: tuple[RequestRecord, ...] = ()
    errored: tuple[tuple[int, str], ...] = ()                   # (rid, reason)
    orphans: tuple[Submit, ...] = ()                            # requests of failed instances, to retry
    tokens: tuple[tuple[int, tuple[float, ...]], ...] = ()      # (rid, new token times) when asked
    instances: tuple[InstanceFrame, ...] = ()
    cards: tuple[CardFrame, ...] = ()
    link_bytes: tuple[tuple[str, float], ...] = ()
    failures: tuple[Failure, ...] = ()
    steps: tuple[tuple[int, float, float, tuple[float, ...]], ...] = ()
    recoveries: tuple[Recovery, ...] = ()


def merge(t_end: float, parts: list[EpochOut]) -> EpochOut:
    """The rack's epoch from its hosts' (link counters summed over hosts)."""
    links: dict[str, float] = {}
    for p in parts:
        for name, value in p.link_bytes:
            links[name] = links.get(name, 0.0) + value

    def cat(name):
        return tuple(x for p in parts for x in getattr(p, name))
    return EpochOut(t_end, -1, cat("finished"), cat("errored"), cat("orphans"), cat("tokens"),
                    tuple(sorted(cat("instances"), key=lambda f: f.instance)),
                    tuple(sorted(cat("cards"), key=lambda f: f.card)), tuple(sorted(links.items())),
                    cat("failures"), cat("steps"), cat("recoveries"))
