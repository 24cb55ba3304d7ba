"""Where requests come from: synthetic streams (``synthetic``) and production traces (Azure LLM
inference, Mooncake, BurstGPT, ShareGPT: ``trace_readers``, replayed by ``trace_source``)."""
