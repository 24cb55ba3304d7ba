"""Sweep results as rows: the grid's fields, the rack's size, the key metrics, scaling efficiency;
a point that failed is a row with its ``error`` and no figures.

Scaling efficiency compares tokens/s per card with the point of fewest cards
that shares every other grid value: 1.0 is perfectly linear.
"""
from __future__ import annotations

import csv
import json
from typing import Any

from rsd_ray.sweep.runner import ROW_METRICS

OPTIONAL_METRICS = ("prefix_cache_hit_rate",)     # present when the point's engine caches prefixes
SCALING_AXES = ("rack", "rack.servers")           # axes that change the rack's size (scaling efficiency)


def rows(results: list[dict], axes: list[str]) -> list[dict[str, Any]]:
    out = []
    for res in results:
        row = dict(res["point"])
        if "error" in res:
            out.append({**row, "error": res["error"]})
            continue
        emu, req = res["emulator"], res["requests"]
        row.update(servers=emu["servers"], cards=emu["cards"], instances=emu["instances"])
        row.update({m: res["summary"][m] for m in ROW_METRICS})
        row.update({m: res["summary"][m] for m in OPTIONAL_METRICS if m in res["summary"]})
        row.update(refused=req["refused"], unfinished=req["unfinished"], wall_s=emu["wall_s"],
                   virtual_per_wall=emu["virtual_per_wall"])
        row.update(pool_columns(res.get("disaggregation")))
        out.append(row)
    ran = [r for r in out if "error" not in r]
    for row in ran:
        peers = [r for r in ran if all(r[a] == row[a] for a in axes if a not in SCALING_AXES)]
        base = min(peers, key=lambda r: r["cards"])
        per_card = base["window_output_throughput"] / base["cards"]
        row["ideal_output_throughput"] = per_card * row["cards"]
        row["scaling_efficiency"] = row["window_output_throughput"] / row["ideal_output_throughput"] if per_card else 0.0
    return out


def pool_columns(split: dict | None) -> dict[str, Any]:
    """A disaggregated point's pools: how busy each was, and the KV transfer's and the handoff's share of
    TTFT (an aggregated point of the same sweep leaves them empty)."""
    if not split:
        return {}
    parts = split["ttft_parts"]
    return {"prefill_busy": split["pools"]["prefill"]["utilisation"],
            "decode_busy": split["pools"]["decode"]["utilisation"],
            "mean_ttft_transfer_ms": parts["mean_ttft_transfer_ms"], "mean_ttft_wait_ms": parts["mean_ttft_wait_ms"]}


def write(rows_: list[dict], results: list[dict], csv_path, json_path, status: str = "completed",
          reason: str | None = None) -> None:
    fields = list(dict.fromkeys(k for row in rows_ for k in row))    # error rows add an "error" column
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows_)
    with open(json_path, "w") as fh:
        json.dump({"schema": "rsd-ray/sweep/v1", "status": status, "reason": reason, "rows": rows_,
                   "results": results}, fh, indent=1)
