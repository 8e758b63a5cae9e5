"""wsi-dram: recurrent visual attention (DRAM) on whole-slide images.

The package's folders follow the pipeline: ``slides`` (opening slides, reading
annotations), ``tissue`` (tissue detection), ``cache`` (the OME-Zarr pyramid
cache, tile index and cohort manifest), ``glimpse`` (the multi-scale glimpse
sensor over in-memory and cached pyramids), ``model`` (DRAM and RAM), ``data``
(MNIST and whole-slide tasks), ``training``, ``evaluation`` and ``export``
(heatmaps for pathologists). ``cli`` is a thin typer layer over all of them.
"""

__version__ = "0.1.0"
