"""The RSD article's story: Llama 3 8B at TP 4, one ATOM server → the 14-server rack.

    python sweeps/rsd_story.py [--duration 60]

Each server gets the same closed-loop load (the default workload is per server), so linear scaling
means 14× the tokens/s on 14× the cards. Three front ends: none (requests reach their instance at no
cost, as the article's figures assume), and a gateway/router server of 1 or 4 cores in front of the
rack (``router.gateway_cores``, ``rsd_ray.rack.frontend``), whose per-request and per-token work bends the
curve once it saturates; two workloads: the article's kind (1024 in, 128 out) and short answers (128 in,
16 out: many requests per token). Prints tokens/s, tokens/s per watt and the scaling efficiency against
the one-server point of the same front end and workload; saves sweep-results/rsd_story/sweep.png.
"""
from rsd_ray.sweep import run_script

if __name__ == "__main__":
    run_script("rsd_story", "RSD: 1 → 14 ATOM servers, Llama 3 8B TP 4, by workload and gateway cores",
               [{"workload": w, "router.gateway_cores": c, "rack.servers": n}
                for w in ("default", "short-answers") for c in (0, 1, 4) for n in (1, 2, 4, 7, 14)],
               rack="rsd-rack", model="llama3-8b", tp=4)
