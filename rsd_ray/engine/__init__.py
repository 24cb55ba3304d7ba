"""The engine of a host's instances, vLLM's rules over arrays: requests as a table (``table``), KV block
arithmetic (``kv_blocks``) and the prefix cache (``prefix_cache``), the scheduler (``scheduler``), and the
core that steps every instance together and prices its steps (``core``)."""
