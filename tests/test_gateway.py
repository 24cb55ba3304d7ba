"""The gateway's own rules, without a server: stamping, handing over by epoch, the bounded queue, aborts."""
from __future__ import annotations

import asyncio
import math
import time

import pytest

from rsd_ray.rack.epoch import EpochOut
from rsd_ray.engine.request import RequestRecord
from rsd_ray.serve.gateway import Gateway, Pacer, Refused


class FakeController:
    """Only what the gateway reads: how many instances, and the controls it is sent."""

    def __init__(self, instances=2):
        self.instance_server = [0] * instances
        self.controls = []

    def control(self, c):
        self.controls.append(c)


def gateway(pace: float = 1e9, max_queued: int = 8) -> tuple[Gateway, FakeController]:
    """A gateway fed by a fake controller; pace 1e9 so that no epoch waits for the wall clock."""
    g, controller = Gateway(pace, max_queued), FakeController()
    g.attach(controller)
    return g, controller


def test_pacer_maps_virtual_to_wall_time_and_keeps_time_continuous_when_the_pace_changes():
    p = Pacer(2.0)
    p.wall0 = 100.0
    assert p.wall(10.0) == 105.0 and p.virtual(105.0) == 10.0
    before = p.virtual()
    p.set_pace(0.5)
    assert p.virtual() == pytest.approx(before, abs=1e-3) and p.pace == 0.5


def test_requests_keep_their_own_virtual_arrival_and_wait_for_their_epoch():
    async def main():
        g, _ = gateway(pace=1.0)
        g.pacer.wall0 = time.monotonic() - 10.0          # virtual time is 10 s now
        now = time.monotonic()
        early = g.submit(100, 5, arrival_wall=now - 0.5)  # reached the server at virtual 9.5
        late = g.submit(100, 5, arrival_wall=now + 1.0)   # at virtual 11: not in the epoch [9.9, 10.0)
        subs = g.arrivals(9.9, 10.0)
        assert [(s.rid, s.arrival) for s in subs] == [(early.rid, pytest.approx(9.5))]
        assert g.lag_s == pytest.approx(0.1, abs=0.05)     # the rack started this epoch 0.1 s late
        assert [s.rid for s in g.arrivals(10.0, 11.5)] == [late.rid]
    asyncio.run(main())


def test_a_rack_that_cannot_keep_its_pace_is_re_anchored_not_left_behind_for_ever():
    """Pace 1000, the rack at virtual 5 s while its clock says 3000 s (3 wall s behind, over MAX_LAG_S):
    the clock is moved to the rack, so a request arriving now is in the next epoch, not 2995 s later."""
    async def main():
        g, _ = gateway(pace=1000.0)
        g.pacer.wall0 = time.monotonic() - 3.0
        g.arrivals(5.0, 5.01)
        assert g.pace_resets == 1 and g.pacer.virtual() == pytest.approx(5.0, abs=1.0)   # 1 virtual s = 1 ms
        now = g.submit(100, 5)
        assert [s.rid for s in g.arrivals(5.01, 6.0)] == [now.rid]
        g.arrivals(6.0, 6.01)
        assert g.pace_resets == 1                       # a rack keeping up is left alone
    asyncio.run(main())


def test_the_queue_before_the_next_epoch_is_bounded_and_a_closed_gateway_refuses():
    async def main():
        g, _ = gateway(pace=1.0, max_queued=2)
        g.submit(1, 1)
        g.submit(1, 1)
        with pytest.raises(Refused) as err:
            g.submit(1, 1)
        assert err.value.status == 429
        g.close("shutting down")
        with pytest.raises(Refused) as err:
            g.submit(1, 1)
        assert err.value.status == 503
    asyncio.run(main())


def test_refusals_say_429_when_full_and_503_when_nothing_is_healthy():
    async def main():
        g, controller = gateway()
        a, b = g.submit(1, 1), g.submit(1, 1, instance=1)
        subs = g.arrivals(0.0, math.inf)
        g.health = (True, False)                         # as the last epoch said: instance 1 failed
        g.refused(subs, 0.0)
        await asyncio.sleep(0)
        assert a.events.get_nowait()[:2] == ("refused", 429)
        assert b.events.get_nowait()[:2] == ("refused", 503)
        assert g.counts["refused"] == 2 and g.counts["accepted"] == 0
    asyncio.run(main())


def test_an_abort_before_the_rack_saw_the_request_drops_it_and_after_becomes_a_control():
    async def main():
        g, controller = gateway()
        queued = g.submit(1, 1)
        g.abort(queued)
        assert g.arrivals(0.0, math.inf) == []                  # never reached the rack
        taken = g.submit(1, 1)
        g.arrivals(0.0, math.inf)
        g.abort(taken)
        g.arrivals(1e-3, math.inf)
        assert [(c.kind, c.target) for c in controller.controls] == [("abort", taken.rid)]
        assert g.counts["aborted"] == 2
    asyncio.run(main())


def test_tokens_and_ends_reach_their_tickets():
    async def main():
        g, _ = gateway()
        t = g.submit(10, 3, max_tokens=3)
        g.arrivals(0.0, math.inf)
        ended = []
        g.on_end = lambda record, ticket, reason: ended.append(reason)
        record = RequestRecord(t.rid, 0, 0.0, 10, 3, (0.1, 0.2, 0.3), 0, 0.3)
        g(EpochOut(1.0, tokens=((t.rid, (0.1, 0.2)),), finished=(record,)), 0)
        await asyncio.sleep(0)
        events = [t.events.get_nowait() for _ in range(t.events.qsize())]
        assert [e[0] for e in events] == ["accepted", "tokens", "end"]
        assert events[1][1] == (0.1, 0.2) and ended == ["length"] and g.counts["completed"] == 1
    asyncio.run(main())


def test_card_gauges_are_over_the_last_interval_and_the_means_stay_the_card_s():
    from rsd_ray.hardware.card import CardFrame, windowed
    # before: 10 s, busy 8 s (80 %), 1,000 J; now: 20 s, busy still 8 s (the mean falls to 40 %), 1,500 J
    before = CardFrame(3, 10.0, 0.8, 0, 16, 50.0, 1000.0, 100.0, "P0", 0.0, 0.0)
    now = CardFrame(3, 20.0, 0.4, 0, 16, 45.0, 1500.0, 75.0, "P2", 0.0, 0.0)
    w = windowed(before, now)
    assert w.utilisation == pytest.approx(0.0) and w.power_w == pytest.approx(500.0 / 10.0)   # idle, 50 W
    assert w.since_s == 10.0 and w.temperature_c == 45.0
    assert windowed(None, now) == now                                   # the first frame: its own means
    g, _ = gateway()
    g(EpochOut(t_end=10.0, cards=(before,)), 0)
    g(EpochOut(t_end=20.0, cards=(now,)), 0)
    assert g.cards[0].utilisation == pytest.approx(0.0) and g.cards[0].power_w == pytest.approx(50.0)
    assert now.utilisation == 0.4 and now.power_w == 75.0              # what the results keep: since the start


def test_the_status_line_says_when_delivery_or_the_rack_falls_behind():
    from rsd_ray.serve.command import BEHIND_WARN_S, status_line
    base = {"t": 1.0, "pace": 1.0, "lag_s": 0.0, "in_flight": 0, "completed": 0, "refused": 0, "healthy": 4,
            "instances": 4, "delivery_lag_s": 0.0, "loop_lag_s": 0.0, "rack_lag_s": 0.0}
    assert "behind" not in status_line(base)
    assert "delivery behind" in status_line({**base, "delivery_lag_s": BEHIND_WARN_S * 2})
    assert "delivery behind" in status_line({**base, "loop_lag_s": BEHIND_WARN_S * 2})
    assert "rack behind" in status_line({**base, "rack_lag_s": BEHIND_WARN_S * 2})


def test_delivery_and_loop_lag_count_in_how_far_behind_clients_are():
    g, _ = gateway()
    g.lag_s = 0.05
    g.delivered(0.3, first=True)
    g.loop_probed(0.1)
    assert g.behind_s == pytest.approx(0.05 + 0.3)
    seen = []
    g.on_delivered = lambda delay, first: seen.append((delay, first))
    g.delivered(-1.0)                                  # early is on time
    assert seen == [(0.0, False)]


def test_an_idle_rack_waits_for_a_client_and_wakes_when_one_comes():
    async def main():
        g, _ = gateway(pace=1.0)
        t0 = g.pacer.virtual()
        start = time.monotonic()
        reached = await asyncio.to_thread(g.quiet_until, t0, t0 + 10.0)
        assert 0.15 < time.monotonic() - start < 1.0                  # at most QUIET_WAIT_MAX_S, then steps
        assert t0 < reached < t0 + 1.0
        waiter = asyncio.ensure_future(asyncio.to_thread(g.quiet_until, reached, reached + 10.0))
        await asyncio.sleep(0.05)
        ticket = g.submit(4, 2)
        woke = await waiter
        assert woke <= g.pacer.virtual(ticket.arrival_wall) + 1e-9    # never past the request's arrival
    asyncio.run(main())
