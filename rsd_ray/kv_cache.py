"""Paged KV cache of one instance: blocks of ``block_size`` tokens, counted.

::

    request:  [prompt ......................][out...]
    blocks:   [b0 ][b1 ][b2 ][b3 ][b4 ][b5 ]         ceil(computed / block_size)
    pool:     num_blocks from the memory plan; free = num_blocks − Σ held

Without prefix caching a block belongs to one request, so counts are enough.
"""
from __future__ import annotations

from rsd_ray.request import Request


class KVCache:
    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free_blocks = num_blocks

    def blocks_needed(self, req: Request, new_tokens: int) -> int:
        return max(0, -(-(req.num_computed + new_tokens) // self.block_size) - req.blocks)

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

    @property
    def usage(self) -> float:
        return 1.0 - self.free_blocks / self.num_blocks if self.num_blocks else 0.0
