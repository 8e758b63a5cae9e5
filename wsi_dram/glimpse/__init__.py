"""Glimpse sensors: g x g windows at K pyramid scales around a location in [-1, 1]."""

from wsi_dram.glimpse.sensor import (
    GlimpseSensor,
    PyramidSensor,
    glimpse_boxes,
    window_origin,
)

__all__ = ["GlimpseSensor", "PyramidSensor", "glimpse_boxes", "window_origin"]
