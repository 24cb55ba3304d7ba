"""rsd-ray: a rack of Rebellions ATOM cards, emulated. Importable without starting Ray."""
__version__ = "0.1.0"
