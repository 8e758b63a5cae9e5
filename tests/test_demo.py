"""The demo's closing table and its reading of the evaluation outputs."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from wsi_dram.cli.demo import summary_table
from wsi_dram.demo import _test_slide_ids


def _render(result: dict) -> str:
    console = Console(width=120, record=True)
    console.print(summary_table(result))
    return console.export_text()


def test_table_shows_the_figures_as_percentages_and_paths() -> None:
    learned = {
        "auc": 0.975,
        "auc_ci": [0.9, 1.0],
        "froc": 0.6,
        "n_slides": 6,
        "pixels_read_fraction": 0.0062,
    }
    random = {"auc": 0.5, "froc": 0.25, "pixels_read_fraction": 0.0134}
    text = _render(
        {
            "learned": learned,
            "random": random,
            "mnist": {"error": 0.0982},
            "minutes": 12.5,
            "paths": {"heatmaps": Path("demo_out/heatmaps")},
        }
    )
    assert "0.975  CI [0.900, 1.000]" in text
    assert "0.62 %" in text and "1.34 %" in text  # 0.0062 and 0.0134 as percent
    assert "0.250" in text and "0.0982" in text and "12.5 min" in text
    assert "demo_out/heatmaps" in text


def test_test_slide_ids_read_from_predictions(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text("slide_id,label,score\nsynth_002,0,0.33\nsynth_006,1,1.0\n")
    assert _test_slide_ids(path) == ["synth_002", "synth_006"]
