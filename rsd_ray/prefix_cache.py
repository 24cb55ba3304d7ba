"""Automatic prefix caching of one instance, as vLLM's: a prompt's leading blocks already in the cache are
not computed again.

A prompt is a chain of block hashes (a trace's ``hash_ids``: Mooncake's are 512-token blocks, each id
naming its block *and* everything before it, so equal leading ids mean an equal prefix). On admission a
request looks its chain up: the leading ids found are hits (``hash_block_tokens`` tokens each, at most
prompt − 1 so one token is always computed and sampled from), the rest is prefilled; then its whole chain
is in the cache, most recently used. Capacity is the instance's KV blocks counted in hash blocks; beyond
it the least recently used blocks are evicted.

Simplifications (documented, not hidden): a hit's blocks are still charged to the request's KV (sharing
does not save memory here, only compute); a prompt's blocks enter the cache when it is admitted, not when
its prefill ends; a preempted request recomputes from scratch. Counters use vLLM's meaning:
``prefix_cache_queries`` / ``prefix_cache_hits`` in tokens.
"""
from __future__ import annotations

from collections import OrderedDict


class PrefixCache:
    def __init__(self, capacity_blocks: int, block_tokens: int):
        self.capacity, self.block_tokens = max(1, capacity_blocks), block_tokens
        self.blocks: OrderedDict[int, None] = OrderedDict()     # hash → None, least recently used first
        self.queries = self.hits = 0

    def admit(self, hash_ids: tuple[int, ...], prompt_len: int) -> int:
        """Tokens of this prompt already cached (the request starts with them computed)."""
        found = 0
        for h in hash_ids:
            if h not in self.blocks:
                break
            found += 1
        hit = min(found * self.block_tokens, prompt_len - 1)
        for h in hash_ids:
            self.blocks[h] = None
            self.blocks.move_to_end(h)
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
        self.queries += prompt_len
        self.hits += hit
        return hit

    def clear(self) -> None:
        """The instance lost its KV (a restarted card): nothing is cached; counters are kept."""
        self.blocks.clear()


def make_caches(engine, num_blocks: int, count: int) -> list | None:
    """One cache per instance when ``engine.enable_prefix_caching``, else None."""
    if not engine.enable_prefix_caching:
        return None
    capacity = num_blocks * engine.block_size // engine.hash_block_tokens
    return [PrefixCache(capacity, engine.hash_block_tokens) for _ in range(count)]
