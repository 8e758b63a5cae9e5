"""Which files a batch takes from folders, globs and explicit paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_dram.cli.preprocess import expand_slides
from wsi_dram.errors import DataError


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_folder_gives_slide_files_and_one_file_per_dicom_series(tmp_path: Path) -> None:
    _touch(tmp_path / "cohort", "a.tif", "a.xml", "labels.csv", "b.svs", ".hidden.tif")
    _touch(tmp_path / "dicom", "s_0.dcm", "s_1.dcm", "s_2.dcm")
    found = expand_slides([str(tmp_path / "cohort"), str(tmp_path / "dicom")])
    names = [p.name for p in found]
    assert names == ["a.tif", "b.svs", "s_0.dcm"]


def test_explicit_file_is_taken_whatever_its_suffix(tmp_path: Path) -> None:
    _touch(tmp_path, "slide.weird")
    assert expand_slides([str(tmp_path / "slide.weird")]) == [tmp_path / "slide.weird"]


def test_glob_with_no_match_and_missing_path_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no slide matches"):
        expand_slides([str(tmp_path / "*.svs")])
    with pytest.raises(DataError, match="no such slide file"):
        expand_slides([str(tmp_path / "missing.svs")])
