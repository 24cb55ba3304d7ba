"""What the TP degree changes on one ATOM server: Llama 3 8B at TP 2, 4, 8 and 16.

    python sweeps/tp_degree.py [--duration 60]

More cards per instance means fewer instances, faster steps and more all-reduce
traffic; TP 16 spans both PCIe switches of the server.
"""
from rsd_ray.sweep import run_script

if __name__ == "__main__":
    run_script("tp_degree", "TP degree on one ATOM server, Llama 3 8B",
               [{"tp": tp} for tp in (2, 4, 8, 16)], rack="atom-server", model="llama3-8b")
