"""Inputs a user gets wrong: one line naming the problem, non-zero exit, no traceback.

Commands run through the real entry point :func:`wsi_dram.cli.main` (in-process,
with ``sys.argv`` set), which turns every WsiDramError into ``error: ...`` and exit
code 2; one case runs ``python -m wsi_dram.cli`` in a subprocess.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.faults.conftest import CleanRun
from tests.faults.test_training_resume import write_config
from wsi_dram.cli import main
from wsi_dram.training import read_train_config, train


def run_main(monkeypatch, capfd, *args: str) -> tuple[int, list[str]]:  # noqa: ANN001
    """Exit code and the non-empty stderr lines of ``wsi-dram ARGS``."""
    capfd.readouterr()
    monkeypatch.setattr(sys, "argv", ["wsi-dram", *args])
    with pytest.raises(SystemExit) as info:
        main()
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    code = info.value.code
    return (code if isinstance(code, int) else 1), err


def one_error_line(code: int, err: list[str]) -> str:
    assert code == 2
    lines = [line for line in err if not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    write_config(tmp_path)
    return tmp_path


def edit(config: Path, old: str, new: str, name: str) -> Path:
    text = config.read_text()
    assert old in text
    out = config.with_name(name)
    out.write_text(text.replace(old, new))
    return out


def test_config_typo_names_the_key_and_suggests(config_dir, monkeypatch, capfd):
    bad = edit(config_dir / "tiny.toml", "glimpses = 3", "glimpse = 3", "typo.toml")
    line = one_error_line(*run_main(monkeypatch, capfd, "train", "--config", str(bad)))
    assert line.startswith(f"error: {bad}: unknown key 'model.glimpse'")
    assert "(did you mean 'model.glimpses'?)" in line


def test_config_wrong_type_names_key_and_value(config_dir, monkeypatch, capfd):
    bad = edit(config_dir / "tiny.toml", "epochs = 3", 'epochs = "three"', "t.toml")
    line = one_error_line(*run_main(monkeypatch, capfd, "train", "--config", str(bad)))
    assert line == f"error: {bad}: train.epochs must be an integer, got 'three'"


def test_missing_config_path(tmp_path, monkeypatch, capfd):
    missing = tmp_path / "nope.toml"
    line = one_error_line(
        *run_main(monkeypatch, capfd, "train", "--config", str(missing))
    )
    assert line == f"error: {missing}: config file not found"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs", "override 'train.epochs' is not of the form key=value"),
        ("trian.epochs=2", "unknown key 'trian'"),
        ("train.epochs=[1", "train.epochs must be an integer, got '[1'"),
        ("train.epochs.x=1", "'epochs' is a value, not a section"),
    ],
)
def test_malformed_set_override(config_dir, monkeypatch, capfd, override, expected):
    config = str(config_dir / "tiny.toml")
    code, err = run_main(monkeypatch, capfd, "train", "-c", config, "--set", override)
    assert expected in one_error_line(code, err)


def test_missing_slide_and_empty_glob(tmp_path, monkeypatch, capfd):
    missing = tmp_path / "slide_404.svs"
    cache = str(tmp_path / "cache")
    line = one_error_line(
        *run_main(monkeypatch, capfd, "preprocess", str(missing), "--cache", cache)
    )
    assert line == f"error: {missing}: no such slide file"
    pattern = str(tmp_path / "*.ndpi")
    line = one_error_line(
        *run_main(monkeypatch, capfd, "preprocess", pattern, "--cache", cache)
    )
    assert line == f"error: {pattern}: no slide matches this pattern"
    assert not (tmp_path / "cache").exists()  # refused before anything written


def test_annotation_folder_matching_no_slide(
    clean_run: CleanRun, tmp_path, monkeypatch, capfd
):
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "Tumor_001.xml").write_text("<ASAP_Annotations/>")  # another cohort's
    slides = [str(s) for s in clean_run.slides]
    args = ["preprocess", *slides, "--cache", str(tmp_path / "c"), "--annotations"]
    line = one_error_line(*run_main(monkeypatch, capfd, *args, str(folder)))
    assert line.startswith(
        f"error: {folder}: no annotation file matches any of the 2 slide(s)"
    )
    assert "synth_000.xml" in line and "drop --annotations" in line
    missing = tmp_path / "no_such_folder"
    line = one_error_line(*run_main(monkeypatch, capfd, *args, str(missing)))
    assert line == f"error: {missing}: annotation folder not found"


def test_annotation_folder_matching_some_slides_warns(
    clean_run: CleanRun, tmp_path, monkeypatch, capfd
):
    folder = tmp_path / "annotations"
    folder.mkdir()
    xmls = sorted(clean_run.cohort.glob("synth_*.xml"))
    assert len(xmls) == 1  # one of the two slides carries tumour
    shutil.copy(xmls[0], folder)
    unannotated = ({"synth_000", "synth_001"} - {xmls[0].stem}).pop()
    cache = clean_run.copy_cache(tmp_path / "cache")  # complete: all skipped
    slides = [str(s) for s in clean_run.slides]
    code, err = run_main(
        monkeypatch,
        capfd,
        "preprocess",
        *slides,
        "--cache",
        str(cache),
        "--annotations",
        str(folder),
    )
    assert code == 0
    text = " ".join(" ".join(err).split())
    assert f"warning: 1 of 2 slide(s) have no annotation in {folder}" in text
    assert f"(cached without one): {unannotated}" in text


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    config = write_config(folder)
    cfg = read_train_config(config, ["train.epochs=1"])
    train(cfg, folder / "run")
    return config, folder / "run"


def test_resume_with_another_model_config(one_epoch_run, tmp_path, monkeypatch, capfd):
    config, run = one_epoch_run
    other = edit(config, "hidden = 64", "hidden = 32", "other.toml")
    before = (run / "checkpoints" / "last.pt").read_bytes()
    args = ["train", "--config", str(other), "--out", str(run), "--resume"]
    line = one_error_line(*run_main(monkeypatch, capfd, *args))
    last = run / "checkpoints" / "last.pt"
    assert line == (
        f"error: {last}: checkpoint comes from another configuration: "
        "model.hidden (64 vs 32)"
    )
    assert last.read_bytes() == before  # nothing overwritten
    # the right config without --resume is refused too, naming the way out
    args = ["train", "--config", str(config), "--out", str(run)]
    line = one_error_line(*run_main(monkeypatch, capfd, *args))
    assert "already has a checkpoint; pass --resume or another --out" in line


def test_evaluate_on_files_that_are_not_checkpoints(
    one_epoch_run, tmp_path, monkeypatch, capfd
):
    config, _ = one_epoch_run
    line = one_error_line(
        *run_main(monkeypatch, capfd, "evaluate", "--checkpoint", str(config))
    )
    assert line.startswith(f"error: {config}: not a readable checkpoint (")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    line = one_error_line(
        *run_main(monkeypatch, capfd, "evaluate", "--checkpoint", str(foreign))
    )
    assert line == f"error: {foreign}: not a wsi-dram checkpoint"
    missing = tmp_path / "missing.pt"
    line = one_error_line(
        *run_main(monkeypatch, capfd, "evaluate", "--checkpoint", str(missing))
    )
    assert line == f"error: {missing}: checkpoint not found"


def test_console_entry_point_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "wsi_dram.cli", "train", "--config", str(missing)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {missing}: config file not found"
    ]
    assert proc.stdout == ""
