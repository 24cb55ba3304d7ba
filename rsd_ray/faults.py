"""Faults injected at a virtual time: `--fault` specs, and the controls they become.

::

    card:ID@Ts                 card ID dies at T (on Ray its actor is killed)
    server:S@Ts                server S is lost at T: every card on it dies
    ambient:serverS=+DC@Ts     server S's inlet air warms by D °C at T (negative: cools)

A fault enters the rack at the start of the epoch that contains its time.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rsd_ray.config import ConfigError
from rsd_ray.epoch import Control

SYNTAX = "card:ID@Ts, server:S@Ts or ambient:serverS=+DC@Ts (e.g. card:3@10s, ambient:server1=+15C@30s)"
PATTERNS = {
    "card": re.compile(r"^card:(?P<target>\d+)@(?P<at>[0-9.eE+-]+)s?$"),
    "server": re.compile(r"^server:(?P<target>\d+)@(?P<at>[0-9.eE+-]+)s?$"),
    "ambient": re.compile(r"^ambient:server(?P<target>\d+)=(?P<value>[+-]?[0-9.eE]+)C@(?P<at>[0-9.eE+-]+)s?$"),
}
CONTROL = {"card": "kill_card", "server": "kill_server", "ambient": "ambient"}


@dataclass(frozen=True)
class Fault:
    kind: str            # card | server | ambient
    target: int          # card id or server
    at_s: float
    value: float = 0.0   # ambient: °C added to the inlet air

    def control(self) -> Control:
        return Control(CONTROL[self.kind], self.target, self.value)


def parse(spec: str, rack) -> Fault:
    """One ``--fault`` spec, checked against the rack (``RackSpec``)."""
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
    target = int(match["target"])
    limit = rack.servers * rack.cards_per_server if kind == "card" else rack.servers
    if target >= limit:
        raise ConfigError("command line", "--fault", spec, f"this rack has {limit} {'cards' if kind == 'card' else 'servers'}"
                          f" (0..{limit - 1})")
    return Fault(kind, target, at, value)
