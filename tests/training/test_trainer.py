"""The trainer: learns far above chance, resumes exactly, checks checkpoints, DDP."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import DATA, need
from wsi_dram.cli import app
from wsi_dram.data.tasks import build_task
from wsi_dram.errors import CheckpointError, ConfigError
from wsi_dram.evaluation.classification import evaluate_model
from wsi_dram.export.visualize import write_visualizations
from wsi_dram.model.dram import DRAM
from wsi_dram.training import load_model, read_train_config, train

ROOT = Path(__file__).resolve().parents[2]


def _config(overrides: list[str] | None = None):  # type: ignore[no-untyped-def]
    mnist = need(DATA / "mnist")
    base = [
        f'task.data_dir="{mnist}"',
        "task.download=false",
        "task.train_subset=2000",
        "task.val_size=500",
        "model.glimpses=4",
        "model.scales=2",
        "model.hidden=64",
        "model.hidden_what=64",
        "model.hidden_where=32",
        "model.sigma=0.1",
        "optim.lr=3e-3",
        "train.batch_size=32",
        "train.epochs=5",
        "train.eval_samples=2",
        "train.final_test=false",
        "train.tensorboard=false",
        "train.threads=1",
    ]
    return read_train_config(
        ROOT / "pipelines" / "mnist_ram.toml", base + (overrides or [])
    )


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_learns_far_above_chance_and_evaluate_reproduces(tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = train(_config(), run)  # 5 epochs x 62 steps = 310 steps
    lines = _lines(run)
    assert [x["epoch"] for x in lines] == [1, 2, 3, 4, 5]
    assert summary["best_val_accuracy"] > 0.5  # chance is 0.1
    assert (run / "config.toml").is_file() and (run / "train.log").is_file()

    # evaluating best.pt reproduces the validation accuracy printed at its epoch
    best = max(lines, key=lambda x: x["val_accuracy"])
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run / "checkpoints" / "best.pt"),
            "--split",
            "val",
            "--out",
            str(tmp_path / "report.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["accuracy_m1"] == best["val_accuracy"]
    assert report["n"] == 500 and report["policy"] == "learned"
    assert report["error"] == pytest.approx(1 - report["accuracy"])

    # the policy override goes through the same evaluation function
    model, cfg, _ = load_model(run / "checkpoints" / "best.pt")
    task = build_task(cfg.task, cfg.sensor_spec())
    rand = evaluate_model(model, task, "val", 1, "random", cfg.train.seed, 500)
    assert rand["n"] == 500 and 0 <= rand["accuracy"] <= 1

    files = write_visualizations(model, task, tmp_path / "pics", 2, "val")
    assert len(files) == 4
    names = sorted(p.name for p in (tmp_path / "pics").iterdir())
    assert names == [
        "glimpses_000.gif",
        "glimpses_000.png",
        "glimpses_001.gif",
        "glimpses_001.png",
    ]
    with Image.open(tmp_path / "pics" / "glimpses_000.gif") as gif:
        assert gif.n_frames == 4  # one frame per glimpse


def test_resume_repeats_an_uninterrupted_run(tmp_path: Path) -> None:
    small = ["task.train_subset=320", "train.epochs=2"]
    train(_config(small), tmp_path / "whole")
    train(_config([*small[:1], "train.epochs=1"]), tmp_path / "split")
    train(_config(small), tmp_path / "split", resume=True)

    def keep(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in ("seconds", "images_per_s")}

    assert [keep(x) for x in _lines(tmp_path / "whole")] == [
        keep(x) for x in _lines(tmp_path / "split")
    ]
    a = torch.load(tmp_path / "whole/checkpoints/last.pt", weights_only=False)
    b = torch.load(tmp_path / "split/checkpoints/last.pt", weights_only=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_checkpoint_from_another_configuration(tmp_path: Path) -> None:
    small = ["task.train_subset=64", "train.epochs=1"]
    train(_config(small), tmp_path)
    with pytest.raises(CheckpointError) as err:
        train(_config([*small, "model.hidden=32", "train.epochs=2"]), tmp_path, True)
    message = str(err.value)
    assert "model.hidden (64 vs 32)" in message and "\n" not in message
    with pytest.raises(CheckpointError, match="already has a checkpoint"):
        train(_config(small), tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, port: int, out: str, results: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    config = _config(["task.train_subset=256", "train.epochs=1"])
    summary = train(config, Path(out))
    torch.save(summary["model"].state_dict(), Path(results) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_ranks_stay_equal(tmp_path: Path) -> None:
    need(DATA / "mnist")
    mp.spawn(
        _ddp_worker,
        args=(_free_port(), str(tmp_path / "run"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    saved = load_model(tmp_path / "run/checkpoints/last.pt")[0].state_dict()
    config = _config()
    torch.manual_seed(config.train.seed)
    fresh = DRAM(config.model, 1, 10).state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert torch.equal(a[key], saved[key]), key
    assert not torch.equal(a["classifier.fc.weight"], fresh["classifier.fc.weight"])
    line = _lines(tmp_path / "run")[0]
    assert line["images"] == 256  # both ranks' shards counted: 8 steps x 32


def test_resume_without_a_run_fails_and_leaves_nothing(tmp_path: Path) -> None:
    run = tmp_path / "typo"
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(_config(), run, resume=True)
    assert not run.exists()


def test_unusable_settings_fail_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="threads"):
        _config(["train.threads=-1"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            train(_config(['train.device="cuda"']), tmp_path / "cuda")
