"""The one interface of the rack: an epoch in, an epoch out, as plain values.

::

    source ──arrivals──▶ router ──▶ EpochIn(t_end, arrivals per server, controls)
    executor.run_epoch(EpochIn) ──one future per host──▶ EpochOut(tokens, finished, errored, orphans,
                                                        instance frames, card frames, links, failures)
    EpochOut ──▶ sinks (results, progress, dashboards, metrics, streams)

Everything here is a frozen dataclass of numbers, strings and tuples, and a record's
token times (``TokenTimes``: a read-only array that reads as a tuple, packed as a list)
— msgpack-able through ``dataclasses.asdict``: no live object crosses an epoch, so the same
values flow inline, through Ray, or over a socket. A lost card or host comes
back as a ``Failure`` value, never as an exception that ends the run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from rsd_ray.hardware.card import CardFrame
from rsd_ray.engine.frames import InstanceFrame
from rsd_ray.hardware.card_group import CardLost
from rsd_ray.engine.request import RequestRecord, Submit

__all__ = ["CardLost", "Control", "EpochIn", "EpochOut", "Failure", "Kind", "Needs", "Recovery", "Sink", "Submit",
           "merge"]


class Kind(str, Enum):
    """What a fault, a control or a failure is about — one vocabulary for all three::

        fault (``--fault``)   control (the next epoch's)          failure (what was lost)
        card                  card: that card dies                 card: a card (and its instance)
        server                server: every card on it dies        server: a server's cards
        ambient               ambient: its inlet air changes       —
        link                  link: keeps a share of bandwidth     —
        —                     abort: a request's client left       —
        —                     —                                    host: a host actor and its server's state
    """
    CARD = "card"
    SERVER = "server"
    AMBIENT = "ambient"
    LINK = "link"
    ABORT = "abort"
    HOST = "host"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class Control:
    """A control for the next epoch, by ``kind``: ``CARD`` (target: card id) or ``SERVER`` (target: server)
    dies; ``AMBIENT`` (target: server) its inlet air changes by ``value`` °C; ``LINK`` (``name``, e.g.
    ``card9->sw0.1``) keeps ``value`` % of its bandwidth; ``ABORT`` (target: request id) the request leaves
    its instance, KV blocks freed, and comes back as a finished record with an error."""
    kind: Kind
    target: int = 0
    value: float = 0.0
    name: str = ""


class Sink(Protocol):
    """What watches the rack: called with every epoch's ``EpochOut`` and the number of requests in flight,
    after the controller booked it. A sink only listens (results, progress, dashboards, metrics, streams,
    timelines); one that needs more than the default declares it as ``needs`` (a ``Needs``)."""
    needs: "Needs"

    def __call__(self, out: "EpochOut", in_flight: int) -> None: ...


@dataclass(frozen=True)
class Needs:
    """What a sink asks of every epoch beyond the default (finished requests, instance frames, failures):
    ``tokens`` every token's time as it happens (streaming), ``steps`` every step (a timeline), card
    frames and link counters every ``telemetry_every_s`` (they cost a round trip to every card on Ray), and
    ``every_epoch``: to be called at every epoch boundary, even those in which nothing happens (a sink that
    acts on the rack at given times; otherwise the controller may run over quiet epochs in one call)."""
    tokens: bool = False
    steps: bool = False
    telemetry_every_s: float | None = None
    every_epoch: bool = False

    def __or__(self, other: "Needs") -> "Needs":
        every = [e for e in (self.telemetry_every_s, other.telemetry_every_s) if e]
        return Needs(self.tokens or other.tokens, self.steps or other.steps, min(every) if every else None,
                     self.every_epoch or other.every_epoch)


@dataclass(frozen=True)
class Failure:
    """What was lost, when, and which instances it took down."""
    t: float
    kind: Kind                      # CARD, SERVER or HOST
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
    return every token's timestamp as it happens (for streaming); ``trace``: every step's batch shape.
    ``horizon`` (> ``t_end``): the host may go on over the epochs up to it, in which nothing is routed,
    controlled or sampled, stopping at the end of the first epoch that ends in a loss or, by ``stop``, in
    which a request finished (``"answer"``: it brings a new one) or after which the host holds none
    (``"empty"``); the ``EpochOut``'s ``t_end`` says where it stopped. ``quiet`` (``"answer"`` or
    ``"empty"``): also say how far the host could run before such a stop could come (``EpochOut.quiet_until``),
    so that a controller of several hosts can let them all run there in one call."""
    t_end: float
    arrivals: dict[int, tuple[Submit, ...]] = field(default_factory=dict)   # server → its arrivals
    controls: tuple[Control, ...] = ()
    telemetry: bool = False
    tokens: bool = False
    trace: bool = False                                       # return every step (instance, t0, t1, shape)
    horizon: float | None = None
    stop: str = ""                                            # "", "answer" or "empty" (with ``horizon``)
    quiet: str = ""


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
    healthy: tuple[bool, ...] = ()          # the rack's: each instance's health as the router has it now
    quiet_until: float = math.nan           # asked ``EpochIn.quiet``: its stop cannot come before this boundary


def merge(t_end: float, parts: list[EpochOut], quiet: str = "") -> EpochOut:
    """The rack's epoch from its hosts' (link counters summed over hosts); it ends where they stopped. Their
    ``quiet_until``: a request can finish on the rack no sooner than on the first host to see one
    (``quiet="answer"``), and the rack be empty no sooner than its last host (``"empty"``); a host that
    cannot say (NaN) says it for all."""
    links: dict[str, float] = {}
    for p in parts:
        for name, value in p.link_bytes:
            links[name] = links.get(name, 0.0) + value

    def cat(name):
        return tuple(x for p in parts for x in getattr(p, name))
    t_end = max([p.t_end for p in parts], default=t_end)
    return EpochOut(t_end=t_end, finished=cat("finished"), errored=cat("errored"), orphans=cat("orphans"),
                    tokens=cat("tokens"), instances=tuple(sorted(cat("instances"), key=lambda f: f.instance)),
                    cards=tuple(sorted(cat("cards"), key=lambda f: f.card)), link_bytes=tuple(sorted(links.items())),
                    failures=cat("failures"), steps=cat("steps"), recoveries=cat("recoveries"),
                    quiet_until=_quiet_until([p.quiet_until for p in parts], quiet))


def _quiet_until(bounds: list[float], quiet: str) -> float:
    if not bounds or any(math.isnan(b) for b in bounds):
        return math.nan
    return max(bounds) if quiet == "empty" else min(bounds)
