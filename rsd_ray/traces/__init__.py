"""Production traces as request sources: Azure LLM inference, Mooncake, BurstGPT and ShareGPT."""
