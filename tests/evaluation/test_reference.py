"""Camelyon16 manifest, the organisers' reference file, exclusions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from wsi_dram.config import config_to_dict, dump_toml, load_config
from wsi_dram.errors import DataError
from wsi_dram.evaluation.reference import (
    CohortRow,
    Exclusions,
    apply_reference,
    camelyon16_rows,
    load_cohort_manifest,
    read_reference,
    slide_id_from_name,
    without,
)

MANIFEST = ROOT / "data_manifests" / "camelyon16.csv"


def test_manifest_lists_all_400_slides() -> None:
    rows = load_cohort_manifest(MANIFEST)
    assert len(rows) == 400
    ids = [r.slide_id for r in rows]
    assert len(set(ids)) == 400
    expected = (
        {f"tumor_{i:03d}" for i in range(1, 111)}
        | {f"normal_{i:03d}" for i in range(1, 161)}
        | {f"test_{i:03d}" for i in range(1, 131)}
    )
    assert set(ids) == expected
    for row in rows:
        if row.slide_id.startswith("tumor_"):
            assert (row.split, row.label) == ("train", 1)
        elif row.slide_id.startswith("normal_"):
            assert (row.split, row.label) == ("train", 0)
        else:
            assert (row.split, row.label) == ("test", None)  # never invented
    assert rows == camelyon16_rows()


def test_manifest_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("slide_id,split,label\ntumor_001,train,1\ntumor_002,train,2\n")
    with pytest.raises(DataError, match=r"m\.csv: line 3: label '2'"):
        load_cohort_manifest(bad)
    bad.write_text("id,label\n")
    with pytest.raises(DataError, match="header"):
        load_cohort_manifest(bad)
    bad.write_text("slide_id,split,label\na,valid,1\n")
    with pytest.raises(DataError, match="split 'valid'"):
        load_cohort_manifest(bad)


def test_reference_official_form_without_header(tmp_path: Path) -> None:
    ref = tmp_path / "reference.csv"
    ref.write_text(
        "Test_001,Tumor,Macro,Primary\ntest_002,Normal\ntest_003,Tumor,Micro,\n\n"
    )
    assert read_reference(ref) == {"test_001": 1, "test_002": 0, "test_003": 1}


def test_reference_with_header_and_numbers(tmp_path: Path) -> None:
    ref = tmp_path / "reference.csv"
    ref.write_text("image,type,size\ntest_010.tif,1\ntest_011,0,\n")
    assert read_reference(ref) == {"test_010": 1, "test_011": 0}


def test_reference_errors(tmp_path: Path) -> None:
    ref = tmp_path / "reference.csv"
    ref.write_text("test_001,Tumor\ntest_002,Maybe\n")
    with pytest.raises(DataError, match=r"reference\.csv: line 2: label 'Maybe'"):
        read_reference(ref)
    ref.write_text("test_001,Tumor\ntest_001,Normal\n")
    with pytest.raises(DataError, match="twice"):
        read_reference(ref)
    ref.write_text("test_001\n")
    with pytest.raises(DataError, match="line 1"):
        read_reference(ref)
    with pytest.raises(DataError, match="not found"):
        read_reference(tmp_path / "nope.csv")


def test_apply_reference_fills_test_labels_only() -> None:
    rows = [
        CohortRow("tumor_001", "train", 1),
        CohortRow("test_001", "test", None),
        CohortRow("test_002", "test", None),
    ]
    filled = apply_reference(rows, {"test_001": 0})
    assert [r.label for r in filled] == [1, 0, None]
    with pytest.raises(DataError, match="tumor_001"):
        apply_reference(rows, {"tumor_001": 0})


def test_slide_id_normalisation() -> None:
    assert slide_id_from_name("Test_001") == "test_001"
    assert slide_id_from_name("/data/Normal_86.tif") == "normal_086"
    assert slide_id_from_name("patient_004_node_4") == "patient_004_node_4"


def test_exclusions_defaults_reasons_and_toml_round_trip(tmp_path: Path) -> None:
    ex = Exclusions()
    assert set(ex.lesion_scoring) == {"test_049", "test_114"}
    assert set(ex.training) == {"normal_086", "normal_144"}
    assert set(ex.slide_scoring) == {"test_049"}
    assert all(reason for reason in ex.training.values())

    path = tmp_path / "ex.toml"
    path.write_text(dump_toml(config_to_dict(ex)))
    assert load_config(path, Exclusions) == ex

    path.write_text('[lesion_scoring]\ntest_001 = "my reason"\n')
    custom = load_config(path, Exclusions)
    assert custom.lesion_scoring == {"test_001": "my reason"}
    assert custom.training == Exclusions().training

    rows = camelyon16_rows()
    kept = without(rows, ex.training)
    assert len(kept) == 398
    assert "normal_086" not in {r.slide_id for r in kept}
