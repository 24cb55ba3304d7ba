"""Functional mode: real weights split over cards, real tokens (``rsd-ray make-model``, ``generate``)."""
