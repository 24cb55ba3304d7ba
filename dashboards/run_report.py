"""The run summary on the terminal: what `vllm bench serve` prints, plus the rack."""
from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.panel import Panel
from rsd_ray.dashboards.tables import Folding
from rich.text import Text

from rsd_ray.rack.epoch import Needs
from rsd_ray.report.saturation import describe as describe_saturation

INSTANCE_ROWS = 16      # a report lists this many instances (the busiest and the least busy), and counts the rest


@contextmanager
def run_progress(console: Console, duration: float):
    """A progress bar over virtual time; yields a sink for the controller (``sink(epoch_out, in_flight)``)."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed:.1f}/{task.total:.0f} virtual s"), TextColumn("{task.fields[state]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=duration, state="")

        def on_epoch(out, in_flight: int) -> None:
            t = out.t_end
            state = f"{in_flight} in flight" + (" · draining" if t > duration else "")
            progress.update(task, description="emulating", completed=min(t, duration), state=state)

        def phase(name: str, done: int = 0, total: int = 0) -> None:
            """A start-up phase (starting Ray, placing servers, starting card actors n / N, ...)."""
            progress.update(task, description=name, state=f"{done} / {total}" if total else "")
        on_epoch.phase, on_epoch.needs = phase, Needs()       # it only shows: quiet epochs may pass unseen
        yield on_epoch


def render(doc: dict, console: Console) -> None:
    s, req, emu, cfg = doc["summary"], doc["requests"], doc["emulator"], doc["config"]
    console.print(f"[bold]{cfg['model']['name']}[/] TP {cfg['tp']} on [bold]{cfg['rack']['name']}[/]: "
                  f"{emu['servers']} servers, {emu['cards']} cards, {emu['instances']} instances · "
                  f"router {cfg['router']['policy']} · "
                  + ("served to live clients" if doc.get("served") else f"{cfg['workload']['arrival']} workload"))
    t = Folding(title="serving (benchmark %.1f virtual s; window %.1f s)" % (s["duration"], s["window_s"]),
              show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    rows = [("Successful requests", f"{s['completed']:,}"), ("Refused requests", f"{req['refused']:,}"),
            ("Unfinished requests", f"{req['unfinished']:,}"), ("Errored requests", f"{req['errored']:,}"),
            ("Retried requests (moved off a failed instance)", f"{req['retried']:,}"),
            ("Preemptions", f"{req['preemptions']:,}"),
            ("Request throughput (req/s)", f"{s['request_throughput']:,.2f}"),
            ("Output token throughput (tok/s)", f"{s['output_throughput']:,.1f}"),
            ("Total token throughput (tok/s)", f"{s['total_token_throughput']:,.1f}"),
            ("Window output token throughput (tok/s)", f"{s['window_output_throughput']:,.1f}")]
    if "offline" in doc:
        o = doc["offline"]
        rows.append(("Offline throughput (req/s · total tok/s · output tok/s)",
                     f"{o['requests_per_second']:,.2f} · {o['tokens_per_second']:,.1f} · "
                     f"{o['output_tokens_per_second']:,.1f}"))
    if "prefix_cache_hit_rate" in s:
        rows.append(("Prefix cache hit rate (of prompt tokens)", f"{s['prefix_cache_hit_rate']:.1%}"))
    if "kv_offload_hits" in s:
        rows.append(("Host-memory KV: tokens brought back / blocks stored",
                     f"{s['kv_offload_hits']:,} / {s['kv_offload_stored']:,}"))
    for name in ("ttft", "tpot", "itl", "e2el"):
        rows.append((f"{name.upper()} mean / median / p90 / p99 (ms)",
                     " / ".join(f"{s[f'{k}_{name}_ms']:,.1f}" for k in ("mean", "median", "p90", "p99"))))
    rows += [("Rack power (W)", f"{s['rack_power_w']:,.0f}"), ("Server power (W)", f"{s['server_power_w']:,.0f}"),
             ("Card power (W)", f"{s['card_power_w']:,.1f}"),
             ("Output tokens/s per watt", f"{s['output_tokens_per_s_per_watt']:.3f}"),
             ("Energy per output token (J)", f"{s['joules_per_output_token']:.2f}")]
    if s.get("output_tokens_per_usd"):
        rows.append(("Output tokens per USD", f"{s['output_tokens_per_usd']:,.0f}"))
    for row in rows:
        t.add_row(*row)
    console.print(t)
    _classes(doc, console)
    _pools(doc, console)
    cards = doc["cards"]
    if cards:
        hot = max(cards, key=lambda c: c["temperature_c"])
        util = sum(c["utilisation"] for c in cards) / len(cards)
        states = sorted({c["p_state"] for c in cards})
        console.print(f"cards: mean utilisation {util:.0%}, hottest card{hot['card']} {hot['temperature_c']:.1f} °C, "
                      f"P-states {', '.join(states)}")
    busiest = sorted(doc["links"], key=lambda l: -l["utilisation"])[:3]
    if busiest:
        console.print("busiest links: " + ", ".join(f"{l['link']} {l['utilisation']:.1%}" for l in busiest))
    _servers(doc, console)
    _instances(doc, console)
    if cards:
        from rsd_ray.dashboards.top import rack_grid
        console.print(Panel(rack_grid(averages_frame(doc), "util", keys=False), title="the rack over the window",
                            expand=False))
    for f in doc["failures"]:
        console.print(f"[red]failure[/] at {f['t']:.3f} virtual s: {f['kind']} on server {f['server']}, instances "
                      f"{list(f['instances'])} — {f['reason']}")
    for r in doc.get("recoveries", ()):
        console.print(f"[green]recovered[/] at {r['t']:.3f} virtual s: instance {r['instance']} (cards "
                      f"{list(r['cards'])}) after {r['duration_s']:.2f} s, {r['load_s']:.2f} s of it reloading shards")
    if doc["failures"] or doc.get("faults", {}).get("injected"):
        console.print(timeline(doc, console.width))
    if "saturation" in doc:
        colour = {"stable": "green", "backlogged": "yellow", "overloaded": "red"}[doc["saturation"]["verdict"]]
        console.print(f"[bold {colour}]rack {describe_saturation(doc['saturation'])}[/]")
    console.print(f"emulator: {emu['executor']} executor, {emu['virtual_s']:.1f} virtual s in {emu['wall_s']:.2f} "
                  f"wall s ({emu['virtual_per_wall']:.1f}× real time)")
    if doc["status"] != "completed":
        console.print(f"[bold yellow]run {doc['status']}[/]: {doc['reason']}")


def timeline(doc: dict, width: int) -> Text:
    """Output tokens/s over virtual time as a sparkline, with a row marking each bin in which a fault was
    injected (``!``), a failure happened (``✗``) or an instance came back (``↑``)."""
    from rsd_ray.dashboards.top import spark
    series, bin_s = doc["timeline"]["output_tokens_per_s"], doc["timeline"]["bin_s"]
    per = max(1, -(-len(series) // max(10, width - 48)))            # bins per column, to fit the width
    cols = [sum(series[i:i + per]) / len(series[i:i + per]) for i in range(0, len(series), per)]
    marks = [" "] * len(cols)
    events = [(f["at_s"], "!") for f in doc["faults"]["injected"]] + [(f["t"], "✗") for f in doc["failures"]] + \
             [(r["t"], "↑") for r in doc.get("recoveries", ())]
    for t, mark in sorted(events):
        k = min(len(cols) - 1, int(t / bin_s) // per)
        marks[k] = "✗" if "✗" in (marks[k], mark) else mark
    text = Text(f"tok/s  {spark(cols, len(cols))}  peak {max(series, default=0):,.0f}\n", style="cyan")
    text.append(f"events {''.join(marks)}  ! fault ✗ failure ↑ back · {per * bin_s:g} s a column", style="red")
    return text


def averages_frame(doc: dict) -> dict:
    """The run's cards as a dashboard frame (``rsd_ray.report.telemetry``), averaged over the window."""
    rack = doc["config"]["rack"]
    events = sorted([(f["t"], c, True) for f in doc["failures"] for c in f["cards"]]
                    + [(r["t"], c, False) for r in doc.get("recoveries", ()) for c in r["cards"]
                       if r["t"] <= doc["summary"]["window_s"]])
    state = {c: lost for _, c, lost in events}                       # each card's last word in the window
    lost = {c for c, is_lost in state.items() if is_lost}
    cards = [{"card": c["card"], "util": c["utilisation"], "power_w": c["power_w"], "temperature_c": c["temperature_c"],
              "memory_used": c["memory_used"], "memory_total": c["memory_total"], "p_state": c["p_state"],
              "throttled": c["throttled_s"] > 0, "lost": c["lost"] or c["card"] in lost} for c in doc["cards"]]
    return {"header": {"servers": rack["servers"], "cards_per_server": rack["cards_per_server"]}, "cards": cards}


def _classes(doc: dict, console: Console) -> None:
    classes = doc.get("by_class")
    if not classes:
        return
    t = Folding(title="service classes (latencies in ms)")
    for col in ("class", "prio", "done", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "E2EL p99"):
        t.add_column(col, justify="right")
    for name, c in classes.items():
        t.add_row(name, str(c["priority"]), f"{c['completed']:,}", *(f"{c[k]:,.0f}" for k in (
            "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "p99_e2el_ms")))
    console.print(t)


def _pools(doc: dict, console: Console) -> None:
    """A disaggregated rack: each pool's load, and where the time to first token went."""
    split = doc.get("disaggregation")
    if not split:
        return
    t = Folding(title=f"prefill / decode pools (KV moved {split['kv_transfer'].replace('_', ' ')}: "
                      f"{split['kv_bytes'] / 1e9:,.2f} GB, {split['handed_off']:,} requests)")
    for col in ("pool", "instances", "TP", "cards", "busy", "steps", "computed tok", "output tok"):
        t.add_column(col, justify="right")
    for name, p in split["pools"].items():
        t.add_row(name, f"{p['instances']:,}", f"{p['tp']}", f"{p['cards']:,}", f"{p['utilisation']:.0%}",
                  f"{p['steps']:,}", f"{p['computed_tokens']:,}", f"{p['output_tokens']:,}")
    console.print(t)
    parts = split["ttft_parts"]
    t = Folding(title="time to first token, part by part (ms)")
    for col in ("part", "mean", "median", "p90", "p99"):
        t.add_column(col, justify="right")
    for part, what in (("queue", "queue for prefill"), ("prefill", "prefill"), ("transfer", "KV transfer"),
                       ("wait", "handoff and decode queue"), ("step", "first decode step")):
        t.add_row(what, *(f"{parts[f'{k}_ttft_{part}_ms']:,.1f}" for k in ("mean", "median", "p90", "p99")))
    console.print(t)


def _servers(doc: dict, console: Console) -> None:
    per = doc["config"]["rack"]["cards_per_server"]
    t = Folding(title="servers (window averages)")
    for name in ("server", "cards", "power W", "card util", "hottest °C", "lost"):
        t.add_column(name, justify="right")
    for s in doc["servers"]:
        cards = [c for c in doc["cards"] if c["card"] // per == s["server"]]
        t.add_row(str(s["server"]), str(s["cards"]), f"{s['power_w']:,.0f}",
                  f"{sum(c['utilisation'] for c in cards) / len(cards):.0%}" if cards else "-",
                  f"{max(c['temperature_c'] for c in cards):.1f}" if cards else "-",
                  str(sum(c["lost"] for c in cards)))
    console.print(t)


def _instances(doc: dict, console: Console) -> None:
    insts = sorted(doc["instances"], key=lambda i: -i["output_tokens"])
    shown = insts if len(insts) <= INSTANCE_ROWS else insts[:INSTANCE_ROWS // 2] + insts[-INSTANCE_ROWS // 2:]
    t = Folding(title="instances" + (f" (the {INSTANCE_ROWS // 2} busiest and least busy of {len(insts)})"
                                   if len(shown) < len(insts) else ""))
    for name in ("instance", "output tokens", "steps", "busy", "preemptions", "KV at end", "state"):
        t.add_column(name, justify="right")
    clock = doc["emulator"]["virtual_s"] or 1.0
    for i in shown:
        t.add_row(str(i["instance"]), f"{i['output_tokens']:,}", f"{i['steps']:,}", f"{i['busy_s'] / clock:.0%}",
                  str(i["preemptions"]), f"{i['kv_usage']:.0%}", "[red]failed[/]" if i["failed"] else "ok")
    console.print(t)
