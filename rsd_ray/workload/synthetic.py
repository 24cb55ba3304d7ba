"""Synthetic request streams: Poisson or gamma (bursty) arrivals at a rate, a closed loop, or offline.

Offline (``vllm bench throughput``): ``num_prompts`` requests all arrive at t = 0 and are queued whatever
the router's admission bound (an offline engine takes the whole batch); the run lasts until the last one
finishes.

A closed-loop client sends its next request when it learns its last one
finished, which is at the epoch boundary (the controller reports completions
per epoch). A refused closed-loop client waits and sends the same request again,
backing off exponentially (``RETRY_BACKOFF_S`` doubling to ``RETRY_BACKOFF_MAX_S``,
as HTTP clients do on 429); a refused open-loop request is dropped. Either way a
request is counted once. Lengths are fixed, uniform or lognormal; one drawn
longer than the model length allows is shortened to fit, and counted (``clipped``).
"""
from __future__ import annotations

import heapq
import math

import numpy as np

from rsd_ray.config import LengthSpec, WorkloadSpec
from rsd_ray.engine.request import RequestRecord, Submit

RETRY_BACKOFF_S = 0.1        # first wait of a refused closed-loop client (OpenAI's SDK starts near 0.5 s)
RETRY_BACKOFF_MAX_S = 2.0    # the wait stops doubling here


class LengthSampler:
    """Token lengths drawn from a ``LengthSpec``, within its own ``min`` and ``max`` (0: no cap)."""

    def __init__(self, spec: LengthSpec, rng: np.random.Generator):
        self.spec, self.cap, self.rng = spec, spec.max or math.inf, rng

    def __call__(self) -> int:
        s = self.spec
        if s.dist == "fixed":
            n = s.mean
        elif s.dist == "uniform":
            n = int(self.rng.integers(s.min, max(s.min, s.max or 2 * s.mean) + 1))
        else:  # lognormal with the given mean
            n = int(round(self.rng.lognormal(math.log(s.mean) - s.sigma ** 2 / 2, s.sigma)))
        return max(s.min, min(n, self.cap))


class Workload:
    def __init__(self, spec: WorkloadSpec, servers: int, max_model_len: int, seed: int):
        self.spec = spec
        scale = servers if spec.per_server else 1
        self.rate, self.concurrency = spec.rate * scale, spec.concurrency * scale
        self.offline = spec.arrival == "offline"       # every request at t = 0, never refused
        self.unsent = spec.num_prompts * scale if self.offline else 0
        self.rng = rng = np.random.default_rng(seed)
        self.max_model_len = max_model_len
        self.output_len = LengthSampler(spec.output, rng)
        self.input_len = LengthSampler(spec.input, rng)
        self.clipped = 0                 # requests shortened to fit max_model_len (counted in the results)
        self.closed_loop = spec.arrival == "closed"
        self.next_id = 0
        self.idle_clients = self.concurrency if spec.arrival == "closed" else 0
        self.backlog: list[tuple[float, int, list[Submit]]] = []   # (retry at, seq, refused requests)
        self.attempts: dict[int, int] = {}                          # rid → refusals so far (closed loop)
        self._seq = 0                                               # tie-break of the backlog heap
        self.next_open = self._gap() if spec.arrival in ("poisson", "gamma") else 0.0

    def _gap(self) -> float:
        """Seconds to the next open-loop arrival; gamma with shape 1 would equal Poisson in law."""
        if self.spec.arrival == "poisson":
            return float(self.rng.exponential(1.0 / self.rate))
        shape = self.spec.burstiness
        return float(self.rng.gamma(shape, 1.0 / (self.rate * shape)))

    def _new(self, t: float) -> Submit:
        return self._new_many(t, 1)[0]

    def _new_many(self, t: float, k: int) -> list[Submit]:
        """``k`` new requests at ``t``, each drawing its output length, then its prompt's (an offline run, or
        a closed loop's clients, take thousands together: with two fixed lengths nothing is drawn, and
        every request is alike but for its id)."""
        alike = self.output_len.spec.dist == "fixed" and self.input_len.spec.dist == "fixed"
        reqs = []
        for rid in range(self.next_id, self.next_id + k):
            if alike and reqs:                    # nothing to draw: the first one's copy, with its own id
                reqs.append(reqs[0].replaced(rid=rid))
            else:
                drawn_out, drawn_prompt = self.output_len(), self.input_len()
                out = min(drawn_out, self.max_model_len - 1)
                prompt = min(drawn_prompt, self.max_model_len - out)
                clipped = (out, prompt) != (drawn_out, drawn_prompt)
                reqs.append(Submit(rid, t, prompt, out, -1))
            self.clipped += clipped
        self.next_id += k
        return reqs

    def arrivals(self, t0: float, t1: float) -> list[Submit]:
        """Requests arriving in [t0, t1), in arrival order (closed loop: retries first, then new ones)."""
        if self.spec.arrival == "closed":
            reqs = []
            while self.backlog and self.backlog[0][0] < t1:       # a retry arrives now, not at its first try
                reqs += [r.sent_again(max(r.arrival, t0)) for r in heapq.heappop(self.backlog)[2]]
            reqs += self._new_many(t0, self.idle_clients)
            self.idle_clients = 0
            return reqs
        if self.offline:
            reqs, self.unsent = self._new_many(t0, self.unsent), 0
            return reqs
        reqs = []
        while self.next_open < t1:
            reqs.append(self._new(max(self.next_open, t0)))
            self.next_open += self._gap()
        return reqs

    def next_arrival(self, t: float) -> float:
        """The earliest time from ``t`` at which a request may arrive that no answer brings (a closed-loop
        client's next request follows its answer: ``follows_answers``)."""
        if self.spec.arrival == "closed":
            return t if self.idle_clients else self.backlog[0][0] if self.backlog else math.inf
        if self.offline:
            return t if self.unsent else math.inf
        return max(t, self.next_open)

    @property
    def follows_answers(self) -> bool:
        """An answer brings a new request (the closed loop's clients)."""
        return self.closed_loop

    def done(self, records: list[RequestRecord]) -> None:
        """These accepted requests ended (finished or errored): their clients are free."""
        if self.spec.arrival == "closed":
            self.idle_clients += len(records)

    def refused(self, reqs: list[Submit], t: float) -> int:
        """The router refused these at ``t``. Closed-loop clients back off and send them again;
        open-loop ones are dropped. Returns how many were dropped for good."""
        if self.spec.arrival != "closed":
            return len(reqs)
        by_wait: dict[float, list[Submit]] = {}
        for r in reqs:
            n = self.attempts.get(r.rid, 0)
            self.attempts[r.rid] = n + 1
            by_wait.setdefault(min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_S * 2 ** n), []).append(r)
        for wait, group in sorted(by_wait.items()):
            self._seq += 1
            heapq.heappush(self.backlog, (t + wait, self._seq, group))
        return 0

    def waiting_to_retry(self) -> int:
        """Refused closed-loop requests still backing off (never accepted, so far)."""
        return sum(len(group) for _, _, group in self.backlog)


class OpenLoopSource:
    """What a source of given requests shares: its clients never wait on an answer, and a refused request
    is dropped (counted as refused)."""
    offline = False
    follows_answers = False

    def done(self, records: list[RequestRecord]) -> None:
        pass

    def refused(self, reqs: list[Submit], t: float) -> int:
        return len(reqs)

    def waiting_to_retry(self) -> int:
        return 0


class Replay(OpenLoopSource):
    """Given requests (prompt, output lengths), all sent at t = 0 and never refused: a published benchmark
    with `--request-rate inf` replayed request for request (``rsd-ray validate``)."""

    offline = True

    def __init__(self, lengths: list[tuple[int, int]]):
        self.lengths, self.next_id = list(lengths), 0

    def next_arrival(self, t: float) -> float:
        return t if self.lengths else math.inf

    def arrivals(self, t0: float, t1: float) -> list[Submit]:
        subs = [Submit(self.next_id + i, t0, p, o, -1) for i, (p, o) in enumerate(self.lengths)]
        self.next_id, self.lengths = self.next_id + len(subs), []
        return subs
