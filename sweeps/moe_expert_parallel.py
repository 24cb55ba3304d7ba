"""A mixture-of-experts model across expert-parallel degrees: Qwen3-30B-A3B (128 experts, 8 a token) on the
224-card rack with 8, 16 and 32 cards an instance, its experts' popularity even or skewed.

    python sweeps/moe_expert_parallel.py [--duration 60]

Each card holds 128 / EP whole experts and the attention's 1/EP; every MoE layer sends each token to
its experts' cards and back (all-to-all), through the server's PCIe switches — and at EP 32 across two
servers' NICs and the top-of-rack switch. More cards an instance mean fewer expert weights a card and
more all-to-all; a skewed router (Zipf exponent 1, which experts are popular drawn from the seed) makes
every step wait for the card holding the popular experts.
"""
from rsd_ray.sweep import run_script

if __name__ == "__main__":
    points = [{"tp": ep, "model.expert_skew": skew} for skew in (0.0, 1.0) for ep in (8, 16, 32)]
    run_script("moe_expert_parallel", "Qwen3-30B-A3B across expert-parallel degrees, 224 ATOM cards", points,
               rack="rsd-rack", model="qwen3-30b-a3b")
