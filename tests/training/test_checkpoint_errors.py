"""Files that are not checkpoints, and the ``evaluate`` summary line.

Any file ``torch.load`` cannot unpickle (a TIFF, random bytes, a truncated zip)
is a :class:`CheckpointError` "not a readable checkpoint (...)" naming the file,
and a folder says it is a folder; through the CLI each is one line, exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import CASES, need
from wsi_dram.cli import app, main
from wsi_dram.errors import CheckpointError
from wsi_dram.model.dram import DRAM
from wsi_dram.training.checkpoints import load_checkpoint, save_checkpoint
from wsi_dram.training.config import TrainConfig


def mnist_checkpoint(path: Path) -> Path:
    """A freshly initialised tiny one-channel MNIST DRAM checkpoint."""
    config = TrainConfig()
    config.task.kind = "mnist"
    m = config.model
    m.glimpses, m.glimpse_size, m.scales, m.context_size = 2, 8, 1, 8
    m.hidden, m.hidden_what, m.hidden_where = 16, 16, 8
    m.conv_channels, m.context_channels = [4], [4]
    torch.manual_seed(0)
    model = DRAM(m, 1, 10)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    save_checkpoint(path, model, optimizer, scheduler, 0, config, 10, 1, {}, 0.0)
    return path


def run_main(monkeypatch: Any, capfd: Any, *args: str) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines of ``wsi-dram ARGS``."""
    capfd.readouterr()
    monkeypatch.setattr(sys, "argv", ["wsi-dram", *args])
    with pytest.raises(SystemExit) as info:
        main()
    err = [x for x in capfd.readouterr().err.splitlines() if x.strip()]
    code = info.value.code
    return (code if isinstance(code, int) else 1), err


def not_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """Random bytes, a truncated real checkpoint, a text file."""
    rand = tmp_path / "random.pt"
    rand.write_bytes(
        np.random.default_rng(7).integers(0, 256, 4096, np.uint8).tobytes()
    )
    real = mnist_checkpoint(tmp_path / "real.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(real[: len(real) // 2])
    text = tmp_path / "config.toml"
    text.write_text('[task]\nkind = "mnist"\n')
    return {"random": rand, "truncated": truncated, "text": text}


def test_tiff_is_not_a_readable_checkpoint(monkeypatch: Any, capfd: Any) -> None:
    tiff = need(CASES / "mpp-missing" / "no_resolution.tif")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiff)
    assert info.value.path == str(tiff)
    assert info.value.reason.startswith("not a readable checkpoint (ValueError: ")
    code, err = run_main(monkeypatch, capfd, "evaluate", "--checkpoint", str(tiff))
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {tiff}: not a readable checkpoint (")
    assert err[0].endswith(")")


@pytest.mark.parametrize("kind", ["random", "truncated", "text"])
def test_other_non_checkpoints(tmp_path: Path, kind: str) -> None:
    path = not_checkpoints(tmp_path)[kind]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert info.value.path == str(path)
    assert info.value.reason.startswith("not a readable checkpoint (")
    assert "\n" not in str(info.value) and len(info.value.reason) < 200


def test_directory_is_named_as_one(
    tmp_path: Path, monkeypatch: Any, capfd: Any
) -> None:
    code, err = run_main(monkeypatch, capfd, "evaluate", "--checkpoint", str(tmp_path))
    assert (code, err) == (
        2,
        [f"error: {tmp_path}: is a directory, not a checkpoint file"],
    )
    code, err = run_main(monkeypatch, capfd, "train", "--config", str(tmp_path))
    assert (code, err) == (2, [f"error: {tmp_path}: is a directory, not a config file"])


class _Task:
    """Just enough of an image task for ``evaluate``'s CLI."""

    slide_level = False

    def size(self, split: str) -> int:
        return 4


def _report(samples: int) -> dict[str, Any]:
    # 4 test images: 3 right with M=1 (error 0.25), all 4 right with M samples.
    return {
        "n": 4,
        "samples": samples,
        "policy": "learned",
        "accuracy_m1": 0.75,
        "accuracy": 1.0,
        "error_m1": 0.25,
        "error": 0.0,
        "per_class_accuracy_m1": {"0": 0.5, "1": 1.0},
        "per_class_accuracy": {"0": 1.0, "1": 1.0},
    }


@pytest.mark.parametrize("samples", [1, 3])
def test_evaluate_prints_m_samples_only_when_more_than_one(
    tmp_path: Path, monkeypatch: Any, samples: int
) -> None:
    import wsi_dram.data.tasks as tasks
    import wsi_dram.evaluation.classification as classification

    monkeypatch.setattr(tasks, "build_task", lambda *a, **k: _Task())
    monkeypatch.setattr(
        classification, "evaluate_model", lambda *a, **k: _report(samples)
    )
    checkpoint = mnist_checkpoint(tmp_path / "mnist.pt")
    args = ["evaluate", "--checkpoint", str(checkpoint), "--samples", str(samples)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [x.strip() for x in result.output.splitlines()]
    if samples == 1:
        assert "error: 0.2500 (M=1)" in lines
        assert "(M=1)  " not in result.output and "M=3" not in result.output
        assert result.output.count("0.7500") == 1  # the "all" row, one column
    else:
        assert "error: 0.2500 (M=1)  0.0000 (M=3)" in lines
        assert "accuracy M=3" in result.output
