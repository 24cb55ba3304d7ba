"""Fidelity: replay published GPU measurements with the same engine and constants that emulate ATOM."""
