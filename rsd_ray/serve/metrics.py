"""Prometheus metrics of a served rack: vLLM's set per instance, the RBLN exporter's per card, the emulator's own.

**vLLM's set** (``vllm/v1/metrics/loggers.py``, its V1 engine): the same names, types, labels
(``model_name``, ``engine`` = the instance) and buckets, every series created at start-up for every
instance (a dashboard sees zeros, not gaps), no ``*_created`` series (vLLM turns them off), and none
that vLLM does not export. Request histograms are observed as requests end, in **virtual seconds**
(what the emulated hardware took); gauges and the engine's cumulative counters are read from the
last epoch's frames at scrape time. ``request_success`` counts every end: ``stop``, ``length``,
``abort`` (the client went away) and ``error`` (the rack lost the request).

**RBLN's** ``RBLN_DEVICE_STATUS:*`` per card (``name`` = ``rbln<N>``, ``card``, ``hostname``,
``uuid``) are now-values: the card's state over the last telemetry interval.

**By service class** (``--scheduling-policy priority``: each request's class is its priority):
``rsd_ray_*_by_class_seconds`` histograms of every latency vLLM's set has per engine, labelled
``service_class`` instead (a class's series appears with its first request).

**The emulator's** ``rsd_ray_*``: the virtual clock, the pace, how far clients are behind it
(``rsd_ray_lag_seconds`` = the rack's lag + the server's: its delivery delay or event-loop lag) and each
of those.
"""
from __future__ import annotations

import uuid

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

disable_created_metrics()            # as vLLM: no *_created series

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                   480.0, 960.0, 1920.0, 7680.0)
ITERATION_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
N_BUCKETS = (1, 2, 5, 10, 20)
DELIVERY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
FINISH_REASONS = ("stop", "length", "abort", "error")
GIB = 1024 ** 3


def buckets_1_2_5(top: int) -> tuple[int, ...]:
    """1, 2, 5, 10, 20, 50 … up to ``top``: vLLM's token-count buckets for a model of that context."""
    out, scale = [], 1
    while True:
        for m in (1, 2, 5):
            if m * scale > top:
                return tuple(out)
            out.append(m * scale)
        scale *= 10


class RackMetrics:
    def __init__(self, gateway, model_name: str, device_name: str, cards_per_server: int, instances: int,
                 max_model_len: int, cache_info: dict[str, str]):
        """``cache_info``: vLLM's ``cache_config_info`` labels (block size, blocks per instance, dtype …)."""
        self.gateway, self.model, self.device, self.per_server = gateway, model_name, device_name, cards_per_server
        self.engines = [str(i) for i in range(instances)]
        self.registry = r = CollectorRegistry()
        labels = ["model_name", "engine"]
        lengths = buckets_1_2_5(max_model_len)

        def histogram(name, doc, buckets):
            return Histogram(name, doc, labels, buckets=buckets, registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r)
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.",
                               labels + ["finished_reason"], registry=r)
        self.request_prompt = histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", lengths)
        self.request_generation = histogram("vllm:request_generation_tokens",
                                            "Number of generation tokens processed.", lengths)
        self.iteration = histogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
                                   ITERATION_BUCKETS)
        self.max_generation = histogram("vllm:request_max_num_generation_tokens",
                                        "Histogram of maximum number of requested generation tokens.", lengths)
        self.params_n = histogram("vllm:request_params_n", "Histogram of the n request parameter.", N_BUCKETS)
        self.params_max_tokens = histogram("vllm:request_params_max_tokens",
                                           "Histogram of the max_tokens request parameter.", lengths)
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              TTFT_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             ITL_BUCKETS)
        self.tpot = histogram("vllm:request_time_per_output_token_seconds",
                              "Histogram of time_per_output_token_seconds per request.", ITL_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             REQUEST_BUCKETS)
        self.queue = histogram("vllm:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.", REQUEST_BUCKETS)
        self.inference = histogram("vllm:request_inference_time_seconds",
                                   "Histogram of time spent in RUNNING phase for request.", REQUEST_BUCKETS)
        self.prefill = histogram("vllm:request_prefill_time_seconds",
                                 "Histogram of time spent in PREFILL phase for request.", REQUEST_BUCKETS)
        self.decode = histogram("vllm:request_decode_time_seconds",
                                "Histogram of time spent in DECODE phase for request.", REQUEST_BUCKETS)
        self.by_class = {key: Histogram(f"rsd_ray_{key}_by_class_seconds", f"{what}, by service class.",
                                        ["model_name", "service_class"], buckets=buckets, registry=r)
                         for key, what, buckets in (
                             ("time_to_first_token", "Time to first token", TTFT_BUCKETS),
                             ("inter_token_latency", "Inter-token latency", ITL_BUCKETS),
                             ("time_per_output_token", "Time per output token per request", ITL_BUCKETS),
                             ("e2e_request_latency", "End-to-end request latency", REQUEST_BUCKETS),
                             ("request_queue_time", "Time spent waiting", REQUEST_BUCKETS))}
        info = Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
                     sorted(cache_info) + ["engine"], registry=r)
        self.kv_transfer = histogram("rsd_ray_kv_transfer_seconds", "Histogram of the time a disaggregated "
                                     "request's KV cache took from its prefill's end to its decode instance's "
                                     "cards (engine: the decode instance).", ITL_BUCKETS)
        self.kv_bytes = Counter("rsd_ray_kv_transfer_bytes", "KV-cache bytes moved to this decode instance from "
                                "prefill instances.", ["model_name", "engine"], registry=r)
        self.delivery = Histogram("rsd_ray_delivery_delay_seconds", "Wall seconds from a token's due time to its "
                                  "write to the client (token: first or later).", ["token"],
                                  buckets=DELIVERY_BUCKETS, registry=r)
        for engine in self.engines:                   # every series exists from the start, as vLLM's do
            for metric in (self.prompt_tokens, self.request_prompt, self.request_generation, self.iteration,
                           self.max_generation, self.params_n, self.params_max_tokens, self.ttft, self.itl,
                           self.tpot, self.e2e, self.queue, self.inference, self.prefill, self.decode):
                metric.labels(self.model, engine)
            for reason in FINISH_REASONS:
                self.success.labels(self.model, engine, reason)
            info.labels(**cache_info, engine=engine).set(1)
        self.loop_lag = Histogram("rsd_ray_event_loop_lag_probe_seconds", "How late the server's event loop wakes a "
                                  "sleeper, probed every 10 ms: a new request waits about this long to be read.",
                                  buckets=DELIVERY_BUCKETS, registry=r)
        for token in ("first", "later"):
            self.delivery.labels(token)
        r.register(self)
        gateway.on_end, gateway.on_error = self.request_done, self.request_errored
        gateway.on_steps, gateway.on_delivered = self.steps, self.delivered
        gateway.on_loop_lag = self.loop_lag.observe

    def request_done(self, record, ticket, finish_reason: str) -> None:
        """A request ended: finished (with the reason the client was given) or aborted (its client went away)."""
        engine = str(record.instance)

        def at(metric):
            return metric.labels(self.model, engine)
        at(self.prompt_tokens).inc(record.prompt_len)
        self.success.labels(self.model, engine, finish_reason).inc()
        at(self.request_prompt).observe(record.prompt_len)
        at(self.request_generation).observe(record.output_len)
        at(self.params_max_tokens).observe(ticket.max_tokens)
        if ticket.head:                                   # once per client request, not per sequence
            at(self.params_n).observe(ticket.n)
            at(self.max_generation).observe(record.output_len)
        times = record.token_times
        if times:
            at(self.ttft).observe(times[0] - record.arrival)
            at(self.e2e).observe(times[-1] - record.arrival)
            at(self.decode).observe(times[-1] - times[0])
            itl = at(self.itl)
            for a, b in zip(times, times[1:]):
                itl.observe(b - a)
            if len(times) > 1:
                at(self.tpot).observe((times[-1] - times[0]) / (len(times) - 1))
            if record.scheduled is not None:
                at(self.prefill).observe(times[0] - record.scheduled)
                at(self.inference).observe(times[-1] - record.scheduled)
        if record.scheduled is not None:
            at(self.queue).observe(record.scheduled - record.arrival)
        if record.service_class:
            self._by_class(record)
        if record.handoff is not None:                    # disaggregated: its KV cache's move
            at(self.kv_transfer).observe(record.handoff.ready - record.handoff.prefilled)
            at(self.kv_bytes).inc(record.handoff.kv_bytes)

    def _by_class(self, record) -> None:
        h = {key: m.labels(self.model, record.service_class) for key, m in self.by_class.items()}
        times = record.token_times
        if times:
            h["time_to_first_token"].observe(times[0] - record.arrival)
            h["e2e_request_latency"].observe(times[-1] - record.arrival)
            for a, b in zip(times, times[1:]):
                h["inter_token_latency"].observe(b - a)
            if len(times) > 1:
                h["time_per_output_token"].observe((times[-1] - times[0]) / (len(times) - 1))
        if record.scheduled is not None:
            h["request_queue_time"].observe(record.scheduled - record.arrival)

    def request_errored(self, ticket) -> None:
        """The rack lost the request (no healthy instance could finish it): its instance is unknown here."""
        engine = str(max(0, ticket.instance))
        self.success.labels(self.model, engine, "error").inc()

    def steps(self, steps) -> None:
        """Every engine step of an epoch: (instance, start, end, shape); shape[1] is its tokens."""
        for instance, _, _, shape in steps:
            self.iteration.labels(self.model, str(instance)).observe(shape[1])

    def delivered(self, delay_s: float, first: bool) -> None:
        self.delivery.labels("first" if first else "later").observe(delay_s)

    def collect(self):
        """Gauges and cumulative counters from the last epoch, zeros before it (called at each scrape)."""
        g, last = self.gateway, self.gateway.last
        frames = {str(f.instance): f for f in (last.instances if last is not None else ())}

        def family(kind, name, doc, value):
            m = kind(name, doc, labels=["model_name", "engine"])
            for engine in self.engines:
                f = frames.get(engine)
                m.add_metric([self.model, engine], value(f) if f is not None else 0.0)
            return m
        yield family(GaugeMetricFamily, "vllm:num_requests_running", "Number of requests in model execution batches.",
                     lambda f: f.running)
        yield family(GaugeMetricFamily, "vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                     lambda f: f.waiting)
        yield family(GaugeMetricFamily, "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                     lambda f: f.kv_usage)
        yield family(CounterMetricFamily, "vllm:generation_tokens", "Number of generation tokens processed.",
                     lambda f: f.output_tokens)
        yield family(CounterMetricFamily, "vllm:num_preemptions", "Cumulative number of preemption from the engine.",
                     lambda f: f.preemptions)
        yield family(CounterMetricFamily, "vllm:prefix_cache_queries",
                     "Prefix cache queries, in terms of number of queried tokens.", lambda f: f.prefix_cache_queries)
        yield family(CounterMetricFamily, "vllm:prefix_cache_hits",
                     "Prefix cache hits, in terms of number of cached tokens.", lambda f: f.prefix_cache_hits)
        yield family(CounterMetricFamily, "rsd_ray_kv_offload_hits",
                     "Prompt tokens whose KV cache was brought back from host memory.", lambda f: f.kv_offload_hits)
        yield family(CounterMetricFamily, "rsd_ray_kv_offload_stored",
                     "Prefix blocks evicted from the cards into host memory.", lambda f: f.kv_offload_stored)
        yield from self._cards(g.cards)
        for name, doc, value in (("rsd_ray_virtual_time_seconds", "The rack's virtual clock.", g.t),
                                 ("rsd_ray_pace", "Virtual seconds per wall second.", g.pacer.pace),
                                 ("rsd_ray_lag_seconds", "How far clients are behind the paced clock (wall s): the "
                                  "rack's lag plus the delivery delay.", g.behind_s),
                                 ("rsd_ray_rack_lag_seconds", "How far the rack runs behind its paced clock (wall s).",
                                  g.lag_s),
                                 ("rsd_ray_delivery_lag_seconds", "The worst delay, over the last second, from a "
                                  "token's due time to its write (wall s).", g.delivery.now_s),
                                 ("rsd_ray_event_loop_lag_seconds", "The worst lateness, over the last second, of the "
                                  "server's event loop: how long a new request may wait to be read (wall s).",
                                  g.loop_lag.now_s),
                                 ("rsd_ray_pace_resets", "Times the paced clock was re-anchored to a rack that "
                                  "could not keep the pace.", g.pace_resets)):
            m = GaugeMetricFamily(name, doc)
            m.add_metric([], value)
            yield m

    def _cards(self, cards):
        labels = ["name", "card", "hostname", "uuid"]
        rows = (("TEMPERATURE", "Device temperature (C), now.", lambda f: f.temperature_c),
                ("CARD_POWER", "Card power draw (W) over the last telemetry interval.", lambda f: f.power_w),
                ("DRAM_USED", "DRAM in use (GiB).", lambda f: f.memory_used / GIB),
                ("DRAM_TOTAL", "Total DRAM (GiB).", lambda f: f.memory_total / GIB),
                ("UTILIZATION", "Utilisation (%) over the last telemetry interval.",
                 lambda f: 100.0 * f.utilisation),
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
