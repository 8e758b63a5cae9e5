"""Slides and their annotations: opening, reading pixels, parsing lesion outlines.

``reader`` opens slides through OpenSlide (exact level factors, mpp, reads composited
over white); ``annotations`` parses ASAP XML and QuPath GeoJSON into shapely
geometry in level-0 pixels; ``tiff_writer`` writes pyramidal TIFFs.
"""

from wsi_dram.slides.reader import Slide, open_slide, slide_info

__all__ = ["Slide", "open_slide", "slide_info"]
