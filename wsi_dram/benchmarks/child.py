"""Run benchmark code in a fresh Python process and read back its figures.

Peak RSS is a per-process figure, so every contender of a benchmark runs in its
own child process; the child prints one JSON line last, which is returned.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

#: A child that times ``body`` and reports wall and CPU seconds, peak RSS and
#: whatever ``body`` puts in the dictionary ``extra``.
MEASURED = """
import json, resource, sys, time
t0 = time.perf_counter()
{body}
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"seconds": time.perf_counter() - t0, "cpu": u.ru_utime + u.ru_stime,
  "peak_mib": u.ru_maxrss / 1024, **extra}}))
"""


def run_python(code: str, cwd: Path | None = None) -> dict[str, Any]:
    """Run ``code`` with this interpreter; the last line it prints, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(body: str) -> dict[str, Any]:
    """Time ``body`` (which must set ``extra``) in a child: see :data:`MEASURED`."""
    return run_python(MEASURED.format(body=body))
