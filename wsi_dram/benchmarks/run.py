"""Run every benchmark and write its section into BENCHMARKS.md (``make bench``).

Each stage module has ``run(out_dir) -> str``; the returned Markdown replaces the
text between ``<!-- section:<stage> -->`` and ``<!-- end:<stage> -->``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import time
from pathlib import Path

STAGES = ["preprocess", "glimpse", "mnist", "slides", "heatmap", "bigslide", "faults"]

log = logging.getLogger(__name__)


def replace_section(text: str, stage: str, body: str) -> str:
    """Put ``body`` between the markers of ``stage`` (appending them if absent)."""
    start, end = f"<!-- section:{stage} -->", f"<!-- end:{stage} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the chosen stages (all by default) and update the Markdown file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--work", type=Path, default=Path("bench_out"))
    parser.add_argument("stages", nargs="*", default=STAGES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    failed = []
    for stage in args.stages:
        module = importlib.import_module(f"wsi_dram.benchmarks.{stage}")
        started = time.perf_counter()
        log.info("benchmark %s ...", stage)
        try:
            body = module.run(args.work / stage)
        except Exception:
            log.exception("benchmark %s failed", stage)
            failed.append(stage)
            continue
        text = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
        args.out.write_text(replace_section(text, stage, body))
        log.info("benchmark %s done in %.0f s", stage, time.perf_counter() - started)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
