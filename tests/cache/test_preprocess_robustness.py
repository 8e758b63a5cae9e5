"""``wsi-dram preprocess`` against wrong options, busy caches and interruptions.

Commands run through the real entry point :func:`wsi_dram.cli.main` in-process
(``sys.argv`` set), which prints one ``error: ...`` line and exits 2 for a user
error, or ``interrupted`` and 130 for Ctrl-C.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from tests.conftest import CASES, ROOT, need
from wsi_dram.cache import preprocess as cache_preprocess
from wsi_dram.cache import store
from wsi_dram.cache.manifest import read_manifest
from wsi_dram.cache.preprocess import (
    LOCK_NAME,
    PreprocessOptions,
    cache_lock,
    preprocess,
    preprocess_slide,
)
from wsi_dram.cli import main


def _inch() -> Path:
    """A 1024 x 768 TIFF at 254000/3 px per inch: 25400 / (254000 / 3) = 0.3 µm/px."""
    return need(CASES / "mpp-rational-inch" / "inch_rational.tif")


def _no_mpp() -> Path:
    """A 1024 x 768 TIFF with no usable resolution."""
    return need(CASES / "mpp-missing" / "no_resolution.tif")


def run_main(monkeypatch, capfd, *args: str) -> tuple[int, list[str]]:  # noqa: ANN001
    """Exit code and the non-empty stderr lines of ``wsi-dram ARGS``."""
    capfd.readouterr()
    monkeypatch.setattr(sys, "argv", ["wsi-dram", *args])
    with pytest.raises(SystemExit) as info:
        main()
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    code = info.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), err


def one_error_line(code: int, err: list[str]) -> str:
    """The single non-log stderr line of a run that exited 2."""
    assert code == 2, err
    lines = [line for line in err if not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def _attrs(cache: Path, slide_id: str) -> dict:
    root = zarr.open_group(str(store.store_path(cache, slide_id)), mode="r")
    attrs = root.attrs[store.ATTRS_KEY]
    assert isinstance(attrs, dict)
    return attrs


def test_mpp_is_a_fallback_for_files_without_one(tmp_path, monkeypatch, capfd, caplog):
    caplog.set_level(logging.INFO, logger="wsi_dram.slides.reader")
    inch, no_mpp = _inch(), _no_mpp()
    cache = tmp_path / "cache"
    code, err = run_main(
        monkeypatch,
        capfd,
        "preprocess",
        str(inch),
        str(no_mpp),
        "--cache",
        str(cache),
        "--mpp",
        "0.25",
    )
    assert code in (0, None), err
    rows = {r.slide_id: r for r in read_manifest(cache / "manifest.csv")}
    assert rows["inch_rational"].mpp == pytest.approx(0.3, rel=1e-9)
    assert rows["no_resolution"].mpp == pytest.approx(0.25, rel=1e-12)
    assert _attrs(cache, "inch_rational")["mpp_source"] == "openslide.mpp-x"
    assert _attrs(cache, "no_resolution")["mpp_source"] == "fallback"
    said = [r.getMessage() for r in caplog.records]
    assert not any("override" in m for m in said)
    assert any("no_resolution" in m and "mpp 0.25" in m for m in said)
    assert not any("inch_rational" in m and "mpp" in m for m in said)

    # --mpp concerns only the slide that used it: dropping it skips both, a new
    # value rebuilds only that one
    again = preprocess([inch, no_mpp], cache)
    assert [r.status for r in again] == ["skipped", "skipped"]
    other = preprocess([inch, no_mpp], cache, options=PreprocessOptions(mpp=0.5))
    assert [r.status for r in other] == ["skipped", "done"]
    assert other[1].mpp == 0.5


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["--mpp", "inf"], "error: --mpp inf: must be a finite positive"),
        (["--mpp", "-1"], "error: --mpp -1: must be a finite positive"),
        (["--mpp", "0"], "error: --mpp 0: must be a finite positive"),
        (["--mpp", "1e-300"], "error: --mpp 1e-300: implausible pixel size"),
        (["--mpp", "20000"], "error: --mpp 20000: implausible pixel size"),
        (["--chunk", "0"], "error: --chunk 0: must be at least 1"),
        (["--block", "-512"], "error: --block -512: must be at least 1"),
        (["--workers", "0"], "error: --workers 0: must be at least 1"),
        (["--min-side", "0"], "error: --min-side 0: must be at least 1"),
        (["--block", "1000"], "error: write tile size 1000 px is not a multiple"),
    ],
)
def test_bad_options_are_refused_up_front(tmp_path, monkeypatch, capfd, args, start):
    cache = tmp_path / "cache"
    line = one_error_line(
        *run_main(
            monkeypatch, capfd, "preprocess", str(_inch()), "--cache", str(cache), *args
        )
    )
    assert line.startswith(start), line
    assert not cache.exists()  # refused before any slide or cache work


def _closed_port() -> int:
    """A local TCP port that was just free and refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


@pytest.mark.parametrize("address", ["foo", "tcp://127.0.0.1"])
def test_malformed_scheduler_address(tmp_path, monkeypatch, capfd, address):
    line = one_error_line(
        *run_main(
            monkeypatch,
            capfd,
            "preprocess",
            str(_inch()),
            "--cache",
            str(tmp_path / "c"),
            "--scheduler",
            address,
        )
    )
    assert line.startswith(f"error: --scheduler {address!r}: not a scheduler address")


def test_unreachable_scheduler(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(cache_preprocess, "SCHEDULER_TIMEOUT_S", 0.5)
    address = f"tcp://127.0.0.1:{_closed_port()}"
    line = one_error_line(
        *run_main(
            monkeypatch,
            capfd,
            "preprocess",
            str(_inch()),
            "--cache",
            str(tmp_path / "c"),
            "--scheduler",
            address,
        )
    )
    assert line.startswith(
        f"error: --scheduler {address!r}: no dask scheduler answered within 0.5 s"
    )
    assert not (tmp_path / "c" / "inch_rational.ome.zarr").exists()


_HOLDER = """
import sys, time
from wsi_dram.cache.preprocess import cache_lock
with cache_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes stdin or kills us
"""


def test_second_run_on_a_busy_cache_fails_at_once(tmp_path, monkeypatch, capfd):
    cache = tmp_path / "cache"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(cache)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        line = one_error_line(
            *run_main(
                monkeypatch, capfd, "preprocess", str(_inch()), "--cache", str(cache)
            )
        )
        assert line == (
            f"error: {cache}: cache is in use by another wsi-dram preprocess run "
            f"(pid {holder.pid}); wait for it or use another --cache"
        )
        assert not (cache / "inch_rational.ome.zarr").exists()
    finally:
        holder.kill()  # the OS releases the flock with the process
        holder.wait()
    assert preprocess([_inch()], cache)[0].status == "done"
    assert (cache / LOCK_NAME).read_text().strip().isdigit()


def test_lock_is_reentrant_in_one_process(tmp_path):
    with cache_lock(tmp_path / "c"), cache_lock(tmp_path / "c"):
        assert cache_preprocess.holds_lock(tmp_path / "c")
    assert not cache_preprocess.holds_lock(tmp_path / "c")


def test_empty_folder_is_an_error(tmp_path, monkeypatch, capfd):
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a slide")
    line = one_error_line(
        *run_main(
            monkeypatch, capfd, "preprocess", str(folder), "--cache", str(tmp_path)
        )
    )
    assert line.startswith(f"error: {folder}: no slide files in this folder")


def _stale_partial(cache: Path, slide_id: str) -> Path:
    final = store.store_path(cache, slide_id)
    partial = final.with_name(f".{final.name}.partial")
    partial.mkdir()
    (partial / ".zgroup").write_text("{}")
    return partial


def test_stale_partial_removed_when_skipped_or_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    assert preprocess([_inch()], cache)[0].status == "done"
    partial = _stale_partial(cache, "inch_rational")
    # without the cache lock (another run may be writing it) it is left alone
    assert preprocess_slide(_inch(), cache).status == "skipped"
    assert partial.is_dir()
    assert preprocess([_inch()], cache)[0].status == "skipped"
    assert not partial.exists()
    partial = _stale_partial(cache, "inch_rational")
    forced = preprocess([_inch()], cache, options=PreprocessOptions(force=True))
    assert forced[0].status == "done" and not partial.exists()


def test_min_side_sets_the_level_count(tmp_path, monkeypatch, capfd):
    # 1024 x 768: long sides 1024, 512, 256, 128; the first below 256 is the last
    cache = tmp_path / "cache"
    code, err = run_main(
        monkeypatch,
        capfd,
        "preprocess",
        str(_inch()),
        "--cache",
        str(cache),
        "--min-side",
        "256",
    )
    assert code == 0, err
    assert [r.levels for r in read_manifest(cache / "manifest.csv")] == [4]


def test_ctrl_c_prints_interrupted_and_exits_130(tmp_path, monkeypatch, capfd):
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_preprocess, "preprocess", interrupt)
    code, err = run_main(
        monkeypatch, capfd, "preprocess", str(_inch()), "--cache", str(tmp_path / "c")
    )
    assert code == 130
    assert err[-1] == "interrupted"
    assert not cache_preprocess.holds_lock(tmp_path / "c")
