"""The OME-Zarr pyramid cache: one store, one tile grid and one manifest row per slide.

Importing this package registers the :class:`~wsi_dram.cache.store.PlanarJpeg`
numcodecs codec, so JPEG stores can be read by any process that imports it.
"""

from wsi_dram.cache.store import CachedSlide, open_cache, write_label

__all__ = ["CachedSlide", "open_cache", "write_label"]
