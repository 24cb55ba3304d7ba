"""Layer pipelining on and off (1, 2, 4 chunks per step) for a prefill-heavy and a decode-heavy load.

    python sweeps/layer_pipelining.py [--duration 60]

Chunks let one chunk's all-reduce overlap the next chunk's compute, but every
chunk streams the layer's weights again: a gain where compute dominates (long
prefills), a loss where DRAM does (decode).
"""
from rsd_ray.sweep import run_script

if __name__ == "__main__":
    points = [{"workload": w, "compiler.pipeline_chunks": c} for w in ("default", "decode-heavy") for c in (1, 2, 4)]
    run_script("layer_pipelining", "layer pipelining, Llama 3 8B TP 4, one ATOM server", points,
               rack="atom-server", model="llama3-8b", tp=4)
