"""Exception types for errors a user can cause.

The CLI turns every :class:`WsiDramError` into one readable line and a non-zero
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class WsiDramError(Exception):
    """Base class of the errors a user can cause and fix.

    Args:
        message: What went wrong and, where possible, how to fix it.
        path: The file or folder the problem concerns, if any; it is put at
            the front of the message.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ConfigError(WsiDramError):
    """A configuration file or ``--set`` override is wrong (typo, type, range)."""


class SlideError(WsiDramError):
    """A slide cannot be opened or read, or lacks what the pipeline needs."""


class AnnotationError(WsiDramError):
    """An annotation file cannot be understood."""


class NoTissueError(SlideError):
    """Tissue detection found no tissue on a slide."""


class CacheError(WsiDramError):
    """A cache store is missing, incomplete, corrupted or unwritable."""


class DataError(WsiDramError):
    """A dataset (MNIST files, a cohort, a manifest) is missing or malformed."""


class CheckpointError(WsiDramError):
    """A checkpoint cannot be loaded or does not fit the configuration."""


def make_dir(path: str | Path) -> Path:
    """Create a folder (and its parents) or raise a one-line error naming it.

    Raises:
        WsiDramError: The path is a file, a parent is a file, or it is not
            writable.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise WsiDramError("is a file, not a folder", folder) from exc
    except OSError as exc:
        raise WsiDramError(
            f"cannot create this folder ({exc.strerror})", folder
        ) from exc
    return folder
