"""Output folders that cannot be made are one-line errors, raised before the work."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsi_dram.cli import app
from wsi_dram.errors import WsiDramError, make_dir
from wsi_dram.synth import make_cohort


def test_make_dir_names_the_file_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "labels.csv"
    blocker.write_text("x")
    assert make_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    with pytest.raises(WsiDramError, match="is a file, not a folder") as info:
        make_dir(blocker)
    assert info.value.path == str(blocker)
    with pytest.raises(WsiDramError, match="cannot create"):
        make_dir(blocker / "inside")
    # synth refuses before writing anything
    with pytest.raises(WsiDramError, match="is a file"):
        make_cohort(blocker, slides=1, size=(2048, 2048), seed=0)
    assert blocker.read_text() == "x"


def test_evaluate_checks_its_output_folder_first(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # The checkpoint does not exist either: the output folder is checked first,
    # so the error is about it and not about the (costly) evaluation.
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "missing.pt"),
            "--out",
            str(blocker / "report.json"),
        ],
    )
    # (main() turns the WsiDramError into one line and exit code 2.)
    assert isinstance(result.exception, WsiDramError)
    assert result.exception.path == str(blocker)
    assert "is a file, not a folder" in result.exception.reason
