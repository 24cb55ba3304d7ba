"""What a dashboard shows, kept from the epochs as they pass: one plain frame at a time.

``Telemetry`` is a sink of the controller. Its ``frame()`` is a dict of numbers
and strings (msgpack-able, so ``rsd-ray serve`` streams it over gRPC and
``rsd-ray top`` renders it in another process): the rack's header, each card's
recent utilisation, power, temperature and memory, each instance's load and
tokens/s, the busiest links, recent TTFT/TPOT percentiles, and alerts. Rates are
differences between the last two samples at least ``RATE_WINDOW_S`` apart, so
they show what is happening now, not a mean since the start.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from rsd_ray.hardware.card import windowed
from rsd_ray.rack.epoch import Needs

RATE_WINDOW_S = 1.0          # tokens/s, utilisation and link use are measured over at least this (virtual s)
LATENCY_WINDOW_S = 10.0      # TTFT/TPOT percentiles over the requests that finished this recently
TOP_LINKS = 8
LAG_ALERT_S = 1.0


def attach(controller) -> "Telemetry":
    """A Telemetry sink for this controller's runs (it asks for card frames every ``RATE_WINDOW_S``)."""
    links = {link.name: link.bandwidth for link in controller.topology.links.values()}
    return Telemetry(header(controller.spec, len(controller.instance_server)), links)


def controller_frame(controller, telemetry: "Telemetry", **extra) -> dict:
    """The frame with what the controller knows besides: refusals and requests routed to each instance."""
    return telemetry.frame(refused=controller.ledger.refused, routed=controller.router.sent.tolist(), **extra)


def dashboard_sink(controller, show, refresh_s: float):
    """A controller sink that keeps telemetry and hands ``show`` a frame at most every ``refresh_s`` wall s."""
    telemetry, last = attach(controller), [0.0]

    def sink(out, in_flight: int) -> None:
        telemetry(out, in_flight)
        now = time.monotonic()
        if now - last[0] >= refresh_s:
            last[0] = now
            show(controller_frame(controller, telemetry))
    sink.needs = telemetry.needs
    return sink


def header(spec, instances: int) -> dict:
    return {"rack": spec.rack.name, "model": spec.model.name, "tp": spec.tp, "router": spec.router.policy,
            "device": spec.device.name, "servers": spec.rack.servers, "cards_per_server": spec.rack.cards_per_server,
            "instances": instances}


class Telemetry:
    needs = Needs(telemetry_every_s=RATE_WINDOW_S)
    def __init__(self, head: dict, link_bandwidth: dict[str, float]):
        self.head, self.bandwidth = head, link_bandwidth
        self.lock = threading.Lock()
        self.t = 0.0
        self.instances: dict[int, object] = {}
        self.cards: dict[int, dict] = {}
        self.links: list[tuple[str, float]] = []
        self.samples: deque = deque()              # (t, tokens per instance) for tokens/s
        self.card_sample = None                    # (t, frame per card, link bytes) at the last card frames
        self.rates: dict[int, float] = {}
        self.recent: deque = deque()               # (finish, ttft, tpot) of requests that finished recently
        self.completed = self.errored = 0
        self.failed_cards: set[int] = set()

    def __call__(self, out, in_flight: int = 0) -> None:
        with self.lock:
            self.t = out.t_end
            self.instances.update((f.instance, f) for f in out.instances)
            self._rates(out.t_end)
            for r in out.finished:
                if r.error is not None:
                    self.errored += 1
                    continue
                self.completed += 1
                times = r.token_times
                tpot = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
                self.recent.append((times[-1] if times else out.t_end, times[0] - r.arrival if times else None, tpot))
            self.errored += len(out.errored)
            while self.recent and self.recent[0][0] < out.t_end - LATENCY_WINDOW_S:
                self.recent.popleft()
            for f in out.failures:
                self.failed_cards.update(f.cards)
            if out.cards:
                self._cards(out.t_end, out.cards, dict(out.link_bytes))

    def _rates(self, t: float) -> None:
        tokens = {i: f.output_tokens for i, f in self.instances.items()}
        self.samples.append((t, tokens))
        while len(self.samples) > 2 and self.samples[1][0] <= t - RATE_WINDOW_S:
            self.samples.popleft()
        t0, before = self.samples[0]
        if t > t0:
            self.rates = {i: (n - before.get(i, 0)) / (t - t0) for i, n in tokens.items()}

    def _cards(self, t: float, frames, link_bytes: dict[str, float]) -> None:
        last = self.card_sample
        span = t - last[0] if last else 0.0
        for f in frames:
            w = windowed(last[1].get(f.card) if last else None, f)
            self.cards[f.card] = {"card": f.card, "util": w.utilisation, "power_w": w.power_w,
                                  "temperature_c": f.temperature_c, "memory_used": f.memory_used,
                                  "memory_total": f.memory_total, "p_state": f.p_state,
                                  "throttled": f.p_state == "P10", "lost": f.lost or f.card in self.failed_cards}
        if last and span > 0:
            use = {name: (b - last[2].get(name, 0.0)) / self.bandwidth.get(name, 1.0) / span
                   for name, b in link_bytes.items()}
            self.links = sorted(use.items(), key=lambda kv: -kv[1])[:TOP_LINKS]
        if not last or span >= RATE_WINDOW_S:
            self.card_sample = (t, {f.card: f for f in frames}, link_bytes)

    def frame(self, **extra) -> dict:
        """The rack now; ``extra``: what the caller knows besides (pace, lag_s, refused, routed per instance)."""
        with self.lock:
            routed = extra.pop("routed", None)
            instances = [{"instance": i, "running": f.running, "waiting": f.waiting, "kv_usage": f.kv_usage,
                          "tokens_per_s": self.rates.get(i, 0.0), "failed": f.failed,
                          "routed": int(routed[i]) if routed is not None and i < len(routed) else None}
                         for i, f in sorted(self.instances.items())]
            ttft = [x[1] for x in self.recent if x[1] is not None]
            tpot = [x[2] for x in self.recent if x[2] is not None]
            frame = {"header": self.head, "t": self.t, "pace": None, "lag_s": 0.0, "refused": 0,
                     "completed": self.completed, "errored": self.errored,
                     "throughput": sum(self.rates.values()), "instances": instances,
                     "cards": [self.cards[c] for c in sorted(self.cards)],
                     "links": [{"link": name, "util": u} for name, u in self.links],
                     "ttft_p50": _pct(ttft, 50), "ttft_p99": _pct(ttft, 99),
                     "tpot_p50": _pct(tpot, 50), "tpot_p99": _pct(tpot, 99)}
        frame.update(extra)
        frame["alerts"] = alerts(frame)
        return frame


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def alerts(frame: dict) -> list[str]:
    """What a person must not miss: lost cards, failed instances, throttling, lag."""
    out = []
    lost = [c["card"] for c in frame["cards"] if c["lost"]]
    if lost:
        out.append(f"lost card{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost[:8]))}"
                   + (" …" if len(lost) > 8 else ""))
    failed = [i["instance"] for i in frame["instances"] if i["failed"]]
    if failed:
        out.append(f"failed instance{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed[:8]))}")
    hot = [c["card"] for c in frame["cards"] if c["throttled"]]
    if hot:
        out.append(f"thermal throttling on {len(hot)} card{'s' if len(hot) > 1 else ''}")
    if (frame.get("lag_s") or 0.0) > LAG_ALERT_S:
        out.append(f"running {frame['lag_s']:.1f} s behind the paced clock")
    return out
