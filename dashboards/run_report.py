"""The run summary on the terminal: what `vllm bench serve` prints, plus the rack."""
from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


@contextmanager
def run_progress(console: Console, duration: float, enabled: bool = True):
    """A progress bar over virtual time; yields a sink for the controller (``sink(epoch_out, in_flight)``)."""
    if not enabled:
        yield None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed:.1f}/{task.total:.0f} virtual s"), TextColumn("{task.fields[state]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("emulating", total=duration, state="")

        def on_epoch(out, in_flight: int) -> None:
            t = out.t_end
            state = f"{in_flight} in flight" + (" · draining" if t > duration else "")
            progress.update(task, completed=min(t, duration), state=state)
        yield on_epoch


def render(doc: dict, console: Console) -> None:
    s, req, emu, cfg = doc["summary"], doc["requests"], doc["emulator"], doc["config"]
    console.print(f"[bold]{cfg['model']['name']}[/] TP {cfg['tp']} on [bold]{cfg['rack']['name']}[/]: "
                  f"{emu['servers']} servers, {emu['cards']} cards, {emu['instances']} instances · "
                  f"router {cfg['router']['policy']} · "
                  + ("served to live clients" if doc.get("served") else f"{cfg['workload']['arrival']} workload"))
    t = Table(title="serving (window of %.0f virtual s)" % s["duration"], show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    rows = [("Successful requests", f"{s['completed']:,}"), ("Refused requests", f"{req['refused']:,}"),
            ("Unfinished requests", f"{req['unfinished']:,}"), ("Errored requests", f"{req['errored']:,}"),
            ("Retried requests (moved off a failed instance)", f"{req['retried']:,}"),
            ("Preemptions", f"{req['preemptions']:,}"),
            ("Request throughput (req/s)", f"{s['request_throughput']:,.2f}"),
            ("Output token throughput (tok/s)", f"{s['output_throughput']:,.1f}"),
            ("Total token throughput (tok/s)", f"{s['total_token_throughput']:,.1f}")]
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
    for f in doc["failures"]:
        console.print(f"[red]failure[/] at {f['t']:.3f} virtual s: {f['kind']} on server {f['server']}, instances "
                      f"{list(f['instances'])} — {f['reason']}")
    console.print(f"emulator: {emu['executor']} executor, {emu['virtual_s']:.1f} virtual s in {emu['wall_s']:.2f} "
                  f"wall s ({emu['virtual_per_wall']:.1f}× real time)")
    if doc["status"] != "completed":
        console.print(f"[bold yellow]run {doc['status']}[/]: {doc['reason']}")
