"""The emulator's calibration constants: named, sourced, the same for every run.

They describe how far real kernels, DMAs and host code fall short of a device's
datasheet peaks. Each says where its value comes from: most from kernel, link or
system measurements; those read off one validation source's rows say so, and
``benchmarks/validate_sources.py`` replays the suite without them. Change one here
and every scenario moves together.
"""
from dataclasses import dataclass

import numpy as np

COMPUTE_EFFICIENCY = 0.70
"""Fraction of peak FLOPS a well-shaped matmul reaches on a neural engine.
Source: typical sustained/peak ratio reported for inference NPUs and GPUs on
large GEMMs (60–80 %); we take the middle."""

DRAM_EFFICIENCY = 0.85
"""Fraction of DRAM bandwidth a streaming read reaches, for a device profile that gives no
``dram_efficiency`` of its own (ATOM's do not). Source: STREAM-style measurements on GDDR6 parts
reach 80–90 % of the interface rate. A device with an end-to-end decode measurement gives that
instead (the A100 and H100 profiles: gpt-fast's 68.5 %)."""

LINK_EFFICIENCY = 0.80
"""Payload fraction of a PCIe link after TLP/DLLP framing and flow control.
Source: PCIe Gen4/Gen5 x16 peer-to-peer benchmarks deliver ~80 % of raw rate; NVLink likewise: NVIDIA/nccl
issue #1455 measures ring all-reduce bus bandwidth of 365-370 GB/s on 8 x H100 SXM, 80 % of 450 GB/s."""

COLLECTIVE_FIXED_S = 6e-6
"""Fixed cost of one collective besides its link latencies and bytes: the kernel's start and the
cross-card synchronisation that every participant waits on. Source: NVIDIA/nccl issue #1259 (an HGX
8×H100 node, all_reduce of 128 B–64 KB captured in a CUDA graph): about 6 µs with 2 GPUs, more with more.
Taken as the floor for every collective on every device, ATOM included (no ATOM figure exists). With
the links' latencies a ring all-reduce of n cards costs 6 + 2(n − 1) hops, which on a DGX A100 is what
NVIDIA/nccl-tests issue #123 measured for 2 to 8 GPUs (10 to 33.7 µs, within 10 %: tests/test_links.py)."""

COMMAND_LAUNCH_S = 2e-6
"""Fixed cost of issuing one command on the card's command processor.
Source: estimate, the order of a doorbell write plus descriptor fetch."""

HOST_STEP_BASE_S = 5e-4
"""Host time per engine step (scheduling, input preparation, output processing).
Source: vLLM v1 step overhead profiles report 0.3–1 ms of CPU time per step."""

HOST_STEP_PER_SEQ_S = 2e-6
"""Additional host time per sequence in a step (sampling and detokenisation).
Source: estimate from vLLM profiles (a few microseconds per sequence)."""

FP32_SHARE_OF_FP16 = 0.5
"""The share of its fp16 peak a device without an fp32 figure reaches in fp32 (functional mode computes
in fp32). Source: estimate; a 16-bit matrix engine needs at least two passes per fp32 product. No
ATOM figure exists; this keeps an fp32 run from being priced faster than the datasheet allows."""

DEQUANT_OPS_PER_WEIGHT = 2.0
"""Operations a weight-only scheme (w8a16, w4a16) spends per weight per pass through them, at the
activations' peak: a convert to fp16 and a multiply by the group's scale, done in registers as the
weights stream (Marlin, AWQ's GEMM kernels; Frantar et al., "MARLIN: Mixed-Precision Auto-Regressive
Parallel Inference on Large Language Models", 2024). Source: estimate from those kernels' structure
(a multiply-add per weight when a zero point is folded in). Small beside a decode step's weight reads;
it only shows when a step is compute-bound."""

CARD_RESTART_S = 5.0
"""Virtual seconds from a card's loss until it answers again under ``--recover`` (device reset, driver
re-probe, a new card process), before its shards are reloaded over its host link (timed by the link
model). Source: estimate; a PCIe function-level reset plus driver initialisation takes seconds, not
minutes. Not an ATOM measurement."""

GATEWAY_REQUEST_S = 1e-3
"""CPU time of the rack's gateway/router server per request: parse the OpenAI body, tokenise, choose an
instance, open the proxied stream. Source: estimate; Python ASGI servers (FastAPI on uvicorn) serve on
the order of a thousand small proxied requests per second per core."""

GATEWAY_TOKEN_S = 2e-5
"""Gateway CPU time per streamed output token (one server-sent event: JSON encode, write, flush).
Source: estimate; an asyncio server pushes some tens of thousands of small SSE writes per second per core."""

REQUEST_BYTES_PER_TOKEN = 4.0
"""Bytes of request text per prompt token on the wire. Source: OpenAI's rule of thumb (one token ≈ 4
characters of English), UTF-8 and JSON framing neglected."""

RESPONSE_BYTES_PER_TOKEN = 200.0
"""Bytes on the wire per streamed token: one `chat.completion.chunk` server-sent event (id, model, created,
choices[0].delta) is about 200 bytes. Source: the size of OpenAI's streaming chunk format."""

ATTENTION_HEADS_FLOOR = 20
"""Query heads a card's decode-attention kernel is charged for at least: its KV reads take as long as if
the card held ``max(heads, ATTENTION_HEADS_FLOOR)`` query heads. A kernel's blocks each walk one head's
context; with few heads per card (high TP of a small model) the walk's latency, not the bytes, sets the
time, so attention stops shrinking with TP while the bytes do. Source: Argonne's LLM-Inference-Bench
table, vLLM on H100: at batch 32-64 the per-token time grows with context faster than the KV bytes say,
by ~1.35x with 16 query heads a card (Llama 3 8B TP 2, 70B TP 4) and ~2.4x with 8 (8B TP 4), not at all
with 32 (8B TP 1): a floor of ~20 heads. Informed by that source's rows (see benchmarks/validate_sources.py).
Borrowed from GPUs for ATOM (no ATOM attention-kernel measurement exists)."""

V0_HOST_PER_SEQ_S = 35e-6
"""Host time per sequence in each step of vLLM's V0 engine (vLLM ≤ 0.6: ``EngineSpec.vllm_engine: v0``), on
the step's critical path: Python scheduling, input preparation, sampler and detokenisation per sequence.
Source: vLLM blog, "vLLM v0.6.0: 2.7x Throughput Improvement" (2024-09-05): in v0.5.3, Llama 3 8B on one
H100, 29 % of the time is scheduling against 38 % GPU execution. The blog gives shares, not a figure
per sequence: at full load (~256 sequences a step, ~11 ms on the GPU: an estimate) that is ~8.5 ms of
host work, ~33 µs a sequence. (vLLM V1 moved this off the critical path: ``HOST_STEP_PER_SEQ_S``.)"""

V0_TP_STEP_S = 1.3e-3
"""Host time per step of vLLM's V0 engine driving a tensor-parallel group (more than one card): the driver
worker prepares the step's inputs and broadcasts them (``broadcast_tensor_dict``: pickled metadata, then
one broadcast per tensor) before any worker launches the step. Source: Argonne's LLM-Inference-Bench table
(vLLM, Llama 3 8B, batch 1): TP 2 against TP 1 on the same machine, 6.65 against 7.76 ms a token on H100
and 9.81 against 14.27 ms on A100 40 GB, less what the halved weight pass and the collectives explain:
1.1–1.4 ms. Informed by that source's rows; ``benchmarks/validate_sources.py`` shows the suite without it."""

V0_TP_PER_SEQ_S = 25e-6
"""Host time per sequence in each step of vLLM's V0 engine with a tensor-parallel group, beyond
``V0_HOST_PER_SEQ_S``: the broadcast carries every sequence's block table and positions, and each worker
builds its attention metadata from them. Source: the same table, TP 2 against TP 1 from batch 1 to 64
(the per-token time grows ~25 µs more per sequence at TP 2 on both H100 and A100); informed by that
source's rows, like ``V0_TP_STEP_S``."""

ALL = {name: value for name, value in globals().items() if name.isupper() and isinstance(value, (int, float))}


@dataclass(frozen=True)
class HostCost:
    """The host's share of one engine step: ``base_s + per_seq_s`` per sampled sequence, before the step's
    device time or, with ``overlap`` (an engine that schedules step n+1 while step n runs,
    ``EngineSpec.async_scheduling``), beside it. The one home of the host's rule."""
    base_s: float = HOST_STEP_BASE_S
    per_seq_s: float = HOST_STEP_PER_SEQ_S
    overlap: bool = False

    @classmethod
    def of(cls, engine, tp: int) -> "HostCost":
        """The host cost of ``engine`` driving groups of ``tp`` cards (V0's terms only for ``vllm_engine: v0``)."""
        v0 = engine.vllm_engine == "v0"
        driven = v0 and tp > 1
        return cls(HOST_STEP_BASE_S + (V0_TP_STEP_S if driven else 0.0),
                   HOST_STEP_PER_SEQ_S + (V0_HOST_PER_SEQ_S if v0 else 0.0) + (V0_TP_PER_SEQ_S if driven else 0.0),
                   engine.async_scheduling)

    def seconds(self, sampled_seqs):
        """Host CPU time of one step that samples ``sampled_seqs`` tokens."""
        return self.base_s + self.per_seq_s * sampled_seqs

    def step_s(self, sampled_seqs, device_s):
        """One engine step: its host time, then its device time; overlapped, the longer of the two."""
        host = self.seconds(sampled_seqs)
        return np.maximum(host, device_s) if self.overlap else host + device_s
