"""Prometheus metrics of a served rack: vLLM's names per instance, the RBLN exporter's per card.

Instance gauges and cumulative counters are read from the last epoch's frames at
scrape time (a collector); request histograms are observed as requests end, in
virtual seconds (what the emulated hardware took). Labels: ``model_name`` and
``engine`` (the instance) as vLLM gives them; the RBLN exporter's ``name``
(``rbln<N>``), ``card``, ``hostname`` and ``uuid`` per card.
"""
from __future__ import annotations

import uuid

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# vLLM's buckets (vllm/v1/metrics/loggers.py), so dashboards made for vLLM read these too
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                   480.0, 960.0, 1920.0, 7680.0)
GIB = 1024 ** 3


class RackMetrics:
    def __init__(self, gateway, model_name: str, device_name: str, cards_per_server: int):
        self.gateway, self.model, self.device, self.per_server = gateway, model_name, device_name, cards_per_server
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefill tokens of finished requests.", labels,
                                     registry=self.registry)
        self.success = Counter("vllm:request_success", "Requests that finished.", labels + ["finished_reason"],
                               registry=self.registry)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token (virtual s).", labels,
                              buckets=TTFT_BUCKETS, registry=self.registry)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Time between tokens (virtual s).", labels,
                             buckets=ITL_BUCKETS, registry=self.registry)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Arrival to last token (virtual s).", labels,
                             buckets=REQUEST_BUCKETS, registry=self.registry)
        self.queue = Histogram("vllm:request_queue_time_seconds", "Arrival to first scheduled (virtual s).", labels,
                               buckets=REQUEST_BUCKETS, registry=self.registry)
        self.registry.register(self)

    def request_done(self, record, finish_reason: str) -> None:
        """A request finished (called by the gateway, which knows the reason the client was given)."""
        engine = str(record.instance)
        self.prompt_tokens.labels(self.model, engine).inc(record.prompt_len)
        self.success.labels(self.model, engine, finish_reason).inc()
        times = record.token_times
        if times:
            self.ttft.labels(self.model, engine).observe(times[0] - record.arrival)
            self.e2e.labels(self.model, engine).observe(times[-1] - record.arrival)
            itl = self.itl.labels(self.model, engine)
            for a, b in zip(times, times[1:]):
                itl.observe(b - a)
        if record.scheduled is not None:
            self.queue.labels(self.model, engine).observe(record.scheduled - record.arrival)

    def collect(self):
        """Gauges and cumulative counters from the last epoch (called at each scrape)."""
        g, last = self.gateway, self.gateway.last
        frames = last.instances if last is not None else ()
        per_instance = (("vllm:num_requests_running", "Requests in the running batch.", lambda f: f.running),
                        ("vllm:num_requests_waiting", "Requests waiting to be scheduled.", lambda f: f.waiting),
                        ("vllm:kv_cache_usage_perc", "KV-cache usage (1 = full).", lambda f: f.kv_usage))
        for name, doc, value in per_instance:
            m = GaugeMetricFamily(name, doc, labels=["model_name", "engine"])
            for f in frames:
                m.add_metric([self.model, str(f.instance)], value(f))
            yield m
        for name, doc, value in (("vllm:generation_tokens", "Tokens generated.", lambda f: f.output_tokens),
                                 ("vllm:num_preemptions", "Requests preempted (recomputed).", lambda f: f.preemptions),
                                 ("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                                  lambda f: f.prefix_cache_queries),
                                 ("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                                  lambda f: f.prefix_cache_hits)):
            m = CounterMetricFamily(name, doc, labels=["model_name", "engine"])
            for f in frames:
                m.add_metric([self.model, str(f.instance)], value(f))
            yield m
        yield from self._cards(g.cards)
        for name, doc, value in (("rsd_ray_virtual_time_seconds", "The rack's virtual clock.", g.t),
                                 ("rsd_ray_pace", "Virtual seconds per wall second.", g.pacer.pace),
                                 ("rsd_ray_lag_seconds", "How far the rack runs behind its paced clock (wall s).",
                                  g.lag_s),
                                 ("rsd_ray_pace_resets", "Times the paced clock was re-anchored to a rack that "
                                  "could not keep the pace.", g.pace_resets)):
            m = GaugeMetricFamily(name, doc)
            m.add_metric([], value)
            yield m

    def _cards(self, cards):
        labels = ["name", "card", "hostname", "uuid"]
        rows = (("TEMPERATURE", "Device temperature (C).", lambda f: f.temperature_c),
                ("CARD_POWER", "Card power draw (W).", lambda f: f.power_w),
                ("DRAM_USED", "DRAM in use (GiB).", lambda f: f.memory_used / GIB),
                ("DRAM_TOTAL", "Total DRAM (GiB).", lambda f: f.memory_total / GIB),
                ("UTILIZATION", "Utilisation (%).", lambda f: 100.0 * f.utilisation),
                ("HEALTH", "Health (0 = active, 1 = inactive).", lambda f: float(f.lost)))
        for key, doc, value in rows:
            m = GaugeMetricFamily(f"RBLN_DEVICE_STATUS:{key}", doc, labels=labels)
            for f in cards:
                m.add_metric([f"rbln{f.card}", self.device, f"server{f.card // self.per_server}",
                              str(uuid.uuid5(uuid.NAMESPACE_OID, f"rsd-ray-card-{f.card}"))], value(f))
            yield m

    def describe(self):
        return []      # the families vary with the rack; described at collect time

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
