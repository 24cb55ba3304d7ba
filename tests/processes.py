"""The processes a test started, found from /proc: by parentage, or by a mark in their environment."""
from pathlib import Path


def processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every live process, from /proc (zombies left out)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                state, ppid = stat.rsplit(")", 1)[1].split()[:2]
                if state != "Z":
                    out[int(entry.name)] = (int(ppid), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except (OSError, ValueError):
                pass
    return out


def descendants(pid: int) -> dict[int, str]:
    """This process's children, grandchildren, ... (only what it started): pid → command line."""
    procs, found, frontier = processes(), {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, cmd) in procs.items():
            if ppid == parent and child not in found:
                found[child] = cmd
                frontier.append(child)
    return found


def marked(mark: str) -> set[int]:
    """Live processes carrying ``mark`` in their environment: everything one child started, Ray's agents and
    workers included, whoever their parent is now (an orphan's is 1) -- and nothing anyone else started."""
    found = set()
    for pid in processes():
        try:
            if mark.encode() in (Path("/proc") / str(pid) / "environ").read_bytes():
                found.add(pid)
        except OSError:
            pass
    return found
