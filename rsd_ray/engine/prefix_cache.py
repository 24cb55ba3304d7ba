"""Automatic prefix caching of one instance, as vLLM's: computed prompt blocks are kept, shared and reused.

A prompt is a chain of block hashes (a trace's ``hash_ids``: Mooncake's are 512-token blocks, each id
naming its block *and* everything before it, so equal leading ids mean an equal prefix; a served prompt's
are ``chain_hashes`` of its tokens). A cached block is
``hash_block_tokens`` of KV, ``size`` of the engine's KV blocks, and lives in the instance's one pool::

    holders   {h1: 2, h2: 2, h7: 1, h4: 0, h5: 0}     requests holding each cached block
    free      [h4, h5]                                 holders = 0, least recently freed first
    pool      num_blocks = own blocks + size·(held cached) + free  (free counts the cached free blocks)

- **Lookup** (a waiting request about to join): the leading hashes of its prompt found in the cache, whole
  blocks only and at most ``num_tokens − 1`` tokens (one is always computed and sampled from); they start
  the request with those tokens computed.
- **Pin**: the request holds them (reference-counted); a free one leaves the free pool.
- **Insert**: a full prompt block the request has just computed becomes cached, held by it (its own KV
  block changes hands, memory unchanged); a block another request cached first stays its own.
- **Release** (finished, preempted, aborted): holders − 1; blocks nobody holds go free, tail first, so a
  prompt's leading blocks are the last of it to go.
- **Trim**: free cached blocks are free memory; when allocations leave fewer free blocks than that, the
  least recently freed are overwritten (evicted). Blocks someone holds are never evicted.

Counters use vLLM's meaning: ``prefix_cache_queries`` / ``prefix_cache_hits`` in tokens, counted on every
admission. Simplifications: only prompt blocks are hashed (a trace names nothing else), and a block is
cached when the step that computes it ends.

**Host memory** (``engine.kv_offloading_size``; vLLM's CPU offloading, LMCache's local CPU cache): an evicted
block is kept in the host's DRAM, up to ``host_blocks``, least recently stored dropped first. A waiting
request whose cached prefix goes on in host memory has those blocks brought back over the host link
(``fetch``; the scheduler asks its loader when they have arrived); they come back as free cached blocks
(``promote``; one dropped from host memory meanwhile is not), which the request then pins as any cached
block. ``host_hits`` (tokens fetched) and ``stored`` (blocks put in host memory) count it; a card's
restart leaves host memory as it was.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict


def chain_hashes(tokens, block_tokens: int) -> tuple[int, ...]:
    """The chained hashes of a prompt's full ``block_tokens`` blocks (any hashable tokens: ids or words), as
    vLLM's: each block's hash covers its tokens and the hash before it, so equal hashes mean an equal prefix.
    A stable digest (not Python's salted ``hash``) keeps them the same in every process."""
    out, prev = [], b""
    for j in range(len(tokens) // block_tokens):
        block = repr(tuple(tokens[j * block_tokens:(j + 1) * block_tokens])).encode()
        prev = hashlib.blake2b(prev + block, digest_size=8).digest()
        out.append(int.from_bytes(prev, "little") >> 1)
    return tuple(out)


class PrefixCache:
    def __init__(self, block_tokens: int, size: int, host_blocks: int = 0):
        self.block_tokens, self.size = block_tokens, size   # tokens per hash block; KV blocks per hash block
        self.holders: dict[int, int] = {}
        self.free: OrderedDict[int, None] = OrderedDict()
        self.queries = self.hits = 0
        self.host_blocks = host_blocks                       # hash blocks host memory holds
        self.host: OrderedDict[int, None] = OrderedDict()    # evicted to host memory, least recently stored first
        self.host_hits = self.stored = 0

    def lookup(self, hash_ids: tuple[int, ...], prompt_len: int, num_tokens: int,
               free_blocks: int) -> tuple[tuple[int, ...], int]:
        """The prompt's leading cached blocks, and the KV blocks pinning them takes out of the free pool."""
        self.trim(free_blocks)
        limit = min(len(hash_ids), prompt_len // self.block_tokens, (num_tokens - 1) // self.block_tokens)
        hits = []
        for h in hash_ids[:limit]:
            if h not in self.holders:
                break
            hits.append(h)
        return tuple(hits), self.size * sum(1 for h in hits if not self.holders[h])

    def pin(self, hits: tuple[int, ...], num_tokens: int) -> None:
        for h in hits:
            if not self.holders[h]:
                del self.free[h]
            self.holders[h] += 1
        self.queries += num_tokens
        self.hits += len(hits) * self.block_tokens

    def insert(self, hash_ids: tuple[int, ...], first: int, end: int) -> list[int]:
        """Prompt blocks ``first`` to ``end`` were just computed: the ones not cached yet become cached,
        held by the request that computed them; returns those."""
        taken = []
        for h in hash_ids[first:end]:
            if h not in self.holders:
                self.holders[h] = 1
                taken.append(h)
        return taken

    def release(self, held: list[int]) -> int:
        """A request lets go of its cached blocks; returns the KV blocks that went free."""
        freed = 0
        for h in reversed(held):
            self.holders[h] -= 1
            if not self.holders[h]:
                self.free[h] = None
                freed += self.size
        return freed

    def trim(self, free_blocks: int) -> None:
        """Evict the least recently freed blocks until the free cached ones fit in ``free_blocks``."""
        while self.size * len(self.free) > free_blocks:
            h, _ = self.free.popitem(last=False)
            del self.holders[h]
            if self.host_blocks:                             # kept in host memory
                self.host[h] = None
                self.host.move_to_end(h)
                self.stored += 1
                if len(self.host) > self.host_blocks:
                    self.host.popitem(last=False)

    def fetch(self, hash_ids: tuple[int, ...], first: int, limit: int) -> tuple[int, ...]:
        """The prompt's blocks from ``first`` on (its cached prefix's end) found in host memory, in a row,
        at most up to block ``limit``: they are brought back (counted in ``host_hits``)."""
        out = []
        for h in hash_ids[first:limit]:
            if h not in self.host:
                break
            out.append(h)
        self.host_hits += len(out) * self.block_tokens
        return tuple(out)

    def promote(self, hashes: tuple[int, ...]) -> None:
        """Blocks brought back from host memory: cached on the cards again, free (a request pins them next)."""
        for h in hashes:
            if h in self.host and h not in self.holders:
                del self.host[h]
                self.holders[h] = 0
                self.free[h] = None

    def clear(self) -> None:
        """The instance lost its KV (a restarted card): nothing is cached; counters are kept."""
        self.holders.clear()
        self.free.clear()


def make_caches(engine, count: int, host_blocks: int = 0) -> list | None:
    """One cache per instance when ``engine.enable_prefix_caching``, else None; ``host_blocks``: the hash
    blocks each instance's host memory keeps (``engine.kv_offloading_size``)."""
    if not engine.enable_prefix_caching:
        return None
    return [PrefixCache(engine.hash_block_tokens, engine.hash_block_tokens // engine.block_size, host_blocks)
            for _ in range(count)]


def host_blocks(engine, kv_bytes_per_token: float, tp: int) -> int:
    """Hash blocks ``engine.kv_offloading_size`` GiB of host memory hold (an instance's every card's share)."""
    return int(engine.kv_offloading_size * 1024 ** 3 // (engine.hash_block_tokens * kv_bytes_per_token * tp))
