"""Was the rack keeping up? A verdict from the run's own records: stable, backlogged or overloaded.

- **overloaded**: the rack refused requests (its admission bound) or left accepted ones unfinished when
  the run ended: what it was offered is more than it serves;
- **backlogged**: it took and finished everything, but its queue grew while requests arrived. The
  requests queued (arrived, no first token yet) at the end of the arrival window exceed those at its
  middle by more than ``BACKLOG_SHARE`` of the requests that arrived in between, and by more than a queue
  in balance moves by chance (``NOISE_SIGMAS`` standard deviations of the difference of two near-Poisson
  counts, √(2·n)): a longer run would fall further behind, and its latencies describe a queue, not the rack.
  Queued, not "in the system": requests being decoded stay for their whole answer, and a rack filling up
  to its steady batch would read as growth for as long as an answer takes;
- **stable** otherwise.

The middle of the window is compared with its end so the start (an empty rack filling up) does not
count as growth. A closed loop holds at most its clients in the system, so it is never backlogged; an
offline run (every request at t = 0) is stable when it finishes them all.
"""
from __future__ import annotations

import numpy as np

from rsd_ray.report.columns import Columns

BACKLOG_SHARE = 0.05   # growth of the requests queued, as a share of those that arrived meanwhile, that counts
                       # as falling behind: 1 request in 20 left waiting
NOISE_SIGMAS = 3.0     # ... and growth beyond chance: a queue in balance holding n requests has a near-Poisson
                       # count (standard deviation √n), so the difference of two counts moves by √(2n)


def saturation(records, refused: int, window_s: float, closed_loop: bool = False,
               columns: Columns | None = None) -> dict:
    """The verdict and the figures behind it (``records``: every accepted request's record)."""
    c = columns or Columns(records)
    kept = ~c.errored                                        # an errored request left at a time not recorded
    arrival = c.arrival[kept]
    served = np.where(np.isnan(c.first), np.inf, c.first)[kept]
    unfinished = int(np.count_nonzero(~c.done[kept]))
    mid, end = window_s / 2, window_s

    def queued(t: float) -> int:
        return int(np.count_nonzero((arrival <= t) & (served > t)))

    at_mid, at_end = queued(mid), queued(end)
    arrived = int(np.count_nonzero((arrival > mid) & (arrival <= end)))
    if refused or unfinished:
        verdict = "overloaded"
    elif not closed_loop and at_end - at_mid > max(BACKLOG_SHARE * arrived, NOISE_SIGMAS * (2 * at_mid) ** 0.5):
        verdict = "backlogged"
    else:
        verdict = "stable"
    return {"verdict": verdict, "refused": refused, "unfinished": unfinished, "queued_at_mid_s": mid,
            "queued_at_mid": at_mid, "queued_at_end": at_end, "arrived_in_second_half": arrived,
            "backlog_share": BACKLOG_SHARE, "noise_sigmas": NOISE_SIGMAS, "closed_loop": closed_loop}


def describe(s: dict) -> str:
    """One line for the terminal: the verdict and its figures."""
    if s["verdict"] == "overloaded":
        return (f"overloaded: {s['refused']} requests refused, {s['unfinished']} left unfinished — the rack was "
                "offered more than it serves")
    grew = s["queued_at_end"] - s["queued_at_mid"]
    figures = (f"requests queued {s['queued_at_mid']} at {s['queued_at_mid_s']:g} s → {s['queued_at_end']} at "
               f"the end ({grew:+d}; {s['arrived_in_second_half']} arrived meanwhile)")
    if s["verdict"] == "backlogged":
        return f"backlogged: its queue grew — {figures}; latencies measure the queue"
    return f"stable: {figures}"
