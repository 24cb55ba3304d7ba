"""KV block arithmetic: how many fixed-size blocks a sequence's tokens take (vLLM's paged KV cache).

Every rule that asks for blocks — a running request's next tokens, a waiting one joining from its cached
prefix, ``admission: reserve``'s whole-length check — asks here::

    block_size 16:   tokens 1..16 → 1 block, 17..32 → 2, ...      (a partial block is a whole block)
"""
from __future__ import annotations


def blocks_for(tokens, block_size: int):
    """Blocks that hold ``tokens`` tokens (ints or integer arrays): ceil(tokens / block_size)."""
    return (tokens + (block_size - 1)) // block_size


def blocks_to_add(computed, new, held, block_size: int):
    """New blocks a sequence with ``computed`` tokens, holding ``held`` blocks, takes for ``new`` more."""
    return blocks_for(computed + new, block_size) - held
