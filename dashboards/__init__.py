"""Rich renderings of plans and runs (installed as ``rsd_ray.dashboards``)."""
