"""The request ledger: every request the rack was offered, from its placement to its end.

::

    offered ─┬─ refused                      (never accepted; a backing-off client's retries count once)
             └─ accepted ─┬─ completed
                          ├─ errored         (no healthy instance could take it, or its client went away)
                          └─ unfinished      (the run ended first)
    retried: accepted requests moved off a failed instance (they stay accepted)

The controller places requests and hands every epoch's output here; the ledger keeps what is in flight
(as last placed, with the tokens already streamed, so a request of a lost host is sent again with them),
what waits to be placed again, and the records of those that ended. ``balanced`` checks the arithmetic.
"""
from __future__ import annotations

import dataclasses

from rsd_ray.engine.request import RequestRecord, Submit
from rsd_ray.rack.epoch import EpochOut, Kind


class RequestLedger:
    def __init__(self, source):
        self.source = source
        self.in_flight: dict[int, Submit] = {}           # accepted, not yet ended: rid → as last placed
        self.retry: list[Submit] = []                    # moved off a failed instance, to place next epoch
        self.errored: list[tuple[int, str]] = []         # ended with an error, not yet told to the sinks
        self.records: list[RequestRecord] = []
        self.refused = self.refusals = 0
        self.sent_at: dict[int, float] = {}              # rid → when its client sent it (front end on)

    def new_epoch(self) -> list[Submit]:
        """The requests to place again this epoch (the list empties)."""
        retry, self.retry = self.retry, []
        return retry

    def take_errored(self) -> tuple[tuple[int, str], ...]:
        """(rid, reason) of the requests that ended with an error since last asked, for the sinks."""
        errored, self.errored = tuple(self.errored), []
        return errored

    def placed(self, sub: Submit) -> None:
        self.in_flight[sub.rid] = sub

    def refuse(self, subs: list[Submit], t: float) -> None:
        self.refusals += len(subs)
        self.refused += self.source.refused(subs, t)

    def error(self, sub: Submit, reason: str) -> None:
        self.in_flight.pop(sub.rid, None)
        self.errored.append((sub.rid, reason))
        self.records.append(sub.record(reason))
        self.source.done(self.records[-1:])

    def abort_waiting(self, rid: int, reason: str) -> bool:
        """End a request waiting to be placed again (its client went away); False if none waits."""
        waiting = [s for s in self.retry if s.rid == rid]
        if waiting:
            self.retry.remove(waiting[0])
            self.error(waiting[0], reason)
        return bool(waiting)

    def book(self, out: EpochOut) -> None:
        """Streamed tokens, finished requests, and the requests of failed instances and lost hosts."""
        for rid, times in out.tokens:                     # a lost host's requests keep what was streamed
            sub = self.in_flight[rid]
            self.in_flight[rid] = dataclasses.replace(sub, token_times=sub.token_times + times)
        for r in out.finished:
            self.in_flight.pop(r.rid, None)
        self.records += out.finished
        self.source.done(out.finished)
        self.retry += [dataclasses.replace(o, session=self.in_flight[o.rid].session) if o.rid in self.in_flight else o
                       for o in out.orphans]         # engines do not keep the session: the router needs it
        for f in out.failures:
            if f.kind == Kind.HOST:                # its requests' state died with it: start again
                lost = set(f.instances)
                self.retry += [dataclasses.replace(s, retries=s.retries + 1, kv_tokens=0)      # its KV died too
                               for s in self.in_flight.values()
                               if s.instance in lost]

    @property
    def idle(self) -> bool:
        """Nothing in flight, nothing to place again, no client waiting to retry."""
        return not self.in_flight and not self.retry and not self.source.waiting_to_retry()

    def final(self, unfinished: list[RequestRecord]) -> tuple[RequestRecord, ...]:
        """One record per accepted request, by id: those that ended, the engines' ``unfinished`` ones still in
        flight, and those on a host that is gone or waiting to be placed again. Latencies count from the
        client's send when a front end delayed the arrival."""
        records = self.records + [r for r in unfinished if r.rid in self.in_flight]
        reported = {r.rid for r in records}
        for sub in list(self.in_flight.values()) + self.retry:
            if sub.rid not in reported:
                reported.add(sub.rid)
                records.append(sub.record())
        if self.sent_at:
            records = [dataclasses.replace(r, arrival=self.sent_at.get(r.rid, r.arrival)) for r in records]
        return tuple(sorted(records, key=lambda r: r.rid))

    @property
    def offered(self) -> int:
        return self.source.next_id

    @property
    def never_accepted(self) -> int:
        """Refused requests, and closed-loop clients still backing off (they were refused too)."""
        return self.refused + self.source.waiting_to_retry()


def balanced(offered: int, refused: int, records) -> bool:
    """The ledger's arithmetic: offered = accepted + refused, and every accepted request is in exactly one of
    completed, errored, unfinished (one record each)."""
    rids = [r.rid for r in records]
    completed = sum(1 for r in records if r.finish is not None)
    errored = sum(1 for r in records if r.error)
    unfinished = len(records) - completed - errored
    return len(set(rids)) == len(rids) and unfinished >= 0 and offered == len(records) + refused
