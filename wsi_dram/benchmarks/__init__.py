"""Benchmarks (``make bench``): each stage's figure against a baseline run beside it.

Each module ``wsi_dram.benchmarks.<stage>`` has ``run(out_dir: Path) -> str`` that
measures and returns a Markdown section; :mod:`wsi_dram.benchmarks.run` writes
each section between its ``<!-- section:<stage> -->`` markers in BENCHMARKS.md.
"""
