"""Training killed (SIGKILL) in epoch 2 and resumed from last.pt."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import DATA, need
from wsi_dram.training import read_train_config, train
from wsi_dram.training import trainer as trainer_module

# Columns that measure time, not learning: excluded from the comparison.
TIMING = {"seconds", "images_per_s"}

CONFIG = """\
[task]
kind = "mnist"
data_dir = "{data}"
download = false
val_size = 256
train_subset = 768

[model]
glimpses = 3
glimpse_size = 8
scales = 2
context_size = 14
hidden = 64
hidden_what = 32
hidden_where = 32
conv_channels = []
context_channels = [4, 8]

[optim]
lr = 2e-3
lr_decay = 0.9

[train]
epochs = 3
batch_size = 64
seed = 5
threads = 1
device = "cpu"
tensorboard = false
final_test = false
eval_batch_size = 256
"""


def write_config(folder: Path, **model: object) -> Path:
    """The tiny MNIST config (``model`` entries replace lines of [model])."""
    text = CONFIG.format(data=need(DATA / "mnist"))
    for key, value in model.items():
        lines = [
            f"{key} = {value}" if line.split(" = ")[0] == key else line
            for line in text.splitlines()
        ]
        text = "\n".join(lines) + "\n"
    path = folder / "tiny.toml"
    path.write_text(text)
    return path


def metric_lines(run: Path) -> list[dict[str, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines
    ]


def assert_same_metrics(got: list[dict], want: list[dict]) -> None:
    assert [line["epoch"] for line in got] == [line["epoch"] for line in want]
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), (
                f"epoch {a['epoch']} {key}"
            )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("resume")
    config = write_config(folder)
    run = folder / "straight"
    train(read_train_config(config), run)
    return config, run


def test_sigkill_in_epoch_2_then_resume_equals_uninterrupted(
    uninterrupted: tuple[Path, Path], tmp_path: Path
) -> None:
    config, straight = uninterrupted
    want = metric_lines(straight)
    assert len(want) == 3
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "wsi_dram.cli", "train", "--config", str(config)]
    proc = subprocess.Popen(
        [*cmd, "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = run / "metrics.jsonl"
    while proc.poll() is None and not (
        metrics.exists() and metrics.read_text().count("\n") >= 1
    ):
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before epoch 2"
    # epoch 2 takes about as long as epoch 1: kill at a seeded point inside it
    epoch_1 = json.loads(metrics.read_text().splitlines()[0])["seconds"]
    time.sleep(float(np.random.default_rng(2).uniform(0.1, 0.7)) * epoch_1)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    stopped = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert stopped["epoch"] == 1  # killed during epoch 2
    assert len(metric_lines(run)) == 1

    resumed = subprocess.run(
        [*cmd, "--out", str(run), "--resume"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_metrics(metric_lines(run), want)
    a = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("moment", ["before", "after"])
def test_death_around_writing_last_pt_resumes_exactly(
    uninterrupted: tuple[Path, Path], tmp_path: Path, monkeypatch, moment: str
) -> None:
    # The narrow windows a SIGKILL can hit at the end of epoch 2: just before
    # last.pt is written (metrics line and best.pt already there) and just after
    # it. Simulated by dying there in-process; the resumed metrics must still
    # equal the uninterrupted run's line for line.
    config, straight = uninterrupted
    real_save = trainer_module.save_checkpoint

    def save_and_die(path: Path, *args, **kwargs):  # noqa: ANN002, ANN003
        dies = path.name == "last.pt" and args[3] == 2
        if dies and moment == "before":
            raise KeyboardInterrupt("killed")
        real_save(path, *args, **kwargs)
        if dies:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_and_die)
    run = tmp_path / "window"
    with pytest.raises(KeyboardInterrupt):
        train(read_train_config(config), run)
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    train(read_train_config(config), run, resume=True)
    assert_same_metrics(metric_lines(run), metric_lines(straight))
