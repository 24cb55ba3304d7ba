"""`rsd-ray smi`: rbln-smi's device and context tables for the emulated cards."""
from __future__ import annotations

from rich import box
from rich.table import Table


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.1f}B"


def render(doc: dict, console) -> None:
    """``doc``: rbln-smi's JSON (``rsd_ray.serve.watch.smi_json``)."""
    devices = Table(title=f"Device Information KMD ver: {doc['KMD_version']}", box=box.ASCII2, title_style="bold")
    for name, justify in (("NPU", "left"), ("Name", "center"), ("Device", "center"), ("PCI BUS ID", "center"),
                          ("Temp", "right"), ("Power", "right"), ("Perf", "center"), ("Memory(used/total)", "center"),
                          ("Util", "right")):
        devices.add_column(name, justify=justify)
    for d in doc["devices"]:
        devices.add_row(str(d["npu"]), d["name"], d["device"], d["pci"]["bus_id"], f"{d['temperature']:.0f}C",
                        f"{d['card_power']:.1f}W", d["pstate"],
                        f"{_bytes(d['memory']['used'])} / {_bytes(d['memory']['total'])}", f"{d['util']:.1f}",
                        style="red" if d.get("lost") else "")
    console.print(devices)
    contexts = Table(title="Context Information", box=box.ASCII2, title_style="bold")
    for name in ("NPU", "Process", "PID", "CTX", "Priority", "Memalloc", "Status"):
        contexts.add_column(name)
    for c in doc["contexts"]:
        contexts.add_row(str(c["npu"]), c["process"], str(c["pid"]), str(c["ctx"]), str(c["priority"]),
                         _bytes(c["memalloc"]), c["status"])
    console.print(contexts)
