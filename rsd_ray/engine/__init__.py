"""The engine of a host's instances, vLLM's rules over arrays: requests as a table (``table``), KV block
arithmetic (``kv_blocks``) and the prefix cache (``prefix_cache``), the scheduler (``scheduler``), the price
of a step — its collectives, layer pipelining and host time (``pricing``) — and the core that steps every
instance together (``core``)."""
