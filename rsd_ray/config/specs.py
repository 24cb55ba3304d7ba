"""Frozen specs of everything a run is made of; read from YAML by ``schema``.

Units are in the field names (``_gbps`` is GB/s, 10^9 bytes per second, each
way; ``_us`` microseconds; ``_w`` watts) so a YAML file reads without a manual.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from rsd_ray.calibration import DRAM_EFFICIENCY
from rsd_ray.config.schema import spec_field as F

GIB = 1024 ** 3
MIB = 1024 ** 2


@dataclass(frozen=True, kw_only=True)
class LinkSpec:
    """One link kind: bandwidth each way (full duplex) and one-hop latency."""
    name: str
    bandwidth_gbps: float = F(lo=0.001)
    latency_us: float = F(0.5, lo=0.0)


@dataclass(frozen=True, kw_only=True)
class PowerSpec:
    idle_w: float = F(lo=0.0)
    max_w: float = F(lo=0.001)

    def problems(self):
        if self.idle_w > self.max_w:
            yield "idle_w", self.idle_w, f"a card cannot idle above its maximum power ({self.max_w} W)"


@dataclass(frozen=True, kw_only=True)
class ThermalSpec:
    """First-order thermal model: T → ambient + R·P with time constant tau."""
    ambient_c: float = F(35.0, lo=-40.0, hi=80.0)
    resistance_c_per_w: float = F(lo=0.0)
    tau_s: float = F(lo=0.001)
    throttle_c: float = F(75.0)
    abort_c: float = F(85.0)
    throttle_clock: float = F(0.5, lo=0.05, hi=1.0, doc="clock fraction while throttled (P10)")

    def problems(self):
        if self.abort_c <= self.throttle_c:
            yield "abort_c", self.abort_c, f"must be above throttle_c ({self.throttle_c} °C): a card throttles first"


@dataclass(frozen=True, kw_only=True)
class DeviceSpec:
    """The numbers of one card kind; every number has an entry in ``sources``."""
    name: str
    description: str
    peak_tflops: Dict[str, float] = F(lo=0.001)
    dram_gib: float = F(lo=0.001)
    dram_reserved_mib: float = F(0.0, lo=0.0)
    dram_bandwidth_gbps: float = F(lo=0.001)
    dram_efficiency: float = F(DRAM_EFFICIENCY, lo=0.01, hi=1.0,
                               doc="fraction of dram_bandwidth_gbps the cost model charges memory traffic at "
                                   "(default: rsd_ray.calibration.DRAM_EFFICIENCY)")
    sram_mib: float = F(0.0, lo=0.0)
    link: LinkSpec = F()
    pcie_gen: int = F(5, lo=1, hi=7)
    power: PowerSpec = F()
    thermal: ThermalSpec = F()
    estimated: bool = False
    sources: Dict[str, str] = F({})

    @property
    def usable_bytes(self) -> int:
        return int(self.dram_gib * GIB - self.dram_reserved_mib * MIB)

    def problems(self):
        if "fp16" not in self.peak_tflops:
            yield "peak_tflops", self.peak_tflops, "give at least an fp16 figure, e.g. {fp16: 32}"
        if self.usable_bytes <= 0:
            yield "dram_reserved_mib", self.dram_reserved_mib, f"must leave some of the {self.dram_gib} GiB usable"


@dataclass(frozen=True, kw_only=True)
class PriceSpec:
    """Optional cost figures for tokens per dollar."""
    card_usd_per_hour: float = F(0.0, lo=0.0)
    server_usd_per_hour: float = F(0.0, lo=0.0)
    usd_per_kwh: float = F(0.0, lo=0.0)


@dataclass(frozen=True, kw_only=True)
class RackSpec:
    """Servers of cards behind PCIe switches, joined by NICs and a ToR switch."""
    name: str
    device: str
    servers: int = F(lo=1)
    cards_per_server: int = F(lo=1)
    switches_per_server: int = F(1, lo=1)
    switch_uplink: LinkSpec = F()
    nic: LinkSpec = F()
    host_power_w: float = F(0.0, lo=0.0, doc="server power besides its cards")
    tor_power_w: float = F(0.0, lo=0.0)
    fabric: Optional[LinkSpec] = F(None, doc="each card's link into a switch chip joining a server's cards "
                                             "(NVLink to NVSwitch); none: peer traffic crosses the PCIe switches")
    price: Optional[PriceSpec] = None
    sources: Dict[str, str] = F({})


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A Llama-family decoder by its architecture numbers."""
    name: str
    hidden_size: int = F(lo=1)
    intermediate_size: int = F(lo=1)
    num_layers: int = F(lo=1)
    num_heads: int = F(lo=1)
    num_kv_heads: int = F(lo=1)
    vocab_size: int = F(lo=1)
    max_seq_len: int = F(lo=1)
    head_dim: int = F(0, lo=0, doc="0 means hidden_size / num_heads")
    tie_embeddings: bool = False
    dtype: str = F("fp16", choices=("fp32", "fp16", "bf16", "int8", "int4"))
    checkpoint: str = F("", doc="the Hugging Face checkpoint directory it was read from: the run is functional")
    sources: Dict[str, str] = F({})

    @property
    def dims_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads


@dataclass(frozen=True, kw_only=True)
class EngineSpec:
    """vLLM-like engine settings of every instance."""
    max_num_seqs: int = F(256, lo=1)
    max_num_batched_tokens: int = F(8192, lo=1)
    block_size: int = F(16, lo=1)
    enable_chunked_prefill: bool = True
    kv_cache_fraction: float = F(0.9, lo=0.01, hi=1.0, doc="like gpu_memory_utilization")
    max_model_len: int = F(0, lo=0, doc="0 means the model's max_seq_len")
    async_scheduling: bool = F(False, doc="the host schedules step n+1 while step n runs on the cards (vLLM "
                                          "--async-scheduling, TensorRT-LLM's overlap scheduler): a step takes "
                                          "max(host, device) instead of host + device")
    admission: str = F("preempt", choices=("preempt", "reserve"),
                       doc="preempt: vLLM's (admit while the prompt fits; on KV exhaustion preempt and recompute); "
                           "reserve: TensorRT-LLM's GUARANTEED_NO_EVICT (admit only when the whole prompt + "
                           "max_tokens fits; never evict)")
    enable_prefix_caching: bool = F(False, doc="vLLM's automatic prefix caching: a prompt's leading blocks found "
                                               "in the instance's cache are not computed (``rsd_ray.engine.prefix_cache``)")
    hash_block_tokens: int = F(512, lo=1, doc="tokens per block hash of the requests (Mooncake traces: 512)")
    num_blocks_override: int = F(0, lo=0, doc="KV blocks per instance instead of the memory plan's, as vLLM's "
                                               "num_gpu_blocks_override (0: from the plan)")


@dataclass(frozen=True, kw_only=True)
class RouterSpec:
    policy: str = F("least_loaded")
    max_pending_per_instance: int = F(512, lo=1, doc="admission bound; beyond it requests are refused")
    gateway_cores: int = F(0, lo=0, doc="the front end: cores of the gateway/router server every request "
                                         "and streamed token passes through, and the network to the instance's "
                                         "server (0: requests reach their instance at no cost)")


@dataclass(frozen=True, kw_only=True)
class LengthSpec:
    """Token-length distribution: fixed, uniform [min, max], or lognormal."""
    dist: str = F("fixed", choices=("fixed", "uniform", "lognormal"))
    mean: int = F(128, lo=1)
    min: int = F(1, lo=1)
    max: int = F(0, lo=0, doc="0 means no cap beyond the model length")
    sigma: float = F(0.5, lo=0.0)


@dataclass(frozen=True, kw_only=True)
class TraceSpec:
    """A production trace replayed as the workload (``rsd_ray.workload.trace_readers``)."""
    format: str = F(choices=("azure", "mooncake", "burstgpt", "sharegpt"))
    path: str = F()
    time_scale: float = F(1.0, lo=1e-6, doc="virtual seconds per trace second: 0.5 replays twice as fast")
    start_s: float = F(0.0, lo=0.0, doc="skip the trace's rows before this (trace seconds)")
    end_s: float = F(0.0, lo=0.0, doc="stop at this trace second (0: the whole trace)")
    rate: float = F(0.0, lo=0.0, doc="sharegpt (no times): Poisson arrivals at this many requests/s")
    model: str = F("", doc="burstgpt: replay this Model's rows only (e.g. ChatGPT); empty: all")
    multi_turn: bool = F(False, doc="sharegpt: replay every exchange of a conversation, each sent when the answer "
                                    "before it is complete (plus think_s), its prompt the conversation so far, "
                                    "on the conversation's session")
    think_s: float = F(0.0, lo=0.0, doc="multi_turn: seconds between an answer and the user's next question")

    def problems(self):
        if self.end_s and self.end_s <= self.start_s:
            yield "end_s", self.end_s, f"must be after start_s ({self.start_s}), or 0 for the whole trace"
        if self.format == "sharegpt" and self.rate <= 0:
            yield "rate", self.rate, "ShareGPT has no times: give a Poisson rate in requests/s, e.g. rate: 10"
        if self.multi_turn and self.format != "sharegpt":
            yield "multi_turn", self.multi_turn, "only ShareGPT has conversations: use format: sharegpt"


@dataclass(frozen=True, kw_only=True)
class WorkloadSpec:
    arrival: str = F("closed", choices=("closed", "poisson", "gamma", "offline", "trace"))
    rate: float = F(0.0, lo=0.0, doc="requests/s for poisson and gamma")
    burstiness: float = F(1.0, lo=0.01, doc="gamma shape as in vllm bench: 1 is Poisson, below 1 burstier")
    concurrency: int = F(0, lo=0, doc="clients for closed")
    per_server: bool = F(False, doc="rate/concurrency/num_prompts are per server")
    num_prompts: int = F(0, lo=0, doc="offline: this many requests, all sent at t = 0 (vllm bench throughput)")
    input: LengthSpec = F(LengthSpec(mean=1024))
    output: LengthSpec = F(LengthSpec(mean=128))
    trace: Optional[TraceSpec] = F(None, doc="arrival: trace: the file and how to replay it")


@dataclass(frozen=True, kw_only=True)
class CompilerSpec:
    pipeline_chunks: int = F(1, lo=1, hi=16, doc="layer pipelining: chunks per step (1 = off)")
    collective: str = F("auto", choices=("auto", "ring", "one_shot"))


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Everything one run needs, after presets are resolved."""
    rack: RackSpec
    device: DeviceSpec
    model: ModelSpec
    tp: int
    engine: EngineSpec
    router: RouterSpec
    workload: WorkloadSpec
    compiler: CompilerSpec
    duration_s: float
    epoch_s: float
    drain_s: float
    seed: int
    recover: bool = False       # a lost card's actor is restarted and its instance rejoins (faults.py)
