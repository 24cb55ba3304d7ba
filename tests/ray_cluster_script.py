"""Run by test_ray.py in its own process: a two-node Ray cluster on this machine.

1. mini (2 servers × 4 cards) lands one server per node; its results equal inline.
2. `rsd-ray run --address` joins that cluster from another process; a plain `rsd-ray run` starts its
   own private Ray instead, leaving this cluster alone.
3. Losing a node mid-run is a failure value: the run goes on with the other server, and every
   accepted request ends completed, errored or unfinished.
Prints one JSON line with what it saw.
"""
import json
import subprocess
import sys
import time

import ray
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group_table

from rsd_ray.config import load_run
from rsd_ray.rack.controller import Controller
from rsd_ray.report.results import build, without_wall_clock


def comparable(doc):
    doc = without_wall_clock(doc)
    doc["emulator"].pop("executor")
    return doc


def main():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"atom_card": 0}})
    nodes = [cluster.add_node(num_cpus=1, resources={"atom_card": 4}) for _ in range(2)]
    ray.init(address=cluster.address)
    cluster.wait_for_nodes()
    spec = load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=1.0)
    out = {}

    controller = Controller(spec, executor="ray")
    table = placement_group_table()
    out["server_nodes"] = sorted({tuple(set(pg["bundles_to_node_id"].values()))
                                  for pg in table.values() if pg["state"] == "CREATED"})
    out["node_ids"] = sorted(n.node_id for n in nodes)
    out["equal_inline"] = comparable(build(controller.run())) == comparable(build(Controller(spec).run()))

    joined = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--address", cluster.address,
                             "--rack", "mini", "--model", "tiny-llama", "--tp", "2", "--duration", "1",
                             "--json", "--no-progress"], capture_output=True, text=True, timeout=240)
    out["joined"] = json.loads(joined.stdout)["emulator"] if joined.returncode == 0 else joined.stderr[-2000:]

    embedded = subprocess.run([sys.executable, "-m", "rsd_ray.cli", "run", "--rack", "mini", "--model", "tiny-llama",
                               "--tp", "2", "--duration", "1", "--json", "--no-progress"],
                              capture_output=True, text=True, timeout=240)    # no --address while this cluster is up
    out["embedded"] = json.loads(embedded.stdout)["emulator"] if embedded.returncode == 0 else embedded.stderr[-2000:]
    out["cluster_cards_after"] = ray.cluster_resources().get("atom_card")

    controller = Controller(load_run(None, rack="mini", model="tiny-llama", tp=2, duration_s=3.0), executor="ray")
    victim = nodes[1]

    def lose_a_node(epoch, in_flight):
        if abs(epoch.t_end - 0.25) < 1e-9:
            cluster.remove_node(victim, allow_graceful=False)

    t0 = time.time()
    doc = build(controller.run([lose_a_node]))
    out["lost"] = {"status": doc["status"], "failures": doc["failures"], "requests": doc["requests"]}
    out["lost_after_s"] = time.time() - t0
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
