"""The validation suite: each published row replayed on its GPU preset, predicted against measured.

A row's requests (its published prompt and output lengths, each sent ``repeat`` times) are sent at t = 0
to one instance of ``tp`` cards of the row's rack, with the row's engine settings; the prediction is the
emulator's output throughput (tokens over first send to last completion, as ``vllm bench serve`` and
``benchmark_throughput.py`` count it) and mean TTFT (scored nowhere; compared where published). A row's
source is its suite file: the errors are summarised per source and per (device, model, TP) group. The
device files and ``rsd_ray.calibration`` are the same for every row and for ATOM; a constant informed by
one source's rows says so, and ``benchmarks/validate_sources.py`` replays the suite without it. A
published output length of 0 (an empty answer) is replayed as 1 token: every request is prefilled and
samples once.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from rsd_ray import signals
from rsd_ray.config import ConfigError, load_run, replace
from rsd_ray.config.schema import read_spec
from rsd_ray.config.loader import CONFIG_ROOT, read_yaml
from rsd_ray.config.specs import EngineSpec
from rsd_ray.workload.synthetic import Replay

SUITES = CONFIG_ROOT / "validation"
PRIMARY = "output_throughput"          # the figure the error statistics are taken over
ROW_FIELDS = ("id", "source", "hardware", "rack", "gpus", "model", "tp", "engine", "workload", "input_lens",
              "output_lens", "measured")


def load_rows(path: str | Path | None = None) -> list[dict]:
    """Every row of the shipped suites (or of one file), checked: lengths line up, measured figures given."""
    paths = [Path(path)] if path else sorted(SUITES.glob("*.yaml"))
    rows = []
    for p in paths:
        if not p.is_file():
            raise ConfigError("command line", "--suite", str(p), "no such file; give a validation YAML")
        data = read_yaml(p)
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise ConfigError(str(p), "rows", type(data).__name__, "a suite is a mapping with a list of rows")
        for row in data["rows"]:
            if not isinstance(row, dict):
                raise ConfigError(str(p), "rows", row, "each row is a mapping of " + ", ".join(ROW_FIELDS))
            missing = [k for k in ROW_FIELDS if k not in row]
            if missing:
                raise ConfigError(str(p), row.get("id", "<row>"), missing, "a row needs " + ", ".join(ROW_FIELDS))
            ins, outs = row["input_lens"], row["output_lens"]
            if not (isinstance(ins, list) and isinstance(outs, list)) or len(ins) != len(outs) or not ins:
                raise ConfigError(str(p), row["id"], outs, "one output length per input length, as lists")
            repeat = row.get("repeat", 1)
            if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
                raise ConfigError(str(p), f"{row['id']}.repeat", repeat, "how many times each listed request is "
                                  "sent: a whole number ≥ 1")
            if not all(isinstance(n, int) and n >= lo for lens, lo in ((ins, 1), (outs, 0)) for n in lens):
                raise ConfigError(str(p), f"{row['id']}.input_lens/output_lens", (ins, outs),
                                  "whole token counts: prompts ≥ 1, outputs ≥ 0")
            m = row["measured"]
            if not isinstance(m, dict) or PRIMARY not in m or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                                  for v in m.values()):
                raise ConfigError(str(p), f"{row['id']}.measured", m, "finite positive figures, e.g. "
                                  "{duration_s: 5.4, output_throughput: 340.0, mean_ttft_ms: 62.0}")
            rows.append({**row, "suite": p.stem, "input_lens": ins * repeat, "output_lens": outs * repeat})
    return rows


def row_spec(row: dict):
    """The run of one row: its rack cut to ``gpus`` cards in one server, its model, TP and engine."""
    spec = load_run(None, rack=row["rack"], model=row["model"], tp=row["tp"], duration_s=1.0, epoch_s=0.05)
    rack = replace(spec.rack, row["id"], servers=1, cards_per_server=row["gpus"], switches_per_server=1)
    max_len = row["engine"].get("max_model_len", spec.model.max_seq_len)
    engine = {"max_model_len": max_len, "enable_chunked_prefill": False,        # vLLM 0.5's defaults
              "max_num_batched_tokens": max(2048, max_len), **row["engine"]}
    return replace(spec, row["id"], rack=rack, engine=read_spec(EngineSpec, engine, row["id"], "engine"))


def predict(row: dict, spec) -> dict:
    """The emulator's figures for one row on its ``row_spec`` (inline executor; a few thousand steps)."""
    from rsd_ray.rack.controller import Controller
    from rsd_ray.report.results import build
    lengths = [(p, max(1, o)) for p, o in zip(row["input_lens"], row["output_lens"])]
    outcome = Controller(spec, source=Replay(lengths)).run()
    if outcome.status != "completed":
        raise RuntimeError(f"{row['id']}: run {outcome.status}: {outcome.reason}")
    s = build(outcome)["summary"]
    return {"duration_s": s["duration"], "output_throughput": s["output_throughput"], "mean_ttft_ms": s["mean_ttft_ms"]}


def signed_error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured


def compare(rows: list[dict], on_row=None, spec_of=row_spec) -> list[dict]:
    """Predicted against measured for every row, each on ``spec_of(row)`` (``row_spec``, or a variant of it:
    benchmarks/validate_sources.py); ``on_row(result)`` after each (progress). A stop signal ends it after
    the rows done (the row it stopped is left out: its run did not finish)."""
    out = []
    for row in rows:
        if signals.first_received():
            break
        spec = spec_of(row)
        try:
            p, m = predict(row, spec), row["measured"]
        except RuntimeError:
            if signals.first_received():
                break
            raise
        result = {"id": row["id"], "device": spec.device.name, "model": row["model"], "tp": row["tp"],
                  "suite": row["suite"], "source": row["source"], "measured": m, "predicted": p,
                  "error": {k: signed_error(p[k], m[k]) for k in p if k in m}}
        out.append(result)
        if on_row:
            on_row(result)
    return out


def summary(results: list[dict]) -> dict:
    """Median absolute (and signed) error of the primary figure over the suite, per source (suite file) and
    per device–model–TP group: a constant taken from one source shows up as that source's error alone."""
    def stats(rs):
        return {"rows": len(rs), "median_abs_error": statistics.median(abs(r["error"][PRIMARY]) for r in rs),
                "median_signed_error": statistics.median(r["error"][PRIMARY] for r in rs)}
    by_source, by_group = defaultdict(list), defaultdict(list)
    for r in results:
        by_source[r["suite"]].append(r)
        by_group[(r["device"], r["model"], r["tp"])].append(r)
    return {"metric": PRIMARY, "rows": len(results),
            "median_abs_error": stats(results)["median_abs_error"] if results else None,
            "by_source": [{"source": k, **stats(rs)} for k, rs in sorted(by_source.items())],
            "by_group": [{"device": d, "model": m, "tp": tp, **stats(rs)}
                         for (d, m, tp), rs in sorted(by_group.items())]}
