"""Sweep results as rows: the grid's fields, the rack's size, the key metrics, scaling efficiency.

Scaling efficiency compares tokens/s per card with the point of fewest cards
that shares every other grid value: 1.0 is perfectly linear.
"""
from __future__ import annotations

import csv
import json
from typing import Any

from rsd_ray.sweep.runner import ROW_METRICS


def rows(results: list[dict], axes: list[str]) -> list[dict[str, Any]]:
    out = []
    for res in results:
        row = dict(res["point"])
        emu, req = res["emulator"], res["requests"]
        row.update(servers=emu["servers"], cards=emu["cards"], instances=emu["instances"])
        row.update({m: res["summary"][m] for m in ROW_METRICS})
        row.update(refused=req["refused"], unfinished=req["unfinished"], wall_s=emu["wall_s"],
                   virtual_per_wall=emu["virtual_per_wall"])
        out.append(row)
    for row in out:
        peers = [r for r in out if all(r[a] == row[a] for a in axes if a not in ("rack", "rack.servers"))]
        base = min(peers, key=lambda r: r["cards"])
        per_card = base["output_throughput"] / base["cards"]
        row["ideal_output_throughput"] = per_card * row["cards"]
        row["scaling_efficiency"] = row["output_throughput"] / row["ideal_output_throughput"] if per_card else 0.0
    return out


def write(rows_: list[dict], results: list[dict], csv_path, json_path) -> None:
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows_[0]))
        writer.writeheader()
        writer.writerows(rows_)
    with open(json_path, "w") as fh:
        json.dump({"schema": "rsd-ray/sweep/v1", "rows": rows_, "results": results}, fh, indent=1)
