"""CLI across commands: evaluate's default report, console width, --version."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from wsi_dram.cli import app
from wsi_dram.cli.train import default_report_path


@pytest.mark.parametrize(
    ("checkpoint", "split", "policy", "expected"),
    [
        ("runs/a/checkpoints/best.pt", "test", "learned", "runs/a/eval/test"),
        ("runs/a/checkpoints/last.pt", "val", "random", "runs/a/eval/val_random"),
        ("elsewhere/model.pt", "test", "center", "elsewhere/eval/test_center"),
    ],
)
def test_default_report_path(
    checkpoint: str, split: str, policy: str, expected: str
) -> None:
    path = default_report_path(Path(checkpoint), split, policy)
    assert path == Path(expected) / "report.json"


def _stub_evaluation(
    monkeypatch: pytest.MonkeyPatch, ckpt: Path, per_class: dict[str, float]
) -> None:
    """An empty checkpoint file at ``ckpt`` whose evaluation is stubbed: the
    loading, the task and ``evaluate_model`` (one image, accuracy 1 and
    ``per_class`` accuracies); only what the command does with the report runs."""
    import wsi_dram.data.tasks as tasks
    import wsi_dram.evaluation.classification as classification
    import wsi_dram.training.checkpoints as checkpoints
    import wsi_dram.training.trainer as trainer

    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"")
    train_cfg = SimpleNamespace(device="cpu", seed=0, eval_batch_size=8)
    cfg = SimpleNamespace(train=train_cfg, task=SimpleNamespace(), sensor_spec=dict)
    model = SimpleNamespace(to=lambda device: None)
    monkeypatch.setattr(checkpoints, "load_model", lambda path: (model, cfg, None))
    monkeypatch.setattr(trainer, "pick_device", lambda device: "cpu")
    task = SimpleNamespace(size=lambda split: 1, slide_level=False)
    monkeypatch.setattr(tasks, "build_task", lambda task_cfg, spec: task)
    report: dict[str, Any] = {
        "n": 1,
        "per_class_accuracy": dict(per_class),
        "per_class_accuracy_m1": dict(per_class),
        "accuracy": 1.0,
        "accuracy_m1": 1.0,
        "error": 0.0,
        "error_m1": 0.0,
    }
    monkeypatch.setattr(classification, "evaluate_model", lambda *a: dict(report))


def test_evaluate_without_out_writes_beside_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation itself is stubbed: only where the report lands is tested."""
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "best.pt"
    _stub_evaluation(monkeypatch, ckpt, {"0": 1.0})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["evaluate", "--checkpoint", str(ckpt), "--policy", "random"]
    )
    assert result.exit_code == 0, result.output
    expected = run / "eval" / "test_random" / "report.json"
    assert json.loads(expected.read_text())["checkpoint"] == str(ckpt)
    assert f"wrote {expected}" in " ".join(result.output.split())
    assert not (tmp_path / "report.json").exists()


def test_tables_keep_rows_on_one_line_off_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 150-character row (wider than rich's default 80) is one output line."""
    import io

    from rich.table import Table

    from wsi_dram.cli.console import NON_TTY_WIDTH, make_console

    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console()
    assert not console.is_terminal and console.width == NON_TTY_WIDTH
    buffer = io.StringIO()
    console.file = buffer
    table = Table()
    table.add_column("slide")
    table.add_column("reason")
    table.add_row("s" * 20, "r" * 130)
    console.print(table)
    lines = buffer.getvalue().splitlines()
    assert any(("s" * 20) in line and ("r" * 130) in line for line in lines)
    monkeypatch.setenv("COLUMNS", "90")  # an explicit width is honoured
    assert make_console().width == 90


def test_version_from_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    import wsi_dram
    from wsi_dram.cli import package_version

    installed = importlib.metadata.version("wsi-dram")
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"wsi-dram {installed}\n"

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    monkeypatch.setattr(wsi_dram, "__version__", "9.8.7")
    assert package_version() == "9.8.7"


def test_evaluate_writes_strict_json_for_an_absent_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A class absent from the split has a NaN accuracy: written as null."""
    ckpt = tmp_path / "best.pt"
    _stub_evaluation(monkeypatch, ckpt, {"0": 1.0, "1": float("nan")})
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["evaluate", "--checkpoint", str(ckpt), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    written = json.loads(out.read_text(), parse_constant=refuse)
    assert written["per_class_accuracy"] == {"0": 1.0, "1": None}
    assert written["per_class_accuracy_m1"] == {"0": 1.0, "1": None}
