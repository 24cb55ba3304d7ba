"""The vectorised engine: a host's instances as arrays, stepped together (``VectorEngine``)."""
from rsd_ray.vector.engine import VectorEngine

__all__ = ["VectorEngine"]
