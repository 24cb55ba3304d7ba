"""Frozen specs of everything a run is made of: pydantic dataclasses (``schema``), checked whenever built.

Units are in the field names (``_gbps`` is GB/s, 10^9 bytes per second, each
way; ``_us`` microseconds; ``_w`` watts) so a YAML file reads without a manual.
Ranges are field constraints; a rule across fields is the spec's validator and
raises ``Problem`` naming the field it blames. A rule across parts (TP against
the model and the rack) is ``RunSpec``'s.
"""
from __future__ import annotations

from typing import Annotated, Dict, List, Literal, Optional

from pydantic import Field, model_validator

from rsd_ray.calibration import DRAM_EFFICIENCY
from rsd_ray.config.schema import Bool, Float, Int, Problem, Str, spec

GIB = 1024 ** 3
MIB = 1024 ** 2
MAX_REQUESTS = 1_000_000   # requests/s, clients or prompts of a workload: each request is a row held in memory
                           # (a rack of 224 cards serves ~10^4 requests/s; 10^12 would exhaust this machine's RAM)
MAX_VIRTUAL_S = 1e10       # a run's duration or drain, in virtual s: above any trace (BurstGPT spans 121 days) and
                           # a served rack's open window (1e9 s); 1e300 is a typo, and a run that never ends


@spec
class LinkSpec:
    """One link kind: bandwidth each way (full duplex) and one-hop latency."""
    name: Str
    bandwidth_gbps: Float = Field(ge=0.001)
    latency_us: Float = Field(0.5, ge=0.0)


@spec
class PowerSpec:
    idle_w: Float = Field(ge=0.0)
    max_w: Float = Field(ge=0.001)

    @model_validator(mode="after")
    def _idle_below_max(self):
        if self.idle_w > self.max_w:
            raise Problem("idle_w", self.idle_w, f"a card cannot idle above its maximum power ({self.max_w} W)")
        return self


@spec
class ThermalSpec:
    """First-order thermal model: T → ambient + R·P with time constant tau."""
    ambient_c: Float = Field(35.0, ge=-40.0, le=80.0)
    resistance_c_per_w: Float = Field(ge=0.0)
    tau_s: Float = Field(ge=0.001)
    throttle_c: Float = 75.0
    abort_c: Float = 85.0
    throttle_clock: Float = Field(0.5, ge=0.05, le=1.0, description="clock fraction while throttled (P10)")

    @model_validator(mode="after")
    def _abort_above_throttle(self):
        if self.abort_c <= self.throttle_c:
            raise Problem("abort_c", self.abort_c,
                          f"must be above throttle_c ({self.throttle_c} °C): a card throttles first")
        return self


@spec
class DeviceSpec:
    """The numbers of one card kind; every number has an entry in ``sources``."""
    name: Str
    description: Str
    peak_tflops: Dict[str, Annotated[Float, Field(ge=0.001)]]
    dram_gib: Float = Field(ge=0.001)
    dram_reserved_mib: Float = Field(0.0, ge=0.0)
    dram_bandwidth_gbps: Float = Field(ge=0.001)
    dram_efficiency: Float = Field(DRAM_EFFICIENCY, ge=0.01, le=1.0,
                                   description="fraction of dram_bandwidth_gbps the cost model charges memory "
                                               "traffic at (default: rsd_ray.calibration.DRAM_EFFICIENCY)")
    sram_mib: Float = Field(0.0, ge=0.0)
    link: LinkSpec
    pcie_gen: Int = Field(5, ge=1, le=7)
    power: PowerSpec
    thermal: ThermalSpec
    estimated: Bool = False
    sources: Dict[str, Str] = Field(default_factory=dict)

    @property
    def usable_bytes(self) -> int:
        return int(self.dram_gib * GIB - self.dram_reserved_mib * MIB)

    @model_validator(mode="after")
    def _fp16_and_usable_memory(self):
        if "fp16" not in self.peak_tflops:
            raise Problem("peak_tflops", self.peak_tflops, "give at least an fp16 figure, e.g. {fp16: 32}")
        if self.usable_bytes <= 0:
            raise Problem("dram_reserved_mib", self.dram_reserved_mib,
                          f"must leave some of the {self.dram_gib} GiB usable")
        return self


@spec
class PriceSpec:
    """Optional cost figures for tokens per dollar."""
    card_usd_per_hour: Float = Field(0.0, ge=0.0)
    server_usd_per_hour: Float = Field(0.0, ge=0.0)
    usd_per_kwh: Float = Field(0.0, ge=0.0)


@spec
class RackSpec:
    """Servers of cards behind PCIe switches, joined by NICs and a ToR switch."""
    name: Str
    device: Str
    servers: Int = Field(ge=1)
    cards_per_server: Int = Field(ge=1)
    switches_per_server: Int = Field(1, ge=1)
    switch_uplink: LinkSpec
    nic: LinkSpec
    host_power_w: Float = Field(0.0, ge=0.0, description="server power besides its cards")
    tor_power_w: Float = Field(0.0, ge=0.0)
    fabric: Optional[LinkSpec] = Field(None, description="each card's link into a switch chip joining a server's "
                                                         "cards (NVLink to NVSwitch); none: peer traffic crosses "
                                                         "the PCIe switches")
    price: Optional[PriceSpec] = None
    sources: Dict[str, Str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _switches_divide_cards(self):
        if self.cards_per_server % self.switches_per_server:
            raise Problem("switches_per_server", self.switches_per_server,
                          f"must divide cards_per_server ({self.cards_per_server})")
        return self


@spec
class ModelSpec:
    """A Llama-family decoder by its architecture numbers."""
    name: Str
    hidden_size: Int = Field(ge=1)
    intermediate_size: Int = Field(ge=1)
    num_layers: Int = Field(ge=1)
    num_heads: Int = Field(ge=1)
    num_kv_heads: Int = Field(ge=1)
    vocab_size: Int = Field(ge=1)
    max_seq_len: Int = Field(ge=1)
    head_dim: Int = Field(0, ge=0, description="0 means hidden_size / num_heads")
    tie_embeddings: Bool = False
    dtype: Literal["fp32", "fp16", "bf16"] = Field("fp16", description="activations and unquantised weights; "
                                                                      "narrower weights: quantization")
    quantization: Literal["none", "w8a16", "w4a16", "w8a8", "fp8"] = Field(
        "none", description="the linear layers' weights and what their matmuls compute in, as vLLM's "
                            "--quantization (rsd_ray.compiler.formats): w8a16/w4a16 weight-only INT8/INT4, "
                            "w8a8 INT8 weights and activations, fp8 FP8 weights and activations")
    quant_group_size: Int = Field(128, ge=1, description="w8a16/w4a16: weights per fp16 scale along the input "
                                                         "dimension (AWQ and GPTQ use 128)")
    num_experts: Int = Field(0, ge=0, description="routed experts per MoE layer (0: a dense model); each card of an "
                                                  "instance holds num_experts / tp whole experts (expert parallelism)")
    experts_per_token: Int = Field(0, ge=0, description="experts each token is routed to (top-k)")
    moe_intermediate_size: Int = Field(0, ge=0, description="each expert's MLP width (0: intermediate_size)")
    num_shared_experts: Int = Field(0, ge=0, description="experts every token also passes (DeepSeek, Qwen2-MoE), "
                                                         "replicated on every card")
    first_dense_layers: Int = Field(0, ge=0, description="leading layers whose MLP is dense, of intermediate_size "
                                                         "(DeepSeek's first_k_dense_replace)")
    expert_skew: Float = Field(0.0, ge=0.0, le=8.0, description="Zipf exponent of the experts' popularity in the "
                                                               "traffic (0: every expert alike); which experts are "
                                                               "popular follows the run's seed")
    checkpoint: Str = Field("", description="the Hugging Face checkpoint directory it was read from: the run is "
                                            "functional")
    sources: Dict[str, Str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _functional_weights_are_fp32_and_experts_fit(self):
        if self.checkpoint and self.quantization not in ("none", "w8a16", "w4a16"):
            raise Problem("quantization", self.quantization, "functional mode multiplies a checkpoint's weights "
                                                             "in fp32: weight-only schemes (w8a16, w4a16) or none")
        if self.num_experts:
            if not 1 <= self.experts_per_token <= self.num_experts:
                raise Problem("experts_per_token", self.experts_per_token,
                              f"route each token to 1 to num_experts ({self.num_experts}) experts")
            if self.first_dense_layers >= self.num_layers:
                raise Problem("first_dense_layers", self.first_dense_layers,
                              f"leave at least one MoE layer of the {self.num_layers}")
        elif self.experts_per_token or self.num_shared_experts:
            raise Problem("num_experts", 0, "experts_per_token and num_shared_experts need num_experts ≥ 1")
        return self

    @property
    def moe_layers(self) -> int:
        """Layers whose MLP is a mixture of experts (the last ones)."""
        return self.num_layers - self.first_dense_layers if self.num_experts else 0

    @property
    def expert_size(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def dims_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def tp_problem(self, tp: int) -> str | None:
        """Why the compiler's split cannot cut this model ``tp`` ways exactly, or None: tp divides the heads
        and the MLP columns, and divides the KV heads or a multiple of them."""
        if self.num_heads % tp or self.intermediate_size % tp:
            ok = [t for t in range(1, 65) if not self.num_heads % t and not self.intermediate_size % t]
            return (f"{self.name} has {self.num_heads} heads and intermediate {self.intermediate_size}; tp must "
                    f"divide both: {ok}")
        if self.num_experts % tp:
            ok = [t for t in range(1, 65) if not self.num_experts % t and not self.num_heads % t]
            return (f"{self.name} has {self.num_experts} experts, held whole by the cards of an instance; tp must "
                    f"divide them: {ok}")
        if self.num_kv_heads % tp and tp % self.num_kv_heads:
            return (f"{self.name} has {self.num_kv_heads} KV heads; tp must divide them or be a multiple of them "
                    "(KV heads are then replicated)")
        return None


@spec
class EngineSpec:
    """vLLM-like engine settings of every instance."""
    max_num_seqs: Int = Field(256, ge=1)
    max_num_batched_tokens: Int = Field(8192, ge=1)
    block_size: Int = Field(16, ge=1)
    enable_chunked_prefill: Bool = True
    kv_cache_fraction: Float = Field(0.9, ge=0.01, le=1.0, description="like gpu_memory_utilization")
    max_model_len: Int = Field(0, ge=0, description="0 means the model's max_seq_len")
    async_scheduling: Bool = Field(False, description="the host schedules step n+1 while step n runs on the cards "
                                                      "(vLLM --async-scheduling, TensorRT-LLM's overlap scheduler): "
                                                      "a step takes max(host, device) instead of host + device")
    vllm_engine: Literal["v1", "v0"] = Field(
        "v1", description="v1: vLLM's V1 engine (host work per step off the critical path but for "
                          "calibration.HOST_STEP_*); v0: vLLM ≤ 0.6, whose per-sequence Python work and, with TP, "
                          "the driver's broadcast of every step's inputs sit on each step's critical path "
                          "(calibration.V0_HOST_PER_SEQ_S, V0_TP_STEP_S)")
    admission: Literal["preempt", "reserve"] = Field(
        "preempt", description="preempt: vLLM's (admit while the prompt fits; on KV exhaustion preempt and "
                               "recompute); reserve: TensorRT-LLM's GUARANTEED_NO_EVICT (admit only when the whole "
                               "prompt + max_tokens fits; never evict)")
    enable_prefix_caching: Bool = Field(False, description="vLLM's automatic prefix caching: a prompt's leading "
                                                           "blocks found in the instance's cache are not computed "
                                                           "(``rsd_ray.engine.prefix_cache``)")
    hash_block_tokens: Int = Field(512, ge=1, description="tokens per block hash of the requests (Mooncake "
                                                          "traces: 512)")
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "int8"] = Field(
        "auto", description="each cached K and V entry's format, as vLLM's --kv-cache-dtype (auto: the model's "
                            "dtype; fp8 and int8 take one byte; attention still computes in the model's dtype)")
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "fcfs", description="fcfs: first come, first served; priority: vLLM's --scheduling-policy priority (the "
                            "waiting queue by request priority then arrival, and the lowest-priority running "
                            "request preempted first)")
    num_blocks_override: Int = Field(0, ge=0, description="KV blocks per instance instead of the memory plan's, "
                                                          "as vLLM's num_gpu_blocks_override (0: from the plan)")
    kv_offloading_size: Float = Field(0.0, ge=0.0, le=1e6, description="GiB of host memory per instance that keeps "
                                      "prefix blocks evicted from the cards, brought back over the host link on a "
                                      "hit (vLLM's --kv-offloading-size, LMCache's local CPU cache; 0: none)")

    @model_validator(mode="after")
    def _fields_agree(self):
        if self.max_num_batched_tokens < self.max_num_seqs:       # vLLM's SchedulerConfig refuses it too
            raise Problem("max_num_batched_tokens", self.max_num_batched_tokens, "a step has a token for each of "
                          f"its up to max_num_seqs ({self.max_num_seqs}) sequences: use ≥ {self.max_num_seqs}, or "
                          "lower max_num_seqs")
        if self.enable_prefix_caching and self.hash_block_tokens % self.block_size:
            raise Problem("hash_block_tokens", self.hash_block_tokens, "a cached block must be whole KV blocks: "
                          f"use a multiple of block_size ({self.block_size})")
        if self.kv_offloading_size and not self.enable_prefix_caching:
            raise Problem("kv_offloading_size", self.kv_offloading_size, "host memory keeps the prefix cache's "
                          "evicted blocks: set enable_prefix_caching: true (--enable-prefix-caching)")
        return self


@spec
class RouterSpec:
    policy: Str = "least_loaded"
    max_pending_per_instance: Int = Field(512, ge=1, description="admission bound; beyond it requests are refused")
    gateway_cores: Int = Field(0, ge=0, description="the front end: cores of the gateway/router server every "
                                                    "request and streamed token passes through, and the network "
                                                    "to the instance's server (0: requests reach their instance "
                                                    "at no cost)")
    prefill_instances: Int = Field(0, ge=0, description="disaggregated prefill and decode (rack/handoff.py): the "
                                                        "first this many instances prefill, the rest decode; 0: "
                                                        "every instance does both")
    kv_transfer: Literal["after_prefill", "layerwise"] = Field(
        "after_prefill", description="when a prefilled request's KV cache starts to move to its decode instance: "
                                     "after its prefill (vLLM's NixlConnector, Dynamo) or layer by layer while it "
                                     "is computed (Splitwise, Mooncake)")

    @model_validator(mode="after")
    def _known_policy(self):
        from rsd_ray.router import POLICIES  # the registry is the one list of policy names (plugins included)
        if self.policy not in POLICIES:
            raise Problem("policy", self.policy, f"choose one of: {', '.join(sorted(POLICIES))}")
        return self


@spec
class LengthSpec:
    """Token-length distribution: fixed, uniform [min, max], or lognormal."""
    dist: Literal["fixed", "uniform", "lognormal"] = "fixed"
    mean: Int = Field(128, ge=1)
    min: Int = Field(1, ge=1)
    max: Int = Field(0, ge=0, description="0 means no cap beyond the model length")
    sigma: Float = Field(0.5, ge=0.0)

    @property
    def shortest(self) -> tuple[str, int]:
        """The field that sets the fewest tokens this distribution draws, and that number."""
        return ("mean", self.mean) if self.dist == "fixed" else ("min", self.min)


@spec
class TraceSpec:
    """A production trace replayed as the workload (``rsd_ray.workload.trace_readers``)."""
    format: Literal["azure", "mooncake", "burstgpt", "sharegpt"]
    path: Str
    time_scale: Float = Field(1.0, ge=1e-6, description="virtual seconds per trace second: 0.5 replays twice as "
                                                        "fast")
    start_s: Float = Field(0.0, ge=0.0, description="skip the trace's rows before this (trace seconds)")
    end_s: Float = Field(0.0, ge=0.0, description="stop at this trace second (0: the whole trace)")
    rate: Float = Field(0.0, ge=0.0, description="sharegpt (no times): Poisson arrivals at this many requests/s")
    model: Str = Field("", description="burstgpt: replay this Model's rows only (e.g. ChatGPT); empty: all")
    multi_turn: Bool = Field(False, description="sharegpt: replay every exchange of a conversation, each sent when "
                                                "the answer before it is complete (plus think_s), its prompt the "
                                                "conversation so far, on the conversation's session")
    think_s: Float = Field(0.0, ge=0.0, description="multi_turn: seconds between an answer and the user's next "
                                                    "question")

    @model_validator(mode="after")
    def _window_rate_and_turns(self):
        if self.end_s and self.end_s <= self.start_s:
            raise Problem("end_s", self.end_s, f"must be after start_s ({self.start_s}), or 0 for the whole trace")
        if self.format == "sharegpt" and self.rate <= 0:
            raise Problem("rate", self.rate, "ShareGPT has no times: give a Poisson rate in requests/s, e.g. rate: 10")
        if self.multi_turn and self.format != "sharegpt":
            raise Problem("multi_turn", self.multi_turn, "only ShareGPT has conversations: use format: sharegpt")
        return self


@spec
class ServiceClassSpec:
    """One class of a workload's requests: its share of them and its priority (vLLM's: lower is sooner)."""
    name: Str = Field(min_length=1)
    share: Float = Field(gt=0.0, le=1.0)
    priority: Int = 0


@spec
class WorkloadSpec:
    arrival: Literal["closed", "poisson", "gamma", "offline", "trace"] = "closed"
    rate: Float = Field(0.0, ge=0.0, le=MAX_REQUESTS, description="requests/s for poisson and gamma")
    burstiness: Float = Field(1.0, ge=0.01, description="gamma shape as in vllm bench: 1 is Poisson, below 1 "
                                                        "burstier")
    concurrency: Int = Field(0, ge=0, le=MAX_REQUESTS, description="clients for closed")
    per_server: Bool = Field(False, description="rate/concurrency/num_prompts are per server")
    num_prompts: Int = Field(0, ge=0, le=MAX_REQUESTS, description="offline: this many requests, all sent at "
                                                                   "t = 0 (vllm bench throughput)")
    input: LengthSpec = LengthSpec(mean=1024)
    output: LengthSpec = LengthSpec(mean=128)
    trace: Optional[TraceSpec] = Field(None, description="arrival: trace: the file and how to replay it")
    classes: List[ServiceClassSpec] = Field(default_factory=list, description="service classes the requests are "
                                            "drawn from (seeded), each a share and a priority; none: one class")

    @model_validator(mode="after")
    def _arrivals_have_their_number(self):
        if self.classes:
            names = [c.name for c in self.classes]
            if len(set(names)) < len(names):
                raise Problem("classes", names, "give each class its own name")
            total = sum(c.share for c in self.classes)
            if abs(total - 1.0) > 1e-6:
                raise Problem("classes", total, "the classes' shares must add up to 1")
        if self.arrival == "trace" and self.trace is None:
            raise Problem("trace", None, "arrival: trace needs a trace file: give trace:FORMAT:PATH or "
                                         "workload.trace.path")
        if self.arrival == "offline" and self.num_prompts <= 0:
            raise Problem("num_prompts", self.num_prompts, "offline runs need num_prompts ≥ 1")
        if self.arrival in ("poisson", "gamma") and self.rate <= 0:
            raise Problem("rate", self.rate, f"{self.arrival} arrivals need a rate > 0 (requests/s)")
        if self.arrival == "closed" and self.concurrency <= 0:
            raise Problem("concurrency", self.concurrency, "a closed loop needs concurrency ≥ 1")
        return self


@spec
class CompilerSpec:
    pipeline_chunks: Int = Field(1, ge=1, le=16, description="layer pipelining: chunks per step (1 = off)")
    collective: Literal["auto", "ring", "one_shot"] = "auto"


@spec
class PoolSpec:
    """A disaggregated rack's prefill pool where it differs from the rack's instances (the decode pool):
    vLLM's and Dynamo's prefill workers are started with their own TP degree and engine arguments."""
    tp: Int = Field(0, ge=0, description="cards per prefill instance (0: the run's tp)")
    engine: Optional[EngineSpec] = Field(None, description="the prefill instances' engine (none: the run's); "
                                                           "in a run file, the fields that differ from it")


KV_ALIKE = ("block_size", "kv_cache_dtype", "max_model_len", "hash_block_tokens")
"""Engine fields both pools must share: the KV cache moves block for block, in one format, for one context."""


@spec
class RunSpec:
    """Everything one run needs, after presets are resolved; its validator holds the rules across parts."""
    rack: RackSpec
    device: DeviceSpec
    model: ModelSpec
    tp: Int = Field(ge=1)
    engine: EngineSpec
    router: RouterSpec
    workload: WorkloadSpec
    compiler: CompilerSpec
    duration_s: Float = Field(gt=0.0, le=MAX_VIRTUAL_S)
    epoch_s: Float = Field(gt=0.0)
    drain_s: Float = Field(ge=0.0, le=MAX_VIRTUAL_S)
    seed: Int = Field(ge=0)
    recover: Bool = Field(False, description="a lost card's actor is restarted and its instance rejoins (faults.py)")
    prefill: PoolSpec = Field(default_factory=PoolSpec)

    @property
    def prefill_tp(self) -> int:
        return self.prefill.tp or self.tp

    @property
    def prefill_engine(self) -> EngineSpec:
        return self.prefill.engine or self.engine

    @property
    def engines(self) -> tuple[EngineSpec, ...]:
        """The engine of each pool: the prefill pool's first when it has its own."""
        return (self.prefill.engine, self.engine) if self.prefill.engine else (self.engine,)

    @model_validator(mode="after")
    def _parts_fit_together(self):
        m, e = self.model, self.engine
        self._fits_the_rack(self.tp, "tp")
        max_len = e.max_model_len or m.max_seq_len
        if max_len > m.max_seq_len:
            raise Problem("engine.max_model_len", max_len, f"≤ {m.max_seq_len} for {m.name}")
        self._engine_fits(e, "engine", max_len)
        self._pools_fit_together(max_len)
        (in_field, fewest_in), (out_field, fewest_out) = self.workload.input.shortest, self.workload.output.shortest
        if self.workload.arrival != "trace" and fewest_in + fewest_out > max_len:
            blame = f"input.{in_field}" if fewest_in >= fewest_out else f"output.{out_field}"
            raise Problem(f"workload.{blame}", max(fewest_in, fewest_out),
                          f"the shortest request ({fewest_in} prompt + {fewest_out} output tokens) does not fit "
                          f"max_model_len {max_len}: shorten it, or raise engine.max_model_len")
        if self.epoch_s > self.duration_s:
            raise Problem("epoch_s", self.epoch_s, f"must not exceed duration_s ({self.duration_s})")
        return self

    def _fits_the_rack(self, tp: int, field: str) -> None:
        r = self.rack
        why = self.model.tp_problem(tp)
        if why:
            raise Problem(field, tp, why)
        total = r.servers * r.cards_per_server
        if tp > total:
            raise Problem(field, tp, f"rack {r.name} has only {total} cards")
        if tp > r.cards_per_server and tp % r.cards_per_server:
            raise Problem(field, tp, "a group spanning servers must use whole servers (a multiple of "
                                     f"{r.cards_per_server})")

    def _engine_fits(self, e: EngineSpec, field: str, max_len: int) -> None:
        if self.model.checkpoint and e.kv_cache_dtype != "auto":
            raise Problem(f"{field}.kv_cache_dtype", e.kv_cache_dtype, "functional mode keeps a checkpoint's KV "
                                                                       "cache in fp32: use auto with a checkpoint")
        if not e.enable_chunked_prefill and e.max_num_batched_tokens < max_len:
            raise Problem(f"{field}.max_num_batched_tokens", e.max_num_batched_tokens,
                          f"without chunked prefill a whole prompt must fit one step: use ≥ {max_len} or "
                          "enable_chunked_prefill: true")
        blocks = e.num_blocks_override
        if blocks and blocks * e.block_size < max_len:
            raise Problem(f"{field}.num_blocks_override", blocks,
                          f"{blocks} blocks of {e.block_size} tokens cannot hold one {max_len}-token sequence; "
                          f"use ≥ {-(-max_len // e.block_size)} or 0 (from the memory plan)")

    def _pools_fit_together(self, max_len: int) -> None:
        """A prefill pool of its own: only on a disaggregated rack, on cards that hold the model, and with
        the decode pool's KV layout."""
        tp, engine = self.prefill.tp, self.prefill.engine
        if (tp or engine) and not self.router.prefill_instances:
            raise Problem("prefill.tp" if tp else "prefill.engine", tp or "given", "a prefill pool of its own "
                          "needs a disaggregated rack: set router.prefill_instances (--prefill-instances)")
        if tp:
            self._fits_the_rack(tp, "prefill.tp")
        if engine:
            self._engine_fits(engine, "prefill.engine", max_len)
            for name in KV_ALIKE:
                if getattr(engine, name) != getattr(self.engine, name):
                    raise Problem(f"prefill.engine.{name}", getattr(engine, name),
                                  f"the KV cache moves to the decode pool as it is: use engine.{name} "
                                  f"({getattr(self.engine, name)})")
