"""Synthetic H&E-like cohorts: the project's embedded default data.

See :mod:`wsi_dram.synth.render` for the rendering model (tumour visible only at
high magnification) and :mod:`wsi_dram.synth.cohort` for the files written.
"""

from wsi_dram.synth.cohort import SynthSlide, make_cohort, make_slide, tumour_slides
from wsi_dram.synth.layout import SlideLayout, make_layout, write_asap_xml
from wsi_dram.synth.render import SlideRenderer

__all__ = [
    "SlideLayout",
    "SlideRenderer",
    "SynthSlide",
    "make_cohort",
    "make_layout",
    "make_slide",
    "tumour_slides",
    "write_asap_xml",
]
