"""Faults injected at a virtual time: `--fault` specs, and the controls they become.

::

    card:ID@Ts                 card ID dies at T (on Ray its actor is killed)
    server:S@Ts                server S is lost at T: every card on it dies
    ambient:serverS=+DC@Ts     server S's inlet air warms by D °C at T (negative: cools)
    link:A->B=P%@Ts            the link from A to B keeps P % of its bandwidth from T (both directions are links
                               of their own; names as in the results' ``links``, e.g. card9->sw0.1)

A fault enters the rack at the start of the epoch that contains its time. ``--chaos SEED`` draws faults
of every kind at random times in the window (``chaos``): the same seed and rack give the same faults.
With ``--recover`` a lost card comes back (``rsd_ray.rack.host``); a lost server does not.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from rsd_ray.config import ConfigError
from rsd_ray.rack.epoch import Control, Kind
from rsd_ray.interconnect.topology import Topology

SYNTAX = ("card:ID@Ts, server:S@Ts, ambient:serverS=+DC@Ts or link:A->B=P%@Ts "
          "(e.g. card:3@10s, ambient:server1=+15C@30s, link:card9->sw0.1=25%@5s)")
PATTERNS = {
    "card": re.compile(r"^card:(?P<target>\d+)@(?P<at>[0-9.eE+-]+)s?$"),
    "server": re.compile(r"^server:(?P<target>\d+)@(?P<at>[0-9.eE+-]+)s?$"),
    "ambient": re.compile(r"^ambient:server(?P<target>\d+)=(?P<value>[+-]?[0-9.eE]+)C@(?P<at>[0-9.eE+-]+)s?$"),
    "link": re.compile(r"^link:(?P<name>[\w.]+->[\w.]+)=(?P<value>[0-9.eE+]+)%@(?P<at>[0-9.eE+-]+)s?$"),
}


@dataclass(frozen=True)
class Fault:
    kind: Kind           # CARD, SERVER, AMBIENT or LINK
    target: int          # card id or server
    at_s: float
    value: float = 0.0   # ambient: °C added to the inlet air; link: % of its bandwidth left
    link: str = ""

    def __post_init__(self):
        object.__setattr__(self, "kind", Kind(self.kind))     # "card" and Kind.CARD are one kind

    def control(self) -> Control:
        return Control(kind=self.kind, target=self.target, value=self.value, name=self.link)


class FaultSchedule:
    """Faults to inject, each at the start of the epoch that contains its time, and those injected so far."""

    def __init__(self):
        self.pending: list[Fault] = []
        self.injected: list[Fault] = []

    def add(self, faults) -> None:
        self.pending = sorted(self.pending + list(faults), key=lambda f: f.at_s)

    def due(self, t_end: float) -> list[Control]:
        """The controls of the faults whose time falls before ``t_end``, now injected."""
        controls = []
        while self.pending and self.pending[0].at_s < t_end:
            self.injected.append(self.pending.pop(0))
            controls.append(self.injected[-1].control())
        return controls


CHAOS_MEAN_GAP_S = 20.0
"""Chaos: mean virtual seconds between two random faults (exponential gaps), at least one per run."""
CHAOS_KINDS = {"card": 0.4, "link": 0.3, "ambient": 0.2, "server": 0.1}
"""Chaos: how often each kind is drawn. Links keep 10-50 % of their bandwidth; air warms by 5-25 °C."""


def chaos(seed: int, run) -> list[Fault]:
    """Random faults over the run's window [0, duration_s), drawn from ``seed`` alone."""
    rng = random.Random(seed)
    rack, window = run.rack, run.duration_s
    cards = rack.servers * rack.cards_per_server
    links = sorted(link.name for link in Topology(rack, run.device).links.values() if "card" in link.name)
    faults, t = [], rng.expovariate(1.0 / CHAOS_MEAN_GAP_S) % window
    while True:
        kind = rng.choices(list(CHAOS_KINDS), weights=list(CHAOS_KINDS.values()))[0]
        at = round(t, 3)
        if kind == "card":
            faults.append(Fault(kind, rng.randrange(cards), at))
        elif kind == "server":
            faults.append(Fault(kind, rng.randrange(rack.servers), at))
        elif kind == "ambient":
            faults.append(Fault(kind, rng.randrange(rack.servers), at, float(rng.randint(5, 25))))
        else:
            faults.append(Fault(kind, 0, at, float(rng.randint(10, 50)), rng.choice(links)))
        t += rng.expovariate(1.0 / CHAOS_MEAN_GAP_S)
        if t >= window:
            return faults


def from_args(args, run, horizon_s: float | None = None) -> list[Fault]:
    """The faults of ``--fault`` (each checked) and ``--chaos``, by time. ``horizon_s``: until when requests
    arrive (default the run's ``duration_s``; a server: until it is stopped, ``math.inf``)."""
    faults = [parse(f, run, horizon_s) for f in args.fault]
    if args.chaos is not None:
        if args.chaos < 0:
            raise ConfigError("command line", "--chaos", args.chaos, "the seed is an integer >= 0")
        faults += chaos(args.chaos, run)
    return sorted(faults, key=lambda f: f.at_s)


def parse(spec: str, run, horizon_s: float | None = None) -> Fault:
    """One ``--fault`` spec, checked against the run's rack (``RunSpec``) and ``horizon_s`` (``from_args``)."""
    rack = run.rack
    kind = spec.split(":", 1)[0]
    match = PATTERNS[kind].match(spec.strip()) if kind in PATTERNS else None
    if match is None:
        raise ConfigError("command line", "--fault", spec, f"write {SYNTAX}")
    try:
        at, value = float(match["at"]), float(match.groupdict().get("value") or 0.0)
    except ValueError:
        raise ConfigError("command line", "--fault", spec, f"the time and value are numbers; write {SYNTAX}") from None
    if not (math.isfinite(at) and math.isfinite(value)) or at < 0:
        raise ConfigError("command line", "--fault", spec, "the time must be finite and >= 0 s, the value finite")
    horizon_s = run.duration_s if horizon_s is None else horizon_s
    if at >= horizon_s:               # after the arrivals, the run may already have drained and ended
        raise ConfigError("command line", "--fault", spec, f"the run's requests arrive for {horizon_s:g} s; a "
                          "fault after that may never happen: give an earlier time or a longer --duration")
    if kind == "link":
        links = {link.name for link in Topology(rack, run.device).links.values()}
        if match["name"] not in links:
            raise ConfigError("command line", "--fault", spec, f"no link {match['name']} in this rack; its links are "
                              "named like card9->sw0.1, sw0.1->host0, host0->nic0 (see the results' links)")
        if not 0 < value <= 100:
            raise ConfigError("command line", "--fault", spec, "a link keeps between 0 (exclusive) and 100 % of its "
                              "bandwidth")
        return Fault(kind, 0, at, value, match["name"])
    target = int(match["target"])
    limit = rack.servers * rack.cards_per_server if kind == "card" else rack.servers
    if target >= limit:
        raise ConfigError("command line", "--fault", spec, f"this rack has {limit} {'cards' if kind == 'card' else 'servers'}"
                          f" (0..{limit - 1})")
    return Fault(kind, target, at, value)
