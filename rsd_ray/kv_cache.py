"""Paged KV cache of one instance: blocks of ``block_size`` tokens, counted.

::

    request:  [prompt ......................][out...]
    blocks:   [b0 ][b1 ][b2 ][b3 ][b4 ][b5 ]         ceil(computed / block_size)
              [shared  ][own ...............]        shared: cached prompt blocks it holds
    pool:     num_blocks from the memory plan; free = num_blocks − Σ own − held cached blocks

Without prefix caching a block belongs to one request, so counts are enough. With it
(``rsd_ray.prefix_cache``) a request's leading blocks may be cached ones, held with others.
"""
from __future__ import annotations

from rsd_ray.request import Request


class KVCache:
    def __init__(self, num_blocks: int, block_size: int, prefix=None):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free_blocks = num_blocks
        self.prefix = prefix                      # a PrefixCache, or None (prefix caching off)

    def blocks_needed(self, req: Request, new_tokens: int) -> int:
        return max(0, -(-(req.num_computed + new_tokens) // self.block_size) - req.blocks - req.shared)

    def can_allocate(self, req: Request, new_tokens: int) -> bool:
        return self.blocks_needed(req, new_tokens) <= self.free_blocks

    def allocate(self, req: Request, new_tokens: int) -> None:
        need = self.blocks_needed(req, new_tokens)
        assert need <= self.free_blocks, "allocate() without can_allocate()"
        self.free_blocks -= need
        req.blocks += need

    def free(self, req: Request) -> None:
        self.free_blocks += req.blocks
        req.blocks = 0
        if req.pinned:
            self.free_blocks += self.prefix.release(req.pinned)
            req.pinned, req.shared = [], 0

    # --- prefix caching ---------------------------------------------------------------------------------
    def cached_prefix(self, req: Request) -> tuple[tuple[int, ...], int, int]:
        """A waiting request's cached leading blocks: (hashes, tokens, KV blocks pinning them takes)."""
        if not (self.prefix and req.hash_ids):
            return (), 0, 0
        hits, reclaim = self.prefix.lookup(req.hash_ids, req.prompt_len, req.num_tokens, self.free_blocks)
        return hits, len(hits) * self.prefix.block_tokens, reclaim

    def pin(self, req: Request, hits: tuple[int, ...], reclaim: int) -> None:
        """The request joins holding its cached blocks: they count as computed."""
        if self.prefix:
            self.prefix.pin(hits, req.num_tokens)
            self.free_blocks -= reclaim
            req.pinned, req.shared = list(hits), len(hits) * self.prefix.size
            req.num_computed = len(hits) * self.prefix.block_tokens

    def cache_computed(self, req: Request, before: int) -> None:
        """The request's computed tokens went from ``before`` to ``num_computed``: its full prompt blocks
        among them are cached (held by it, so its own blocks shrink by as many)."""
        if self.prefix and req.hash_ids and before < req.prompt_len:
            b = self.prefix.block_tokens
            taken = self.prefix.insert(req.hash_ids, before // b, min(req.num_computed, req.prompt_len) // b)
            req.pinned += taken
            req.blocks -= len(taken) * self.prefix.size
            req.shared += len(taken) * self.prefix.size

    def trim(self) -> None:
        """Allocations took free blocks: cached ones nobody holds may have been overwritten."""
        if self.prefix:
            self.prefix.trim(self.free_blocks)

    @property
    def usage(self) -> float:
        return 1.0 - self.free_blocks / self.num_blocks if self.num_blocks else 0.0
