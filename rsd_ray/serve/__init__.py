"""The rack as a service: OpenAI-compatible HTTP, gRPC and Prometheus in front of a paced controller."""
