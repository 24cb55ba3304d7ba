"""Shipped presets: devices, racks, models, engines, routers, workloads (YAML)."""
