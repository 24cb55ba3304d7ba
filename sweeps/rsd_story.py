"""The RSD article's story: Llama 3 8B at TP 4, one ATOM server → the 14-server rack.

    python sweeps/rsd_story.py [--duration 60]

Each server gets the same closed-loop load (the default workload is per server),
so linear scaling means 14× the tokens/s on 14× the cards. Prints tokens/s,
tokens/s per watt and the scaling efficiency; saves sweep-results/rsd_story/sweep.png.
"""
from rsd_ray.sweep import run_script

if __name__ == "__main__":
    run_script("rsd_story", "RSD: 1 → 14 ATOM servers, Llama 3 8B TP 4",
               [{"rack.servers": n} for n in (1, 2, 4, 7, 14)], rack="rsd-rack", model="llama3-8b", tp=4)
