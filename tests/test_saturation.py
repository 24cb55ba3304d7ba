"""The saturation verdict: stable, backlogged or overloaded, from the run's own records.

The hand-made runs: 10 requests/s arrive for 10 s (one every 0.1 s). The verdict compares the requests in
the queue (arrived, no first token yet) at 5 s and at 10 s: growth above BACKLOG_SHARE (5 %) of the 50 that
arrive in between, and above NOISE_SIGMAS (3) × √(2 n) of chance, is a backlog.
"""
import pytest

from rsd_ray.engine.request import RequestRecord
from rsd_ray.report.saturation import BACKLOG_SHARE, NOISE_SIGMAS, saturation
from tests.conftest import make_spec, run_doc


def run(queue_s):
    """Request k arrives at 0.1·k s (k = 1 … 100), waits ``queue_s(k)`` seconds for its first token and is
    answered 0.5 s later (a decode that long is not queueing: only the wait counts)."""
    out = []
    for k in range(1, 101):
        t = 0.1 * k
        first = t + queue_s(k)
        out.append(RequestRecord(rid=k, instance=0, arrival=t, prompt_len=8, max_tokens=2,
                                 token_times=(first, first + 0.5), preemptions=0, finish=first + 0.5))
    return out


def test_a_steady_queue_is_stable():
    s = saturation(run(lambda k: 0.45), refused=0, window_s=10.0)
    # at 5 s: arrivals 0.1 … 5.0 still waiting at 5 s are those after 4.55 s: 4.6 … 5.0 → 5 requests;
    # at 10 s: 9.6 … 10.0 → 5 requests. No growth.
    assert (s["queued_at_mid"], s["queued_at_end"], s["arrived_in_second_half"]) == (5, 5, 50)
    assert s["verdict"] == "stable" and (BACKLOG_SHARE, NOISE_SIGMAS) == (0.05, 3.0)


def test_a_queue_that_grows_beyond_chance_and_one_in_twenty_arrivals_is_backlogged():
    s = saturation(run(lambda k: 0.1 * k), refused=0, window_s=10.0)
    # request k waits over [0.1k, 0.2k]: at 5 s, k in [25, 50] less k = 25 (it ends at 5.0) → 25;
    # at 10 s, k in (50, 100] → 50. Growth 25 > max(5 % of 50 = 2.5, 3·√(2·25) = 21.2).
    assert (s["queued_at_mid"], s["queued_at_end"], s["arrived_in_second_half"]) == (25, 50, 50)
    assert s["verdict"] == "backlogged"
    slower = saturation(run(lambda k: 0.05 * k), refused=0, window_s=10.0)
    # [0.1k, 0.15k]: at 5 s, k in [34, 50] → 17; at 10 s, k in [67, 100] → 34. Growth 17 < 3·√34 = 17.5: chance
    assert (slower["queued_at_mid"], slower["queued_at_end"]) == (17, 34) and slower["verdict"] == "stable"
    assert saturation(run(lambda k: 0.1 * k), 0, 10.0, closed_loop=True)["verdict"] == "stable"   # bounded


def test_refusing_or_leaving_requests_unfinished_is_overloaded():
    assert saturation(run(lambda k: 0.45), refused=1, window_s=10.0)["verdict"] == "overloaded"
    unfinished = run(lambda k: 0.45)
    unfinished[-1] = RequestRecord(rid=100, instance=0, arrival=10.0, prompt_len=8, max_tokens=2,
                                   token_times=(10.45,), preemptions=0, finish=None)
    s = saturation(unfinished, refused=0, window_s=10.0)
    assert s["verdict"] == "overloaded" and s["unfinished"] == 1


@pytest.mark.parametrize("rate,verdict", [(20, "stable"), (1200, "backlogged"), (8000, "overloaded")])
def test_every_run_says_its_verdict_in_the_summary(rate, verdict):
    doc, _ = run_doc(make_spec(workload={"arrival": "poisson", "rate": float(rate), "per_server": False},
                               duration_s=4.0))
    assert doc["summary"]["saturation"] == doc["saturation"]["verdict"] == verdict
