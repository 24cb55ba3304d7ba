"""The gateway: live clients as the rack's request source, and the rack's token events back to them.

::

    HTTP / gRPC handler ──submit()──▶ incoming ──arrivals(t0, t1)──▶ Controller (its source)
    Controller ──EpochOut──▶ gateway(out) ──tokens, ends──▶ each Ticket ──paced──▶ its client

The controller's thread calls ``arrivals``/``refused`` and the gateway as a sink; the
handlers' event loop calls ``submit``/``abort``. Virtual time is gated to the
wall clock by ``Pacer``: the rack computes epoch [t0, t1) once the wall clock
reaches t0, and a token reaches its client at its own virtual time mapped to
wall time. A request keeps the virtual time it reached the gateway, so its wait
for the next epoch is part of the TTFT the emulation reports, as it is part of
what the client measures. When the
rack falls behind, ``lag_s`` says by how much, and nothing is hidden. A rack that cannot keep its pace
at all (more than ``MAX_LAG_S`` behind: an emulation slower than the pace asked) is re-anchored to where
it is, so requests are served as fast as the emulation runs instead of waiting for a clock it never
reaches; each time is counted (``pace_resets``, in the status and the metrics).
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from rsd_ray.hardware.card import windowed
from rsd_ray.rack.epoch import Control, EpochOut, Kind, Needs, Submit
from rsd_ray.serve.text import stop_index
from rsd_ray.workload.classes import by_priority

MAX_LAG_S = 1.0      # wall seconds the rack may run behind its paced clock before the clock is re-anchored
QUIET_WAIT_MAX_S = 0.2   # an idle rack waits at most this long (wall) for a client before it steps again: how
                         # soon it sees a control, a stop or a shutdown while nothing else happens
DELIVERY_WINDOW_S = 1.0   # the delivery delay reported now is the worst of the last window of this many wall s


class RecentWorst:
    """The worst of a delay observed over the last one to two windows of ``DELIVERY_WINDOW_S`` wall seconds (0
    when nothing was observed lately): what a status line or a gauge shows now."""

    def __init__(self):
        self.start, self.worst, self.last_worst = time.monotonic(), 0.0, 0.0

    def observe(self, delay_s: float) -> None:
        now = time.monotonic()
        if now - self.start > DELIVERY_WINDOW_S:
            self.last_worst = self.worst if now - self.start < 2 * DELIVERY_WINDOW_S else 0.0
            self.start, self.worst = now, 0.0
        self.worst = max(self.worst, delay_s)

    @property
    def now_s(self) -> float:
        age = time.monotonic() - self.start
        if age < DELIVERY_WINDOW_S:                  # this window so far, and the one before
            return max(self.worst, self.last_worst)
        return self.worst if age < 2 * DELIVERY_WINDOW_S else 0.0


class Pacer:
    """Virtual seconds = (wall seconds since start) × pace."""

    def __init__(self, pace: float):
        self.pace = pace
        self.wall0 = time.monotonic()

    def restart(self) -> None:
        self.wall0 = time.monotonic()

    def virtual(self, wall: float | None = None) -> float:
        return ((time.monotonic() if wall is None else wall) - self.wall0) * self.pace

    def wall(self, t: float) -> float:
        return self.wall0 + t / self.pace

    def set_pace(self, pace: float, at: float | None = None) -> None:
        """Change the pace from now on: virtual time ``at`` (default: the paced clock's now) is now."""
        now = time.monotonic()
        t = self.virtual(now) if at is None else at
        self.pace = pace
        self.wall0 = now - t / pace


class Refused(Exception):
    """The gateway did not take a request: ``status`` is its HTTP status (429 full, 503 unavailable)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(eq=False)
class Ticket:
    """One request's life at the gateway: what the rack is asked for, and the events coming back."""
    rid: int
    prompt_len: int
    output_len: int                       # tokens the rack generates (the emulated EOS or max_tokens)
    instance: int                         # -1: the router chooses
    max_tokens: int                       # what the client allowed (finish_reason "length" when reached)
    stop_at: int | None                   # the index of the output token that is a stop word, if one is
    arrival_wall: float
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    ended: bool = False
    session: str = ""                     # the client's ``user``: session-affinity routing
    hash_ids: tuple[int, ...] = ()        # the prompt's chained block hashes: prefix caching and routing
    send_stop: bool = False               # the stop word is sent to the client too
    n: int = 1                            # the client's request asked for this many sequences (vLLM's n)
    head: bool = True                     # the first sequence of the client's request
    priority: int | None = None           # its priority under the priority policy (None: no class)

    def finish_reason(self, generated: int) -> str:
        return "stop" if self.stop_at is not None or generated < self.max_tokens else "length"


def _deliver(batch: list) -> None:
    """On the servers' event loop: each (ticket, event) of an epoch to its client's coroutine."""
    for ticket, event in batch:
        ticket.events.put_nowait(event)


class Outbox:
    """The controller thread's events for the clients, handed to their event loop once per epoch (one wake-up
    of the loop, not one per token: at 200 streams that was thousands of cross-thread calls a second)."""

    def __init__(self):
        self.batches: dict = {}

    def post(self, ticket: Ticket, event: tuple) -> None:
        self.batches.setdefault(ticket.loop, []).append((ticket, event))

    def send(self) -> None:
        batches, self.batches = self.batches, {}
        for loop, batch in batches.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:                 # that loop is closed: its clients are gone
                pass


class Gateway:
    def __init__(self, pace: float, max_queued: int):
        """``max_queued``: requests waiting for the next epoch; beyond it a request is refused (429) at once."""
        self.pacer = Pacer(pace)
        self.max_queued = max_queued
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)   # notified by each submit: wakes an idle rack
        self.outbox = Outbox()
        self.incoming: list[Ticket] = []
        self.live: dict[int, Ticket] = {}
        self.fresh: list[Ticket] = []           # handed to the rack this epoch: accepted unless refused
        self.aborts: list[int] = []
        self.next_id = 0
        self.closed: str | None = None
        self.lag_s = 0.0                        # how far the rack runs behind its paced clock
        self.delivery = RecentWorst()           # a token's due wall time to its write to the client
        self.loop_lag = RecentWorst()           # how late the servers' event loop runs what is due on it
        self.on_delivered = None                # the metrics' histogram: called with (delay_s, first)
        self.on_loop_lag = None                 # the metrics' histogram: called with each probe's lateness
        self.pace_resets = 0                    # times the paced clock was re-anchored to a rack behind it
        self.t = 0.0
        self.controller = None
        self.health: tuple[bool, ...] = ()      # each instance's, as of the last epoch
        self.counts = {"accepted": 0, "refused": 0, "completed": 0, "errored": 0, "aborted": 0}
        self.last: EpochOut | None = None       # the last epoch (its instance frames), for the metrics
        self.cards: tuple = ()                  # the last card frames, over the last interval (every few epochs)
        self.raw_cards: dict = {}               # the same as the cards give them (means since the start)
        self.on_end = None                      # called with (record, ticket, finish_reason) as each request ends
        self.on_error = None                    # called with the ticket of each request the rack lost
        self.on_steps = None                    # called with each epoch's engine steps

    # --- the handlers' side ---------------------------------------------------------------------------
    def submit(self, prompt_len: int, output_len: int, instance: int = -1, max_tokens: int | None = None,
               arrival_wall: float | None = None, stops: tuple[str, ...] = (), pieces: list[str] | None = None,
               session: str = "", hash_ids: tuple[int, ...] = (), send_stop: bool = False, n: int = 1,
               head: bool = True, priority: int | None = None) -> Ticket:
        """A request that reached the server at ``arrival_wall`` (monotonic; default now). With ``stops``, the
        rack is asked for the tokens up to the first stop word (the text is known in advance here: ``pieces``,
        each token's, in functional mode; performance mode's words otherwise); ``send_stop``: the stop word is
        sent to the client (vLLM's include_stop_str_in_output); ``priority``: the request's, under the priority
        policy (its service class is named after it), None otherwise."""
        loop = asyncio.get_running_loop()
        with self.lock:
            if self.closed:
                raise Refused(503, f"the rack is {self.closed}")
            if len(self.incoming) >= self.max_queued:
                self.counts["refused"] += 1
                raise Refused(429, "too many requests waiting for admission; retry later")
            rid = self.next_id
            stop_at = stop_index(rid, output_len, stops, pieces)
            ticket = Ticket(rid, prompt_len, output_len if stop_at is None else stop_at + 1, instance,
                            max_tokens or output_len, stop_at, arrival_wall or time.monotonic(), loop, session=session,
                            hash_ids=hash_ids, send_stop=send_stop, n=n, head=head, priority=priority)
            self.next_id += 1
            self.incoming.append(ticket)
            self.arrived.notify_all()
        return ticket

    def abort(self, ticket: Ticket) -> None:
        """The client went away: free its request wherever it is."""
        with self.lock:
            if ticket.ended:
                return
            ticket.ended = True
            self.counts["aborted"] += 1
            if ticket in self.incoming:
                self.incoming.remove(ticket)
            else:
                self.aborts.append(ticket.rid)

    def delivered(self, delay_s: float, first: bool = False) -> None:
        """A token was written to its client ``delay_s`` wall seconds after its due time."""
        delay_s = max(0.0, delay_s)
        self.delivery.observe(delay_s)
        if self.on_delivered:
            self.on_delivered(delay_s, first)

    def loop_probed(self, late_s: float) -> None:
        """The event loop woke a sleeper ``late_s`` wall seconds late."""
        self.loop_lag.observe(late_s)
        if self.on_loop_lag:
            self.on_loop_lag(late_s)

    @property
    def behind_s(self) -> float:
        """How far behind their paced clock clients are served: the rack's lag, then the server's: a request
        waits up to the event loop's lag before it is even read, and a token is written its delivery delay
        after it is due."""
        return self.lag_s + max(self.delivery.now_s, self.loop_lag.now_s)

    def healthy(self, instance: int | None = None) -> bool:
        """Whether any instance (or this one) can take requests, as of the last epoch."""
        health = self.health
        return any(health) if instance is None else 0 <= instance < len(health) and health[instance]

    def set_pace(self, pace: float) -> None:
        """A new pace, counted from where the rack is (a rack running behind starts again without its lag)."""
        self.pacer.set_pace(pace, min(self.pacer.virtual(), self.t))

    def close(self, why: str) -> None:
        """Take no more requests (503 from now on); those already taken go on."""
        with self.lock:
            self.closed = why

    # --- the controller's side (its request source) ---------------------------------------------------
    def attach(self, controller) -> None:
        self.controller = controller
        self.health = (True,) * len(controller.instance_server)

    def arrivals(self, t0: float, t1: float) -> list[Submit]:
        """Wait until the wall clock reaches ``t0``, then hand over what arrived before ``t1``."""
        delay = self.pacer.wall(t0) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.lag_s = max(0.0, time.monotonic() - self.pacer.wall(t0))
        if self.lag_s > MAX_LAG_S:           # the emulation cannot keep this pace: serve as fast as it runs
            self.pacer.set_pace(self.pacer.pace, at=t0)
            self.pace_resets += 1
        self.t = t0
        with self.lock:
            for rid in self.aborts:
                self.controller.control(Control(Kind.ABORT, rid))
            self.aborts = []
            due, later = [], []
            for k in self.incoming:
                (due if self.pacer.virtual(k.arrival_wall) < t1 else later).append(k)
            self.incoming = later
            for k in due:
                self.live[k.rid] = k
            self.fresh = due
            self.counts["accepted"] += len(due)
        return [Submit(k.rid, self.pacer.virtual(k.arrival_wall), k.prompt_len, k.output_len, k.instance,
                       hash_ids=k.hash_ids, session=k.session, **by_priority(k.priority)) for k in due]

    def quiet_until(self, t0: float, limit: float) -> float:
        """The rack is idle at virtual ``t0``: wait until a client sends a request, the paced clock reaches
        ``limit`` or ``QUIET_WAIT_MAX_S`` passes; returns the virtual time reached (at most ``limit``, never
        past a waiting request's arrival)."""
        with self.lock:
            if not self.incoming and not self.aborts:
                wait = min(QUIET_WAIT_MAX_S, self.pacer.wall(limit) - time.monotonic())
                if wait > 0:
                    self.arrived.wait(wait)
            reached = min(limit, self.pacer.virtual())
            if self.incoming:
                reached = min(reached, min(self.pacer.virtual(k.arrival_wall) for k in self.incoming))
        return max(t0, reached)

    def refused(self, subs: list[Submit], t: float) -> int:
        healthy = self.health
        with self.lock:
            for s in subs:
                ticket = self.live.pop(s.rid)
                ticket.ended = True
                self.counts["refused"] += 1
                self.counts["accepted"] -= 1
                if not any(healthy) or (s.instance >= 0 and not healthy[s.instance]):
                    self.outbox.post(ticket, ("refused", 503, "no healthy instance can take the request"))
                else:
                    self.outbox.post(ticket, ("refused", 429, "the rack's admission queues are full; retry later"))
            self.outbox.send()
        return len(subs)

    def done(self, records: list) -> None:
        """Clients here are not a closed loop: nothing to wake."""

    def waiting_to_retry(self) -> int:
        return 0

    needs = Needs(tokens=True, steps=True)

    def __call__(self, out: EpochOut, in_flight: int) -> None:
        """A sink of the controller: every token and every end goes to its ticket."""
        self.last, self.health = out, out.healthy or self.health
        if out.cards:                           # now-values: each card over the interval since its last frame
            self.cards = tuple(windowed(self.raw_cards.get(f.card), f) for f in out.cards)
            self.raw_cards = {f.card: f for f in out.cards}
        if out.steps and self.on_steps:
            self.on_steps(out.steps)
        with self.lock:
            live = self.live
            for ticket in self.fresh:
                if not ticket.ended:
                    self.outbox.post(ticket, ("accepted",))
            self.fresh = []
            for rid, times in out.tokens:
                ticket = live.get(rid)
                if ticket is not None:
                    self.outbox.post(ticket, ("tokens", times))
            for record in out.finished:
                ticket = live.pop(record.rid, None)
                if ticket is not None:
                    if record.error is None:
                        self.counts["completed"] += 1
                        self.outbox.post(ticket, ("end", record))
                    if self.on_end:                 # an aborted request ends here too, as vLLM counts it
                        self.on_end(record, ticket, ticket.finish_reason(record.output_len) if record.error is None
                                    else "abort")
            for rid, reason in out.errored:
                ticket = live.pop(rid, None)
                if ticket is not None:
                    self.counts["errored"] += 1
                    self.outbox.post(ticket, ("error", 503, reason))
                    if self.on_error:
                        self.on_error(ticket)
            self.outbox.send()

    def fail_all(self, reason: str) -> None:
        """The rack stopped: every request still open ends with an explicit error."""
        with self.lock:
            for ticket in list(self.live.values()) + self.incoming:
                self.outbox.post(ticket, ("error", 503, reason))
            self.outbox.send()
            self.live, self.incoming = {}, []
