"""Router policies under bursty load on the 224-card rack (gamma arrivals, burstiness 0.25).

    python sweeps/router_policies.py [--duration 60]
"""
from rsd_ray.sweep import run_script

if __name__ == "__main__":
    run_script("router_policies", "router policies, bursty arrivals, rsd-rack",
               [{"router.policy": p} for p in ("round_robin", "least_loaded", "power_of_two")],
               rack="rsd-rack", model="llama3-8b", tp=4, workload="bursty")
