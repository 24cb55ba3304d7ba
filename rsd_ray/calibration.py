"""The emulator's calibration constants: named, sourced, the same for every run.

They describe how far real kernels, DMAs and host code fall short of a device's
datasheet peaks. None of them is fitted to a published throughput figure; each
says where its value comes from. Change one here and every scenario moves
together.
"""
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
Source: PCIe Gen4/Gen5 x16 peer-to-peer benchmarks deliver ~80 % of raw rate."""

COLLECTIVE_FIXED_S = 6e-6
"""Fixed cost of one collective besides its link latencies and bytes: the kernel's start and the
cross-card synchronisation that every participant waits on. Source: NVIDIA/nccl issue #1259 (an HGX
8×H100 node, all_reduce of 128 B–64 KB captured in a CUDA graph): about 6 µs with 2 GPUs, more with more.
Taken as the floor for every collective on every device, ATOM included (no ATOM figure exists)."""

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

ALL = {name: value for name, value in globals().items() if name.isupper() and isinstance(value, (int, float))}


def host_step_s(sampled_seqs: float) -> float:
    """Host CPU time of one engine step that samples ``sampled_seqs`` tokens."""
    return HOST_STEP_BASE_S + HOST_STEP_PER_SEQ_S * sampled_seqs


def step_s(sampled_seqs, device_s, overlap: bool = False):
    """One engine step: its host time, then its device time; with ``overlap`` (an engine that schedules
    step n+1 while step n runs, ``EngineSpec.async_scheduling``) the longer of the two."""
    host = host_step_s(sampled_seqs)
    return np.maximum(host, device_s) if overlap else host + device_s
