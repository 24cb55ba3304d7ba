"""Each source of the validation suite left out of what informed the constants: no fitting in disguise.

    python benchmarks/validate_sources.py [--json OUT]

A constant taken from one source's rows is checked there by construction. For each source this replays
the whole suite with the constants that source informed set back to what they would be without it
(``INFORMED``), and prints that source's median |error| and the suite's, with and without. A source
that informed nothing has nothing to leave out.
"""
from __future__ import annotations

import argparse
import contextlib
import json

from rich.console import Console
from rich.table import Table

from rsd_ray import calibration
from rsd_ray.compiler import program
from rsd_ray.config import replace
from rsd_ray.validation.suite import PRIMARY, compare, load_rows, row_spec, summary

INFORMED = {
    "argonne-llm-inference-bench": {
        "calibration.V0_TP_STEP_S": (calibration, "V0_TP_STEP_S", 0.0),
        "calibration.V0_TP_PER_SEQ_S": (calibration, "V0_TP_PER_SEQ_S", 0.0),
        "calibration.ATTENTION_HEADS_FLOOR": (program, "ATTENTION_HEADS_FLOOR", 0),
    },
    "gpt-fast": {"GPU dram_efficiency 0.685": (None, "dram_efficiency", calibration.DRAM_EFFICIENCY)},
    "lambda-vllm-0.5": {},
}
"""Per source: the constants it informed, each as (module, name, its value without that source). Without
Argonne's table nothing says what driving a TP group costs a V0 engine, or that attention stops shrinking
with TP (0: KV bytes at one efficiency); without gpt-fast's batch-1 bandwidth a GPU profile falls back to
``calibration.DRAM_EFFICIENCY`` (STREAM-style 85 %)."""


@contextlib.contextmanager
def without(source: str):
    """The constants ``source`` informed, at their values without it, for the duration of the block."""
    saved = []
    for module, name, value in INFORMED[source].values():
        if module is not None:
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, value)
    try:
        yield {name: value for module, name, value in INFORMED[source].values() if module is None}
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def replay(rows: list[dict], device_changes: dict) -> dict:
    """``suite.summary`` of the suite replayed with ``device_changes`` made to every GPU profile."""
    def spec_of(row):
        spec = row_spec(row)
        if device_changes and spec.device.name != "atom":
            spec = replace(spec, row["id"], device=replace(spec.device, row["id"], **device_changes))
        return spec
    return summary(compare(rows, spec_of=spec_of))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    console = Console()
    rows = load_rows()
    with console.status("replaying the suite as it is"):
        base = replay(rows, {})
    table = Table(title=f"each source left out of what it informed: median |error| of {PRIMARY}")
    for col in ("source left out", "rows", "its rows", "without", "suite", "suite without"):
        table.add_column(col, justify="left" if col.startswith("source") else "right")
    doc = {"suite": base["median_abs_error"], "sources": []}
    for source, informed in INFORMED.items():
        if informed:
            with console.status(f"replaying the suite without {source}"), without(source) as device_changes:
                left = replay(rows, device_changes)
        else:
            left = base
        mine, mine_left = (next(g for g in s["by_source"] if g["source"] == source) for s in (base, left))
        entry = {"source": source, "constants": sorted(informed), "rows": mine["rows"],
                 "its_rows": mine["median_abs_error"], "its_rows_without": mine_left["median_abs_error"],
                 "suite_without": left["median_abs_error"]}
        doc["sources"].append(entry)
        table.add_row(source, str(entry["rows"]), f"{entry['its_rows']:.1%}", f"{entry['its_rows_without']:.1%}",
                      f"{doc['suite']:.1%}", f"{entry['suite_without']:.1%}")
    console.print(table)
    for source, informed in INFORMED.items():
        reset = ", ".join(f"{name} -> {value}" for name, (_, _, value) in informed.items()) or "nothing"
        console.print(f"  without {source}: {reset}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
