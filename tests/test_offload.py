"""KV offload to host memory (``engine.kv_offloading_size``): evicted prefix blocks kept in the host's DRAM,
least recently stored dropped first; a request whose prefix goes on there waits for those blocks to come
back over the host link, then joins with them cached; the load's time from the path's links, by hand."""
import pytest

from rsd_ray.compiler import compile_plan
from rsd_ray.config import ConfigError, load_run
from rsd_ray.engine.prefix_cache import PrefixCache, host_blocks
from rsd_ray.interconnect.topology import Topology
from rsd_ray.rack.executor import host_setups
from rsd_ray.rack.host import Host
from rsd_ray.report.results import build
from rsd_ray.rack.controller import Controller
from tests.one_instance import OneInstance
from tests.test_prefix import shared_prefix_trace


def test_evicted_blocks_go_to_host_memory_least_recently_stored_dropped_first():
    """Three free cached blocks (hash blocks of 2 KV blocks) evicted to make room, into a host memory of
    two: the oldest is dropped; the chain found there starts where the cards' cache ended; brought back,
    a block is a free cached block again."""
    cache = PrefixCache(block_tokens=32, size=2, host_blocks=2)
    for h in (1, 2, 3):
        cache.insert((h,), 0, 1)
    cache.release([1, 2, 3])                     # free, tail first: 3, 2, 1 is the eviction order
    cache.trim(0)
    assert list(cache.host) == [2, 1] and cache.stored == 3 and not cache.holders
    assert cache.fetch((1, 2, 3), 0, 3) == (1, 2) and cache.host_hits == 64
    assert cache.fetch((9, 1, 2), 1, 3) == (1, 2) and cache.fetch((9, 1), 0, 2) == ()
    cache.promote((1, 2))
    assert cache.holders == {1: 0, 2: 0} and list(cache.free) == [1, 2] and not cache.host


def test_a_request_waits_for_its_prefix_from_host_memory_then_joins_with_it_cached():
    """A 100-token prompt of three cached hash blocks (96 tokens) evicted to host memory: the next request
    with that prefix leaves the queue until its loader says the 96 tokens are back (t + 96 ms here), then
    joins first in line with them computed and computes the 4 tokens left."""
    engine = load_run(None, engine={"block_size": 16, "max_num_seqs": 4, "max_num_batched_tokens": 256,
                                    "enable_prefix_caching": True, "hash_block_tokens": 32,
                                    "kv_offloading_size": 1.0}).engine
    asked = []

    def loader(i, tokens, t):
        asked.append((i, tokens, t))
        return t + tokens * 1e-3
    one = OneInstance(engine, 64, host_blocks=8, loader=loader)
    one.add(1, prompt=100, max_tokens=1, hash_ids=(11, 12, 13))
    one.update(one.schedule(), 0.01)
    one.cache.trim(0)                            # memory needed elsewhere: its blocks go to host memory
    assert set(one.cache.host) == {11, 12, 13}
    one.add(2, prompt=100, max_tokens=4, hash_ids=(11, 12, 13), arrival=1.0)
    assert one.schedule().scheduled == [] and asked == [(0, 96, 1.0)]
    one.sched.admit_arrived(0, 1.05)
    assert one.schedule().scheduled == []                  # not back yet
    one.sched.admit_arrived(0, 1.1)
    assert one.schedule().scheduled == [(2, 4)]
    assert int(one.table.computed[one.rows[2]]) == 96 and one.cache.hits == 96 and one.cache.host_hits == 96


def test_loading_from_host_memory_takes_the_switch_uplink_card_after_card():
    """Mini rack, Llama 3 8B at TP 2 (65,536 KV bytes a token a card): 1,024 tokens back to instance 0 (cards
    0 and 1 under switch sw0.0) are 64 MiB a card over host0 → sw0.0 (PCIe Gen5 x16, 51.2 GB/s) → card,
    the uplink shared: 2 × 67,108,864 / 51.2e9 s + 2 hops of 1 µs = 2,623.44 µs."""
    spec = load_run(None, rack="mini", model="llama3-8b", tp=2,
                    engine={"enable_prefix_caching": True, "kv_offloading_size": 8.0})
    topology = Topology(spec.rack, spec.device)
    plan = compile_plan(spec, topology)
    host = Host.local(spec, plan, host_setups(spec, topology, plan)[:1], topology)
    assert plan.memory.kv_bytes_per_token == 65536
    assert host.core.sched.loader(0, 1024, 1.0) == pytest.approx(1.0 + 2 * 67108864 / 51.2e9 + 2e-6, rel=1e-12)
    assert host.offload.bytes["host0->sw0.0"] == 2 * 67108864
    assert host_blocks(spec.engine, 65536, 2) == 8 * 1024 ** 3 // (512 * 65536 * 2) == 128


def test_host_memory_raises_the_hit_rate_and_its_loads_are_on_the_links(tmp_path):
    """A shared-prefix trace on a KV cache too small to keep its documents: with 16 GiB of host memory an
    instance the cards find far more of their prompts cached (an idle instance's only request may leave to
    fetch its prefix: the instance waits for it, it is not stuck); every token brought back crossed its
    host's switch uplink (each of the instance's two cards its share)."""
    path = shared_prefix_trace(tmp_path / "mc.jsonl", requests=400, docs=40, rate=2.0)
    docs = []
    for size in (0.0, 16.0):
        spec = load_run(None, rack="mini", model="llama3-8b", tp=2, duration_s=200.0,
                        workload=f"trace:mooncake:{path}", router={"policy": "round_robin"},
                        engine={"enable_prefix_caching": True, "num_blocks_override": 1200,
                                "kv_offloading_size": size})
        docs.append(build(Controller(spec).run()))
    without, with_host = docs
    assert with_host["status"] == "completed" and with_host["requests"]["completed"] == without["requests"]["completed"]
    assert with_host["summary"]["prefix_cache_hit_rate"] > 5 * without["summary"]["prefix_cache_hit_rate"]
    assert with_host["summary"]["p99_ttft_ms"] < without["summary"]["p99_ttft_ms"]
    assert "kv_offload_hits" not in without["summary"] and with_host["summary"]["kv_offload_hits"] > 0
    first = with_host["instances"][0]                       # instance 0: cards 0, 1 under sw0.0
    links = {link["link"]: link["bytes"] for link in with_host["links"]}
    assert links["host0->sw0.0"] == first["kv_offload_hits"] * 65536 * 2 > 0


def test_host_memory_is_for_the_prefix_cache():
    with pytest.raises(ConfigError, match="kv_offloading_size.*enable_prefix_caching"):
        load_run(None, engine={"kv_offloading_size": 2.0})


@pytest.mark.slow
def test_host_memory_on_ray_equals_inline(ray_session, tmp_path):
    """Each host actor keeps its own instances' host memory and prices their loads on its own links: every
    figure and token time equal inline's."""
    from tests.conftest import with_token_times
    from tests.test_ray import comparable
    path = shared_prefix_trace(tmp_path / "mc.jsonl", requests=120, docs=20, rate=2.0)
    spec = load_run(None, rack="mini", model="llama3-8b", tp=2, duration_s=60.0, workload=f"trace:mooncake:{path}",
                    router={"policy": "round_robin"},
                    engine={"enable_prefix_caching": True, "num_blocks_override": 1200, "kv_offloading_size": 16.0})
    docs = []
    for executor in ("ray", "inline"):
        outcome = Controller(spec, executor=executor).run()
        docs.append(with_token_times(build(outcome), outcome))
    assert docs[0]["emulator"]["executor"] == "ray" and docs[0]["summary"]["kv_offload_hits"] > 0
    assert comparable(docs[0]) == comparable(docs[1])
