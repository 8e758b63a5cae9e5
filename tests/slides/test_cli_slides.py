"""``wsi-dram info`` / ``wsi-dram annotations``: JSON output and one-line errors."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import CASES, DATA, need
from wsi_dram.cli import main


def _run(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["wsi-dram", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_near_integer_levels(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = need(CASES / "near-integer-downsample-level-choice" / "near_integer.tif")
    code, out, _ = _run(
        ["info", str(path), "--json", "--mpp", "0.25"], monkeypatch, capsys
    )
    assert code == 0
    data = json.loads(out)
    assert data["mpp"] == 0.25 and data["mpp_source"] == "override"
    assert [lv["factor"] for lv in data["levels"]] == [1, 4, 16]
    assert data["levels"][1]["downsample"] == pytest.approx(4.004557, abs=1e-6)
    assert (data["width"], data["height"]) == (1025, 769)


def test_info_table_real_slide(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = need(DATA / "slides" / "aperio" / "CMU-1-Small-Region.svs")
    code, out, _ = _run(["info", str(path)], monkeypatch, capsys)
    assert code == 0
    assert "aperio" in out and "2220 x 2967" in out and "0.499" in out
    assert "openslide.mpp-x" in out and "20x" in out


def test_info_missing_mpp_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = need(CASES / "mpp-missing" / "no_resolution.tif")
    code, out, err = _run(["info", str(path)], monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "no_resolution.tif" in lines[0] and "--mpp" in lines[0]
    assert "Traceback" not in err


def test_annotations_json_case(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = need(CASES / "asap-xml-degenerate-and-types" / "degenerate_and_types.xml")
    code, out, _ = _run(
        ["annotations", str(path), "--json", "--slide-size", "1000", "800"],
        monkeypatch,
        capsys,
    )
    assert code == 0
    data = json.loads(out)
    assert data["tumor_area_px"] == 100_000
    assert data["polygons_per_group"] == {"_0": 3}
    assert len(data["warnings"]) == 4
    assert {a["name"]: a["points"] for a in data["non_area"]} == {
        "a_dot": 1,
        "a_pointset": 3,
        "a_measurement": 2,
    }
    assert data["slide_size"] == [1000, 800]


def test_annotations_group_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = need(DATA / "annotations" / "asap" / "wsp_example.xml")
    code, out, _ = _run(["annotations", str(path), "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["tumor_area_px"] == 0
    code, out, _ = _run(
        ["annotations", str(path), "--json", "--group", "None=tumor"],
        monkeypatch,
        capsys,
    )
    assert code == 0 and json.loads(out)["tumor_area_px"] > 19_000
    code, _, err = _run(
        ["annotations", str(path), "--group", "None"], monkeypatch, capsys
    )
    assert code == 2 and "GROUP=LABEL" in err


def test_annotations_imagescope_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = need(DATA / "annotations" / "imagescope" / "TCGA-EJ-5519-01Z-00-DX1.xml")
    code, _, err = _run(["annotations", str(path)], monkeypatch, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "ImageScope" in err


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_text_turns_non_finite_numbers_into_null() -> None:
    from wsi_dram.cli.slides import json_text

    data = {"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -float("inf")}}
    assert _strict(json_text(data)) == {"a": None, "b": [None, 1.5], "c": {"d": None}}


def test_info_json_with_a_nan_objective_is_strict_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import wsi_dram.slides.reader as reader

    path = need(CASES / "near-integer-downsample-level-choice" / "near_integer.tif")
    real = reader.slide_info

    def with_nan(slide: reader.Slide) -> dict:
        return {**real(slide), "objective_power": float("nan")}

    monkeypatch.setattr(reader, "slide_info", with_nan)
    code, out, _ = _run(
        ["info", str(path), "--json", "--mpp", "0.25"], monkeypatch, capsys
    )
    assert code == 0
    data = _strict(out)
    assert isinstance(data, dict)
    assert data["objective_power"] is None and data["mpp"] == 0.25


def test_info_on_a_folder_says_it_is_a_folder(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["info", str(tmp_path)], monkeypatch, capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {tmp_path}: is a folder, not a slide file; give one slide file "
        "(for MIRAX, the .mrxs file beside its folder)"
    ]


@pytest.mark.parametrize("size", [("-5", "-5"), ("0", "100"), ("100", "-1")])
def test_annotations_refuses_a_slide_size_below_one_pixel(
    size, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    xml = tmp_path / "a.xml"
    xml.write_text("<ASAP_Annotations><Annotations/></ASAP_Annotations>")
    args = ["annotations", str(xml), "--slide-size", *size]
    code, _, err = _run(args, monkeypatch, capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: --slide-size {size[0]} {size[1]}: width and height are level-0 "
        "pixels and must be at least 1"
    ]
