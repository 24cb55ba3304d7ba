"""PCIe Gen4 against Gen5 (32 vs 64 GB/s each way on every card and switch link), at TP 4 and TP 16.

    python sweeps/pcie_gen.py [--duration 60]

TP 4 stays under one PCIe switch; TP 16 crosses the switch uplinks, where the
slower generation shows most.
"""
from rsd_ray.sweep import run_script

GEN = {4: 32, 5: 64}

if __name__ == "__main__":
    points = [{"tp": tp, "device.pcie_gen": gen, "device.link.bandwidth_gbps": bw,
               "rack.switch_uplink.bandwidth_gbps": bw} for tp in (4, 16) for gen, bw in GEN.items()]
    run_script("pcie_gen", "PCIe Gen4 vs Gen5 on one ATOM server, Llama 3 8B", points,
               rack="atom-server", model="llama3-8b")
