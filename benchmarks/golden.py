"""Save the results of a handful of scenarios, or compare them with a saved set: run before a refactor
and after it, and every figure must be equal (or each difference explained).

    python benchmarks/golden.py save DIR       # one JSON per scenario
    python benchmarks/golden.py check DIR      # names every scenario and key that differs

Scenarios: both racks, KV pressure with preemption, prefix caching, a fault with recovery, layer
pipelining with a link that binds, a GPU preset offline run, functional mode, the compile report,
a Perfetto trace and functional step timing. Wall-clock figures are left out.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

from rsd_ray.config import load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.rack.faults import Fault
from rsd_ray.report.results import build, without_wall_clock

TINY = dict(rack="mini", model="tiny-llama", tp=2)


def _run(spec, faults=(), trace=None) -> dict:
    controller = Controller(spec)
    controller.inject(list(faults))
    sinks = []
    if trace:
        from rsd_ray.report.timeline import TraceSink
        sinks.append(TraceSink(controller, *trace))
    outcome = controller.run(sinks)
    doc = without_wall_clock(json.loads(json.dumps(build(outcome))))
    doc["records"] = [dataclasses.asdict(r) for r in outcome.records]
    if trace:
        doc["trace_events"] = sinks[0].timeline()
    return json.loads(json.dumps(doc, default=list))    # TokenTimes as the list a tuple would be


def _prefix_trace(path: Path) -> Path:
    import random
    rng, rows, t, own = random.Random(0), [], 0.0, 10_000
    for _ in range(200):
        t += rng.expovariate(6.0)
        ids = [rng.randrange(40) * 100 + k for k in range(6)] + [own, own + 1]
        own += 2
        rows.append({"timestamp": int(t * 1000), "input_length": len(ids) * 512 - 100, "output_length": 32,
                     "hash_ids": ids})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def scenarios(tmp: Path) -> dict:
    from rsd_ray.functional.checkpoint import make_model
    from rsd_ray.report.plan import describe
    ckpt = tmp / "ckpt"
    ckpt.mkdir()
    make_model(ckpt, layers=2, hidden=64, heads=8, kv_heads=2, intermediate=128, vocab=300, seed=1)
    prefix = _prefix_trace(tmp / "prefix.jsonl")
    return {
        "atom_server": lambda: _run(load_run(None, rack="atom-server", duration_s=6.0)),
        "rsd_rack": lambda: _run(load_run(None, rack="rsd-rack", duration_s=2.0)),
        "kv_pressure": lambda: _run(load_run(None, **TINY, duration_s=2.0,
                                             engine={"num_blocks_override": 60, "max_model_len": 960},
                                             workload={"concurrency": 32, "input": {"mean": 200},
                                                       "output": {"mean": 300}})),
        "reserve": lambda: _run(load_run(None, **TINY, duration_s=2.0,
                                         engine={"num_blocks_override": 60, "max_model_len": 960,
                                                 "admission": "reserve"},
                                         workload={"concurrency": 32, "input": {"mean": 200},
                                                   "output": {"mean": 300}})),
        "prefix_caching": lambda: _run(load_run(None, rack="mini", model="llama3-8b", tp=2, duration_s=20.0,
                                                workload=f"trace:mooncake:{prefix}",
                                                router={"policy": "prefix_affinity"},
                                                engine={"enable_prefix_caching": True, "num_blocks_override": 700})),
        "fault_recovery": lambda: _run(load_run(None, rack="atom-server", duration_s=12.0, recover=True),
                                       faults=(Fault("card", 5, 3.0),)),
        "pipelining_slow_link": lambda: _run(load_run(None, rack="atom-server", workload="decode-heavy",
                                                      duration_s=3.0, compiler={"pipeline_chunks": 2}),
                                             faults=(Fault("link", 0, 0.5, 10.0, "sw0.0->card1"),),
                                             trace=(1.0, 1.02)),
        "gpu_offline": lambda: _run(load_run(None, rack="dgx-h100", model="llama3-8b", tp=1,
                                             workload={"arrival": "offline", "num_prompts": 200,
                                                       "input": {"mean": 512}, "output": {"mean": 128}})),
        "functional": lambda: _run(load_run(None, model=str(ckpt), tp=4, duration_s=1.0,
                                            workload={"concurrency": 4, "input": {"mean": 16},
                                                      "output": {"mean": 8}})),
        "compile_report": lambda: json.loads(json.dumps(describe(load_run(None, rack="atom-server",
                                                                          compiler={"pipeline_chunks": 2})))),
        "functional_timing": lambda: _functional_timing(ckpt),
    }


def _functional_timing(ckpt: Path) -> dict:
    from rsd_ray.functional.checkpoint import load
    from rsd_ray.functional.timing import StepTimer
    timer = StepTimer(load(ckpt).config, "tiny", 4)
    durations = [timer.step([(0, list(range(12)), 0), (1, list(range(5)), 0)]), timer.step([(0, [3], 12), (1, [4], 5)])]
    return {"durations": durations, "links": timer.card_to_card_bytes(), "host": timer.host_bytes()}


RETIRED = {"span_steps", "steps_in_spans"}
"""Keys a saved set may hold that today's results no longer have (the retired per-instance engine's span counters)."""


def diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in one" for k in (set(a) ^ set(b)) - RETIRED]
        return out + [d for k in a if k in b for d in diff(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def main(argv: list[str]) -> int:
    mode, folder = argv[0], Path(argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    only = set(argv[2:])
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path("/tmp/rsd-ray-golden")               # a fixed path: the configs name their files
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        for name, make in scenarios(work).items():
            if only and name not in only:
                continue
            doc = json.loads(json.dumps(make()))
            path = folder / f"{name}.json"
            if mode == "save":
                path.write_text(json.dumps(doc, indent=1, sort_keys=True))
                print(f"saved {name}")
                continue
            saved = json.loads(path.read_text())
            found = diff(saved, doc)
            bad += bool(found)
            print(f"{name}: {'equal' if not found else f'{len(found)} differences'}")
            for line in found[:15]:
                print("   ", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
