"""Weight and KV-cache precision on the 224-card rack: Llama 3 8B (TP 4) and 70B in fp16, INT8 and INT4
weights, with an fp16 or an 8-bit KV cache.

    python sweeps/precision.py [--duration 60]

On ATOM a decode step streams every weight once, so narrower weights mean shorter steps until the
batch's compute catches up; weight-only INT4 (w4a16) still multiplies in fp16 at 32 TFLOPS, W8A8 in
INT8 at 128 TOPS. 70B is run at the smallest TP its weights fit (fp16: 16 cards; INT8: 8; INT4: 4),
so a narrower format also means more instances on the same cards. An 8-bit KV cache doubles the
blocks; it only pays where the cache is short of room.
"""
from rsd_ray.sweep import run_script

FORMATS = ("none", "w8a16", "w4a16", "w8a8")
SMALLEST_TP_70B = {"none": 16, "w8a16": 8, "w4a16": 4, "w8a8": 8}

if __name__ == "__main__":
    points = [{"model.quantization": q, "model": model, "engine.kv_cache_dtype": kv,
               "tp": 4 if model == "llama3-8b" else SMALLEST_TP_70B[q]}
              for model in ("llama3-8b", "llama3-70b") for kv in ("auto", "fp8") for q in FORMATS]
    run_script("precision", "weight and KV precision on the 224-card rack, decode-heavy", points, rack="rsd-rack",
               workload="decode-heavy")
