"""Observability: metric names, the Prometheus exporter, `gdro-ray status` and `report`."""
