"""The rich consoles of the CLI: terminal width on a terminal, wide otherwise.

Rich lays text out for 80 columns when its output is not a terminal (a pipe, a
log file, CI), which breaks summary-table rows and paths over several lines.
Off a terminal the CLI uses :data:`NON_TTY_WIDTH` columns instead, unless the
``COLUMNS`` environment variable names a width (rich honours it).
"""

from __future__ import annotations

import os

from rich.console import Console

#: Columns used when the output is not a terminal and ``COLUMNS`` is unset.
NON_TTY_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    """A rich console for stdout (or stderr): see the module docstring."""
    console = Console(stderr=stderr)
    if console.is_terminal or os.environ.get("COLUMNS", "").strip():
        return console
    return Console(stderr=stderr, width=NON_TTY_WIDTH)
