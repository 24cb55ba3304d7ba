"""Break each pinned rule once and check that a test fails:
`python tests/mutations.py [--check | --sample] [--only TEXT] [tests/FILE ...]`.

Each entry replaces one exact piece of the code with a wrong version (rounding KV blocks down,
waiting for the fastest card, adding compute and memory time, ...), runs the tests (default: the rule's
own — ``TESTS``, the rules, the card and the engine against its oracle, or ``SERVE``, a live
server), restores the file, and prints "caught" or "SURVIVED". ``--only TEXT``: the rules whose file path
contains TEXT.
A rule that survives has no test that pins it. ``--check``: only that every entry still matches its code;
``--sample``: the fixed ``SAMPLE`` that CI runs. Not a test itself: it rewrites source files.
"""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SERVE = ["tests/test_gateway.py", "tests/test_serve.py"]
SERVE_VLLM = ["tests/test_serve_metrics.py", "tests/test_serve_fields.py"]
ORACLE = ["tests/test_engine_oracle.py"]
FAULTS = ["tests/test_faults.py", "tests/test_engine_oracle.py"]
RECOVERY = ["tests/test_recovery.py", "tests/test_engine_oracle.py"]
FIDELITY = ["tests/test_fidelity.py", "tests/test_rules.py", "tests/test_engine_oracle.py"]
PREFIX = ["tests/test_prefix.py", "tests/test_traces.py"]
INPUTS = ["tests/test_inputs.py", "tests/test_signals.py", "tests/test_faults.py", "tests/test_saturation.py"]
RAY_HOSTS = ["tests/test_ray.py::test_two_hosts_run_over_quiet_epochs_of_a_closed_loop_and_equal_inline"]
FORMATS = ["tests/test_formats.py"]
MOE = ["tests/test_moe.py"]
FUNCTIONAL = ["tests/test_functional.py"]
CLASSES = ["tests/test_classes.py"]
DISAGGREGATION = ["tests/test_disaggregation.py"]
OFFLOAD = ["tests/test_offload.py"]
CONFIG = ["tests/test_config.py", "tests/test_open_rack.py", "tests/test_sweep.py", "tests/test_rules.py"]
WRONG = [
 ("rsd_ray/engine/kv_blocks.py", "return (tokens + (block_size - 1)) // block_size", "return tokens // block_size"),
 ("rsd_ray/hardware/card_group.py", "return np.max([cost.segments(shapes, factor) for", "return np.min([cost.segments(shapes, factor) for"),
 ("rsd_ray/hardware/costmodel.py", "np.maximum(compute, memory)", "(compute + memory)"),
 ("rsd_ray/report/metrics.py", "ttft = c.first[done] - c.arrival[done]", "ttft = c.finish[done] - c.arrival[done]"),
 ("rsd_ray/config/specs.py", "latency_us: Float = Field(0.5, ge=0.0)", "latency_us: Float = Field(0.5)"),
 ("rsd_ray/config/specs.py", "if self.max_num_batched_tokens < self.max_num_seqs:",
  "if self.max_num_batched_tokens < 1:", ["tests/test_config.py"]),
 ("rsd_ray/compiler/memory.py", "if kv < one_seq:", "if kv < 0:"),
 ("rsd_ray/compiler/memory.py", "    if buffers > usable:", "    if False:", ["tests/test_config.py"]),
 ("rsd_ray/interconnect/collectives.py", "[ring] * (2 * (n - 1))", "[ring] * (n - 1)"),
 ("rsd_ray/hardware/power.py", "watts = self.power.max_w if active else self.power.idle_w", "watts = self.power.max_w"),
 ("rsd_ray/report/metrics.py", "np.percentile(ms, PERCENTILES, overwrite_input=True)", "np.percentile(ms, PERCENTILES, overwrite_input=True, method='nearest')"),
 ("rsd_ray/report/metrics.py", "np.count_nonzero(c.flat <= window)", "c.flat.size"),
 ("rsd_ray/report/metrics.py", "/ (c.lengths[several] - 1)", "/ c.lengths[several]"),
 ("rsd_ray/report/metrics.py", "ms.std()", "ms.std(ddof=1)"),
 ("rsd_ray/report/results.py", "rack.host_power_w * rack.servers + rack.tor_power_w", "rack.host_power_w + rack.tor_power_w"),
 ("rsd_ray/report/results.py", "len(cards) * p.card_usd_per_hour", "rack.servers * p.card_usd_per_hour"),
 ("rsd_ray/hardware/power.py", "math.exp(-seconds / self.thermal.tau_s)", "math.exp(-seconds * self.thermal.tau_s)"),
 ("rsd_ray/engine/pricing.py", "step_s(shapes[:, 2]", "step_s(shapes[:, 1]"),
 ("rsd_ray/hardware/costmodel.py", "hdma * device.link.latency_us * 1e-6", "hdma * 0.0"),
 ("rsd_ray/interconnect/collectives.py", "ring = [(group[i], group[(i + 1) % n], 1.0 / n)", "ring = [(group[i], group[(i + 1) % n], 1.0)"),
 ("rsd_ray/compiler/memory.py", "int(kv // (per_token * engine.block_size))", "int(-(-kv // (per_token * engine.block_size)))"),
 ("rsd_ray/report/metrics.py", "np.count_nonzero(c.finish[done] <= window)", "np.count_nonzero(done)"),
 ("rsd_ray/hardware/card.py", "ABORTED_CLOCK if aborted else self.thermal.clock, t", "ABORTED_CLOCK if aborted else 1.0, t"),
 # the engine: each rule broken in its one home (the oracle in tests/ stays right)
 ("rsd_ray/engine/scheduler.py", "before = np.cumsum(lacking, axis=1) - lacking", "before = np.cumsum(lacking, axis=1)"),
 ("rsd_ray/engine/scheduler.py", "t.state[victim] = State.WAITING", "pass", ["tests/test_engine.py"]),
 ("rsd_ray/engine/scheduler.py", "if state == State.PENDING:", "if state == State.WAITING:", ORACLE),
 ("rsd_ray/compiler/program.py", "new * computed + new * (new + 1) // 2", "new * computed + new", ORACLE),
 ("rsd_ray/compiler/program.py", "(sampled & took).sum(axis=1)", "took.sum(axis=1)", ORACLE),
 ("rsd_ray/compiler/program.py", "np.where(took, computed + new, 0)", "np.where(took, computed, 0)", ORACLE),
 ("rsd_ray/engine/scheduler.py", "due[pending[n]] <= clock", "due[pending[n]] < clock"),
 ("rsd_ray/engine/scheduler.py", "(n < lacking and not self.chunked)", "(n < lacking and self.chunked)"),
 ("rsd_ray/engine/scheduler.py", "self.waiting[i].appendleft(victim)", "self.waiting[i].append(victim)"),
 ("rsd_ray/engine/scheduler.py", "t.output[r] >= t.max_tokens[r]", "t.output[r] > t.max_tokens[r]"),
 ("rsd_ray/engine/pricing.py", "pick = t.argmin(axis=1)", "pick = t.argmax(axis=1)"),
 ("rsd_ray/engine/pricing.py", "link_at[:, i] = np.maximum(link_free, compute_free)", "link_at[:, i] = compute_free"),
 ("rsd_ray/engine/pricing.py", "seg_at[:, i] = np.maximum(compute_free, done[j])", "seg_at[:, i] = compute_free"),
 ("rsd_ray/engine/pricing.py", "return segments.sum(axis=1) + coll.sum(axis=1)", "return segments.sum(axis=1)"),
 ("rsd_ray/engine/pricing.py", "at = (rows[:, None], pick, np.arange", "at = (rows[:, None], 0 * pick, np.arange", ORACLE),
 ("rsd_ray/engine/table.py", "times[end:end + m] = self.times[self.offset[r]:self.offset[r] + m]", "pass"),
 ("rsd_ray/engine/scheduler.py", "self.free[i] += t.blocks[r]", "pass"),
 ("rsd_ray/engine/scheduler.py", "t.scheduled[r] = self.now[i]", "t.scheduled[r] = self.now[i] + 1e-6"),
 # serving: each checked by the gateway's tests and a live server (a minute a rule)
 ("rsd_ray/serve/gateway.py", "Submit(k.rid, self.pacer.virtual(k.arrival_wall),", "Submit(k.rid, t0,", SERVE),
 ("rsd_ray/serve/gateway.py", "if not any(healthy) or (s.instance >= 0 and not healthy[s.instance]):", "if False:", SERVE),
 ("rsd_ray/serve/jobs.py", "await asyncio.sleep(delay)", "await asyncio.sleep(0)", SERVE),
 ("rsd_ray/serve/metrics.py", ".inc(record.prompt_len)", ".inc(record.prompt_len + 1)", SERVE),
 ("rsd_ray/serve/text.py", "return max(1, len(self.units(text)))", "return max(1, len(text) // 4)", SERVE),
 ("rsd_ray/rack/host.py", 'aborted = [self.core.abort(c.target, ABORTED) for c in epoch.controls if c.kind == Kind.ABORT]',
  "aborted = []", SERVE),
 ("rsd_ray/rack/controller.py", "i = self.router.route(force, None if force or sub.instance < 0 else sub.instance,",
  "i = self.router.route(force, None,", SERVE),
 # faults
 ("rsd_ray/rack/host.py", "self.groups[self.card_instance.get(card)].set_ambient(card, control.value)", "pass", FAULTS),
 ("rsd_ray/interconnect/topology.py", "self.nominal[name] * percent / 100.0", "self.nominal[name]", FAULTS),
 ("rsd_ray/rack/host.py", "if self.topology.server_of(c) == server]", "if c == server]", FAULTS),
 ("rsd_ray/hardware/card.py", "aborted = self.thermal.temp_c >= self.thermal.thermal.abort_c", "aborted = False", FAULTS),
 ("rsd_ray/rack/faults.py", "while self.pending and self.pending[0].at_s < t_end:",
  "while self.pending and self.pending[0].at_s < t_end - 1.0:", FAULTS),
 # recovery: each checked by the recovery tests and the engines' equality under it
 ("rsd_ray/rack/host.py", "min(link.bandwidth for link in self.topology.load_path(c))",
  "max(link.bandwidth for link in self.topology.load_path(c))", RECOVERY),
 ("rsd_ray/rack/host.py", "if self.recover and kind != Kind.SERVER:", "if self.recover:", RECOVERY),
 ("rsd_ray/rack/host.py", "t + CARD_RESTART_S + load", "t + load", RECOVERY),
 ("rsd_ray/router/__init__.py", "self.healthy[instance] = True", "pass", RECOVERY),
 ("rsd_ray/hardware/card.py", "self.clock_factor, self.sampled_at = 1.0, -1.0\n        self.advance_to(t)",
  "self.advance_to(t)", RECOVERY),
 ("rsd_ray/engine/scheduler.py", "self.run[i] = -1", "pass", RECOVERY),
 ("rsd_ray/engine/core.py", "self.sched.free[k] = self.sched.num_blocks[k]", "pass", RECOVERY),
 ("rsd_ray/report/metrics.py", "flat.astype(np.int64) if bin_s == 1.0", "flat.astype(np.int64) + 1 if bin_s == 1.0", RECOVERY),
 # fidelity: offline runs, bench throughput, the fabric, collectives' fixed cost, engine options, the front end
 ("rsd_ray/rack/controller.py", "route_many(len(subs), force=self.offline)", "route_many(len(subs), force=False)", FIDELITY),
 ("rsd_ray/rack/controller.py", "and not self.offline   # offline", "  # offline", FIDELITY),
 ("rsd_ray/report/metrics.py", "\"output_throughput\": total_out * per_s", "\"output_throughput\": window_tokens / window", FIDELITY),
 ("rsd_ray/report/metrics.py", "- c.arrival.min())", "- 0.0)", FIDELITY),
 ("rsd_ray/interconnect/topology.py", "if self.rack.fabric and a != b", "if False and a != b", FIDELITY),
 ("rsd_ray/interconnect/collectives.py", "(COLLECTIVE_FIXED_S if len(group) > 1 else 0.0)", "0.0", FIDELITY),
 ("rsd_ray/engine/scheduler.py", "if self.reserve and (blocks_to_add(", "if False and (blocks_to_add(", FIDELITY),
 ("rsd_ray/calibration.py", "np.maximum(host, device_s) if self.overlap", "host + device_s if self.overlap", FIDELITY),
 ("rsd_ray/calibration.py", "(V0_TP_STEP_S if driven else 0.0)", "0.0", FIDELITY),
 ("rsd_ray/calibration.py", "+ (V0_HOST_PER_SEQ_S if v0 else 0.0)", "", FIDELITY),
 ("rsd_ray/calibration.py", "+ (V0_TP_PER_SEQ_S if driven else 0.0)", "", FIDELITY),
 ("rsd_ray/calibration.py", "driven = v0 and tp > 1", "driven = v0", FIDELITY),
 ("rsd_ray/compiler/program.py", "kv=2 * kv * kvb * heads_floor", "kv=2 * kv * kvb", FIDELITY),
 ("rsd_ray/compiler/program.py", "ATTENTION_HEADS_FLOOR / (model.num_heads // tp)", "ATTENTION_HEADS_FLOOR / model.num_heads", FIDELITY),
 ("rsd_ray/validation/suite.py", '"input_lens": ins * repeat', '"input_lens": ins', FIDELITY),
 ("rsd_ray/rack/frontend.py", "start = max(sub.arrival, heapq.heappop(self.free_at))",
  "start = sub.arrival + 0 * heapq.heappop(self.free_at)", FIDELITY),
 ("rsd_ray/rack/frontend.py", "+ nbytes / min(l.bandwidth for l in path)", "", FIDELITY),
 ("rsd_ray/rack/ledger.py", "arrival=self.sent_at.get(r.rid, r.arrival)", "arrival=r.arrival", FIDELITY),
 ("rsd_ray/hardware/costmodel.py", "* device.dram_efficiency)", "* 0.85)", FIDELITY),
 # traces, prefix caching, prefix affinity
 ("rsd_ray/engine/prefix_cache.py", "(num_tokens - 1) // self.block_tokens", "num_tokens // self.block_tokens", PREFIX),
 ("rsd_ray/engine/prefix_cache.py", "for h in reversed(held):", "for h in held:", PREFIX),
 ("rsd_ray/engine/prefix_cache.py", "                del self.free[h]", "                self.free.move_to_end(h)", PREFIX),
 ("rsd_ray/engine/prefix_cache.py", "self.free.popitem(last=False)", "self.free.popitem()", PREFIX),
 ("rsd_ray/engine/prefix_cache.py", "            if h not in self.holders:\n                self.holders[h] = 1",
  "            if True:\n                self.holders[h] = 1", PREFIX),
 ("rsd_ray/engine/scheduler.py", "blocks_to_add(computed, n, t.blocks[safe] + t.shared[safe], self.block)",
  "blocks_to_add(computed, n, t.blocks[safe], self.block)", PREFIX),
 ("rsd_ray/engine/scheduler.py", "+ reclaim + sum(map(self._to_finish", "+ sum(map(self._to_finish", PREFIX),
 ("rsd_ray/engine/scheduler.py", "own + reclaim > self.free[i]", "own > self.free[i]", PREFIX),
 ("rsd_ray/engine/scheduler.py", "t.blocks[r] -= len(taken) * cache.size", "pass", PREFIX),
 ("rsd_ray/engine/scheduler.py", "self.caches[i].trim(int(self.free[i]))", "pass", PREFIX),
 # spans and skipped epochs: each equal to stepping every epoch (the oracle runs every epoch, one step at a time)
 ("rsd_ray/engine/core.py", "n[:, None] * (np.arange(width)[None, :] + 1)", "n[:, None] * np.arange(width)[None, :]",
  ORACLE),
 ("rsd_ray/engine/core.py", "& (starts < stop[:, None])", "", ORACLE),
 ("rsd_ray/engine/core.py", "np.cumsum(np.column_stack([clock, took]), axis=1)[:, 1:]",
  "clock[:, None] + np.cumsum(took, axis=1)", ORACLE),
 ("rsd_ray/engine/scheduler.py", ".min(axis=1, initial=most) - 1", ".min(axis=1, initial=most)", ORACLE),
 ("rsd_ray/engine/scheduler.py", "ends[np.repeat(of, steps), j]", "ends[np.repeat(of, steps), 0]", ORACLE),
 ("rsd_ray/engine/scheduler.py", "<= self.free[inst]", "<= self.free[inst] + 10_000", ORACLE),
 ("rsd_ray/engine/scheduler.py", "return np.array([not self.waiting[i]", "return np.array([True or self.waiting[i]", ORACLE),
 ("rsd_ray/engine/core.py", "steps[ask] * self._first_step_times(holding[ask]) * (1.0 - 1e-9)",
  "steps[ask] * self._first_step_times(holding[ask]) * 2.0", ORACLE),
 ("rsd_ray/engine/core.py", "steps * self.host.base_s * (1.0 - 1e-9)", "steps * self.host.base_s * 100.0", ORACLE),
 # the step's arrays: each a cheaper form of one rule, equal to it
 ("rsd_ray/hardware/costmodel.py", "axis=1), self.run_of, axis=1)", "axis=1), 0 * self.run_of, axis=1)"),
 ("rsd_ray/engine/core.py", "self.sent[:] = sent[:, :, self.as_synced]", "self.sent[:, :, self.distinct] = sent", ORACLE),
 ("rsd_ray/engine/table.py", "first + np.cumsum(sizes) - sizes", "first + 0 * sizes", ORACLE),
 ("rsd_ray/engine/scheduler.py", "self.free[i] += t.blocks[ended].sum()", "self.free[i] += t.blocks[ended[1:]].sum()", ORACLE),
 ("rsd_ray/engine/scheduler.py", "self.run[i, len(stay):len(slots)] = -1", "pass", ORACLE),
 ("rsd_ray/workload/synthetic.py", "            if alike and reqs:", "            if reqs:", ["tests/test_sweep.py"]),
 ("rsd_ray/workload/synthetic.py", "reqs.append(reqs[0].replaced(rid=rid))", "reqs.append(reqs[0])", ["tests/test_sweep.py"]),
 ("rsd_ray/router/least_loaded.py", "return int(np.minimum(np.maximum(level - base, 0), cap).sum())",
  "return int(np.maximum(level - base, 0).sum())", ["tests/test_router.py"]),
 ("rsd_ray/router/least_loaded.py", "takes[at_level] += 1", "pass", ["tests/test_router.py"]),
 ("rsd_ray/router/least_loaded.py", "np.lexsort((owner, np.repeat", "np.lexsort((-owner, np.repeat", ["tests/test_router.py"]),
 ("rsd_ray/router/__init__.py", "self.refused += len(picks) < count and not force", "pass", ["tests/test_router.py"]),
 ("rsd_ray/router/__init__.py", "self.open[i] = self.healthy[i] and self.queued[i] < self.limit",
  "self.open[i] = self.healthy[i]", ["tests/test_router.py"]),
 ("rsd_ray/report/columns.py", "within[ends[(ends > 0) & (ends < flat.size)] - 1] = False", "pass"),
 ("rsd_ray/report/columns.py", "self.first[has] = self.flat[starts[has]]", "self.first[has] = self.flat[starts[has] + 1]"),
 ("rsd_ray/engine/table.py", "flat[np.maximum(ends - 1, 0)]", "flat[np.maximum(ends - 2, 0)]"),
 ("rsd_ray/report/saturation.py", "unfinished = int(np.count_nonzero(~c.done[kept]))", "unfinished = 0",
  ["tests/test_saturation.py"]),
 # several Ray hosts over quiet epochs: each rule broken once, against inline on two hosts
 ("rsd_ray/rack/epoch.py", "max(bounds) if quiet == \"empty\" else min(bounds)", "max(bounds)", RAY_HOSTS),
 ("rsd_ray/rack/controller.py", "if not stop or routed or not self.quiet_until > t_end:",
  "if not stop or not self.quiet_until > t_end:", RAY_HOSTS),
 ("rsd_ray/engine/core.py", "pricing = [self.groups[k].pricing for k in inst.tolist()]",
  "pricing = [self.groups[k].ready(self.clock[k]) for k in inst.tolist()]",
  ["tests/test_ray.py::test_a_card_found_dead_by_its_telemetry_is_its_instances_loss_not_its_hosts"]),
 ("rsd_ray/rack/controller.py", "limit = min(limit, self.faults.pending[0].at_s)\n        every = self._telemetry_every(needs, idle=False)",
  "limit = limit\n        every = self._telemetry_every(needs, idle=False)", ORACLE),
 ("rsd_ray/rack/controller.py", 'if self.handoffs or (getattr(self.source, "follows_answers", False) and',
  'if self.handoffs or (False and', ORACLE),
 ("rsd_ray/rack/controller.py", "min(next_arrival(t_end), end - 1e-9)", "end - 1e-9", ORACLE),
 ("rsd_ray/hardware/card.py", "and hottest < limits.throttle_c", "", ORACLE),
 ("rsd_ray/hardware/power.py", "(temp - steady) * exp(s / tau)", "(temp - steady) * exp(s * tau)"),
 ("rsd_ray/hardware/card_group.py", "epoch = grid_epoch(start, self.epoch_s)", "epoch = grid_epoch(start, 10 * self.epoch_s)",
  ["tests/test_card.py"]),
 ("rsd_ray/engine/scheduler.py", "held = 0 if ready else cached // self.block", "held = cached // self.block",
  DISAGGREGATION),
 ("rsd_ray/serve/jobs.py", "hashes = chain_hashes(prompt.units, ctx.hash_block_tokens) if ctx.hash_block_tokens else ()",
  "hashes = ()", PREFIX),
 ("rsd_ray/engine/prefix_cache.py", "blake2b(prev + block,", "blake2b(block,", PREFIX),
 ("rsd_ray/serve/text.py", "out += [(\"header\", role)] * CHAT_TOKENS_PER_MESSAGE + self.units(content)",
  "out += self.units(content)", PREFIX),
 ("rsd_ray/router/prefix_affinity.py", "< IMBALANCE_THRESHOLD", "< 10**9", PREFIX),
 ("rsd_ray/workload/trace_source.py", "(row.t - s.start_s) * s.time_scale", "row.t * s.time_scale", PREFIX),
 ("rsd_ray/workload/trace_readers.py", "if r.t < last:", "if False:", PREFIX),
 ("rsd_ray/router/session_affinity.py", "if eligible[owner]:", "if True:", PREFIX),
 ("rsd_ray/workload/trace_source.py", "session=row.session", "session=\"\"", PREFIX),
 ("rsd_ray/workload/trace_source.py", "r.finish + self.spec.think_s", "r.finish", PREFIX),
 ("rsd_ray/workload/trace_source.py", "(conversation << 20) + j", "j", PREFIX),
 ("rsd_ray/workload/trace_source.py", "turn < len(row.later)", "turn < len(row.later) - 1", PREFIX),
 ("rsd_ray/workload/trace_readers.py", "(sum(len(t) for _, t in texts[:k]) if exchanges else 0)", "0", PREFIX),
 # configuration: pydantic's refusals and the specs' own rules
 ("rsd_ray/config/schema.py", 'ConfigDict(extra="forbid", allow_inf_nan=False)', "ConfigDict(allow_inf_nan=False)", CONFIG),
 ("rsd_ray/config/schema.py", 'ConfigDict(extra="forbid", allow_inf_nan=False)', 'ConfigDict(extra="forbid")', CONFIG),
 ("rsd_ray/config/schema.py", "Int = Annotated[int, Strict()]", "Int = int", CONFIG),
 ("rsd_ray/config/specs.py", "if self.cards_per_server % self.switches_per_server:", "if False:", CONFIG),
 ("rsd_ray/config/specs.py", "if self.epoch_s > self.duration_s:", "if False:", CONFIG),
 ("rsd_ray/config/specs.py", "if self.end_s and self.end_s <= self.start_s:", "if False:", CONFIG),
 ("rsd_ray/config/schema.py", "loc, value, fix = loc + problem.field.split(\".\"), problem.value, problem.fix",
  "value, fix = problem.value, problem.fix", CONFIG),
 ("rsd_ray/sweep/points.py", "out[key] = _merged(out[key], value) if", "out[key] = value if", CONFIG),
 ("rsd_ray/hardware/card.py", "self.thermal.ambient_c += delta_c", "pass", FAULTS),
 # inputs refused before anything runs, and stop signals (issue "Nothing lost")
 ("rsd_ray/config/loader.py", "            if key in seen:", "            if False:", INPUTS),
 ("rsd_ray/config/loader.py", "return str(folder / ref) if", "return ref if", INPUTS),
 ("rsd_ray/cli.py", "        check(trace.format, trace.path, trace.model)", "        pass", INPUTS),
 ("rsd_ray/rack/faults.py", "    if at >= horizon_s:", "    if False:", INPUTS),
 ("rsd_ray/config/specs.py", "fewest_in + fewest_out > max_len", "False", INPUTS),
 ("rsd_ray/workload/synthetic.py", "            self.clipped += clipped", "            pass", INPUTS),
 ("rsd_ray/cli.py", "if getattr(args, dest, None) is not None and not applies(args):", "if False:", INPUTS),
 ("rsd_ray/config/arguments.py", "        with open(target, \"a\"):\n            pass", "        pass", INPUTS),
 ("rsd_ray/signals.py", "if phase is None or phase[0] is None or phase[1]:", "if phase is None or phase[0] is None:",
  INPUTS),
 ("rsd_ray/signals.py", "    if phase[0] is not RECORD:\n        phase[0](reason(signum))", "    pass", INPUTS),
 ("rsd_ray/signals.py", "    return 128 + signum if signum is not None else default", "    return default", INPUTS),
 ("rsd_ray/report/saturation.py", "if refused or unfinished:", "if refused:", INPUTS),
 ("rsd_ray/report/saturation.py", "max(BACKLOG_SHARE * arrived, NOISE_SIGMAS * (2 * at_mid) ** 0.5)",
  "BACKLOG_SHARE * arrived", INPUTS),
 ("rsd_ray/report/saturation.py", "(arrival <= t) & (served > t)", "(arrival <= t)", INPUTS),
 ("rsd_ray/serve/gateway.py", "if self.lag_s > MAX_LAG_S:", "if False:", ["tests/test_gateway.py"]),
 # serving like vLLM: the metric set, the request fields, the delays, the now-values, the idle rack
 ("rsd_ray/serve/metrics.py", "if ticket.head:", "if True:", SERVE_VLLM),
 ("rsd_ray/serve/metrics.py", ".observe(shape[1])", ".observe(shape[0])", SERVE_VLLM),
 ("rsd_ray/serve/metrics.py", "at(self.prefill).observe(times[0] - record.scheduled)",
  "at(self.prefill).observe(times[0] - record.arrival)", SERVE_VLLM),
 ("rsd_ray/serve/protocol.py", "lambda v: v is not None and v > 1", "lambda v: v is not None and v > 2", SERVE_VLLM),
 ("rsd_ray/serve/jobs.py", "for c in self.choices if c.counts_prompt)", "for c in self.choices)", SERVE_VLLM),
 ("rsd_ray/serve/jobs.py", "return [(t, None if k == 0 else -k)", "return [(t, -k)", SERVE_VLLM),
 ("rsd_ray/hardware/card.py", "utilisation=min(1.0, max(0.0, busy / span))", "utilisation=now.utilisation",
  ["tests/test_gateway.py"]),
 ("rsd_ray/serve/gateway.py", "return self.lag_s + max(self.delivery.now_s, self.loop_lag.now_s)",
  "return self.lag_s", ["tests/test_gateway.py"]),
 ("rsd_ray/serve/gateway.py", "reached = min(reached, min(self.pacer.virtual(k.arrival_wall) for k in self.incoming))",
  "pass", ["tests/test_gateway.py"]),
 ("rsd_ray/functional/split.py", "if not live or halt():", "if not live:", ["tests/test_functional.py"]),
 ("rsd_ray/validation/suite.py", "    for row in rows:\n        if signals.first_received():\n            break",
  "    for row in rows:", INPUTS),
 # number formats: quantised weights, their compute type, the KV cache's width
 ("rsd_ray/compiler/formats.py", "+ n_out * groups * SCALE_BYTES", "", FORMATS),
 ("rsd_ray/compiler/program.py", "kv=2 * kv * kvb * heads_floor)", "kv=2 * kv * act * heads_floor)", FORMATS),
 ("rsd_ray/compiler/program.py", "dequant = DEQUANT_OPS_PER_WEIGHT if weight_only(model) else 0.0", "dequant = 0.0", FORMATS),
 ("rsd_ray/hardware/costmodel.py", 'or dtype == "fp32" else "fp16"', 'or dtype == "fp32" else "int8"', FORMATS),
 ("rsd_ray/compiler/shard.py", "    if shard.linear:", "    if False:", FORMATS),
 # mixture of experts: the all-to-all's flows, the experts a step reads, each card's share of the pairs
 ("rsd_ray/interconnect/collectives.py", 'flows if kind == "dispatch" else [(b, a, f) for a, b, f in flows]', "flows", MOE),
 ("rsd_ray/interconnect/collectives.py", "(a, b, share[b] / n)", "(a, b, share[a] / n)", MOE),
 ("rsd_ray/compiler/experts.py", "** tokens[:, None])", "** 1.0)", MOE),
 ("rsd_ray/hardware/costmodel.py", "        if self.shares is not None:\n            memory +=", "        if False:\n            memory +=", MOE),
 ("rsd_ray/compiler/program.py", "_moe_blocks(model, tp, routing[rank],", "_moe_blocks(model, tp, routing[0],", MOE),
 ("rsd_ray/config/specs.py", "        if self.num_experts % tp:", "        if False:", MOE),
 # functional mode: a router's weights, a card's own experts, INT4 nibbles
 ("rsd_ray/functional/kernels.py", "return picks, chosen / chosen.sum(axis=1, keepdims=True)", "return picks, chosen", FUNCTIONAL),
 ("rsd_ray/functional/card_shard.py", "picks == self.rank * local + j", "picks == j", FUNCTIONAL),
 ("rsd_ray/functional/checkpoint.py", "(packed >> 4).astype(np.int16) - 8", "(packed >> 4).astype(np.int16) - 7", FUNCTIONAL),
 # service classes: the priority policy's queue and victim, the classes' shares
 ("rsd_ray/engine/scheduler.py", "key=lambda r: (t.priority[r], t.arrival[r])", "key=lambda r: (t.arrival[r], t.priority[r])", CLASSES),
 ("rsd_ray/engine/scheduler.py", "return keys.index(max(keys))", "return n - 1", CLASSES),
 ("rsd_ray/engine/scheduler.py", "                    budget += n_of.pop(slot)\n", "", CLASSES),
 ("rsd_ray/workload/classes.py", "size=len(new), p=self.shares)", "size=len(new))", CLASSES),
 # disaggregated prefill and decode: the KV move on the links, the prompt handed over, each pool's work
 ("rsd_ray/interconnect/transfers.py", "start = max([ready] + [self.free_at[link.name] for link in path])",
  "start = ready", DISAGGREGATION),
 ("rsd_ray/interconnect/transfers.py", "nbytes / min(link.bandwidth for link in path)",
  "nbytes / max(link.bandwidth for link in path)", DISAGGREGATION),
 ("rsd_ray/interconnect/transfers.py", "return done + sum(link.latency for link in path)", "return done", DISAGGREGATION),
 ("rsd_ray/rack/handoff.py", "(end - start) * (k + 1) / self.layers", "(end - start) * k / self.layers", DISAGGREGATION),
 ("rsd_ray/rack/handoff.py", "tokens = sub.prompt_len - 1", "tokens = 0", DISAGGREGATION),
 ("rsd_ray/rack/handoff.py", "return sub.replaced(max_tokens=1, token_times=())", "return sub", DISAGGREGATION),
 ("rsd_ray/rack/handoff.py", "sub.replaced(max_tokens=accepted.max_tokens) if accepted else sub",
  "accepted or sub", DISAGGREGATION),
 ("rsd_ray/engine/scheduler.py", "((), ready, 0) if ready else", "((), 0, 0) if ready else", DISAGGREGATION),
 ("rsd_ray/router/__init__.py", "random.Random(seed + k)) for k in range(pools)]",
  "random.Random(seed + k)) for k in range(pools)][:1] * pools", DISAGGREGATION),
 # a prefill pool of its own: placed first, stepped by its engine, its KV read from the cards that hold it
 ("rsd_ray/compiler/placement.py", "taken = {c for g in first.groups[:n] for c in g}", "taken = set()", DISAGGREGATION),
 ("rsd_ray/rack/host.py", "engine, kv_bytes = pool.engine, pool.memory.kv_bytes_per_token",
  "engine, kv_bytes = self.plan.pools[-1].engine, pool.memory.kv_bytes_per_token", DISAGGREGATION),
 ("rsd_ray/compiler/shard.py", "own = j * prefill_tp // decode_tp", "own = 0", DISAGGREGATION),
 ("rsd_ray/compiler/shard.py", "return range(first, (rank + 1) * h // tp) if tp <= h",
  "return range(first, (rank + 1) * h // tp) if True", DISAGGREGATION),
 ("rsd_ray/engine/core.py", "boundary = min(core._leap(later, stop) for core in cores)",
  "boundary = max(core._leap(later, stop) for core in cores)", DISAGGREGATION),
 # KV offload to host memory: what it keeps, when a fetched prefix is back, what the links carry
 ("rsd_ray/engine/prefix_cache.py", "if len(self.host) > self.host_blocks:", "if False:", OFFLOAD),
 ("rsd_ray/engine/prefix_cache.py", "self.host_hits += len(out) * self.block_tokens", "pass", OFFLOAD),
 ("rsd_ray/engine/scheduler.py", "t.due[r] = self.loader(i, len(back) * cache.block_tokens, float(self.now[i]))",
  "t.due[r] = float(self.now[i])", OFFLOAD),
 ("rsd_ray/engine/scheduler.py", "self.caches[i].promote(self.loading.pop(r))", "self.loading.pop(r)", OFFLOAD),
 ("rsd_ray/rack/host.py", "self.offload.load(c, tokens * kv_bytes_per_token, t)", "self.offload.load(c, tokens, t)",
  OFFLOAD),
 ("rsd_ray/engine/core.py", "stuck = inst[~stepping & (preempted == 0) & held]", "stuck = inst[~stepping & (preempted == 0)]",
  OFFLOAD),
 ("rsd_ray/rack/host.py", "for name, nbytes in (self.offload.bytes.items() if self.offload else ()):",
  "for name, nbytes in ():", OFFLOAD),
 ("rsd_ray/rack/controller.py", "                self.topology.degrade(c.name, c.value)\n", "                pass\n",
  ["tests/test_disaggregation.py::test_a_disaggregated_run_on_ray_equals_inline",
   "tests/test_ray.py::test_a_degraded_link_on_the_gateways_path_is_the_same_on_ray_and_inline"]),
]
HANG_S = 300
TESTS = ["tests/test_rules.py", "tests/test_card.py", "tests/test_engine_oracle.py"]


SAMPLE = (
    "return (tokens + (block_size - 1)) // block_size", "return np.max([cost.segments(shapes, factor) for", "np.maximum(compute, memory)",
    "step_s(shapes[:, 2]", "pick = t.argmin(axis=1)", "link_at[:, i] = np.maximum(link_free, compute_free)",
    "new * computed + new * (new + 1) // 2", "before = np.cumsum(lacking, axis=1) - lacking",
    "self.waiting[i].appendleft(victim)", "(n < lacking and not self.chunked)", "[ring] * (2 * (n - 1))",
    "if kv < one_seq:", "ttft = c.first[done] - c.arrival[done]", "math.exp(-seconds / self.thermal.tau_s)",
    "own + reclaim > self.free[i]", "for h in reversed(held):",
)
"""The fixed sample CI runs (``--sample``): one mutant of each core rule, each caught by the fast tier's
tests within the time CI gives it."""


def check(entries) -> int:
    """Every entry's text is in its file exactly once (the list is true to the code), and every ``SAMPLE``
    text names an entry (a sample that names none would shrink without a word)."""
    stale = [(path, old) for path, old, *_ in entries if (ROOT / path).read_text().count(old) != 1]
    for path, old in stale:
        print(f"STALE    {path}: {old!r}")
    unnamed = [text for text in SAMPLE if text not in {old for _, old, *_ in entries}]
    for text in unnamed:
        print(f"SAMPLE   names no rule: {text!r}")
    print(f"{len(entries) - len(stale)} of {len(entries)} rules match their code")
    return 1 if stale or unnamed else 0


def main(args: list[str]) -> int:
    only = args[args.index("--only") + 1] if "--only" in args else ""
    tests = [a for a in args if a.startswith("tests/")]          # not the --only text ("host.py" is a path)
    entries = [w for w in WRONG if only in w[0] and ("--sample" not in args or w[1] in SAMPLE)]
    stale = check(WRONG)
    if stale or "--check" in args:
        return stale
    survived = 0
    for path, old, new, *own in entries:
        source = ROOT / path
        text = source.read_text()
        source.write_text(text.replace(old, new))
        try:
            res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                  *(tests or (own[0] if own else TESTS))],
                                 capture_output=True, text=True, cwd=ROOT, timeout=HANG_S)
            failed = [line for line in res.stdout.splitlines() if line.startswith("FAILED")][:1]
            code = res.returncode
        except subprocess.TimeoutExpired:         # a wrong rule that makes the run loop forever is caught too
            failed, code = [f"hung for {HANG_S} s"], 1
        finally:
            source.write_text(text)
        survived += code != 1                      # 1: a test failed; 0: none did; others: pytest could not run
        verdict = {0: "SURVIVED ", 1: "caught   "}.get(code, f"ERROR {code} ")
        print(verdict + f"{path}: {old!r} -> {new!r}  {failed or res.stdout[-300:]}", flush=True)
    print(f"mutation score: {len(entries) - survived} of {len(entries)} caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
