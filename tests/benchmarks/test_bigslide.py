"""The bigslide benchmark's cohort: one linked slide per split, read by the task."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_dram.benchmarks.bigslide import THIRDS, make_cohort_dir, split_ids
from wsi_dram.data.slide_tasks import SlideTaskOptions, cohort_splits


def _fake_store(folder: Path, slide_id: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / f"{slide_id}.ome.zarr"
    store.mkdir()
    (folder / f"{slide_id}.h5").write_text(slide_id)
    return store


def test_each_split_gets_its_own_linked_slide(tmp_path: Path) -> None:
    big = _fake_store(tmp_path / "a", "big")
    small = _fake_store(tmp_path / "b", "small")
    stores = {"train": big, "val": small, "test": big}
    labels = make_cohort_dir(tmp_path / "cohort", "x", stores)

    opts = SlideTaskOptions(
        cache_dir=tmp_path / "cohort" / "cache",
        labels=labels,
        split_fractions=THIRDS,
        split_seed=0,
    )
    splits = cohort_splits(opts)
    ids = split_ids("x")
    for split in ("train", "val", "test"):
        assert splits[split] == [(ids[split], 1)]
        cache = tmp_path / "cohort" / "cache"
        assert (cache / f"{ids[split]}.ome.zarr").resolve() == stores[split]
    # Tile grids keep the stores' own names (the id the region task looks up).
    assert (tmp_path / "cohort" / "cache" / "big.h5").read_text() == "big"
    assert (tmp_path / "cohort" / "cache" / "small.h5").read_text() == "small"


def test_two_stores_of_one_name_are_refused(tmp_path: Path) -> None:
    first = _fake_store(tmp_path / "a", "synth_000")
    second = _fake_store(tmp_path / "b", "synth_000")
    stores = {"train": first, "val": second, "test": first}
    with pytest.raises(ValueError, match="two stores named synth_000"):
        make_cohort_dir(tmp_path / "cohort", "x", stores)


def test_ids_are_distinct_and_named_after_their_split() -> None:
    ids = split_ids("big")
    assert len(set(ids.values())) == 3
    assert all(v.endswith(f"_{k}") and v.startswith("big") for k, v in ids.items())


def test_remaking_the_cohort_replaces_old_links(tmp_path: Path) -> None:
    first = _fake_store(tmp_path / "a", "one")
    second = _fake_store(tmp_path / "b", "two")
    make_cohort_dir(tmp_path / "c", "s", dict.fromkeys(("train", "val", "test"), first))
    make_cohort_dir(
        tmp_path / "c", "s", dict.fromkeys(("train", "val", "test"), second)
    )
    train = split_ids("s")["train"]
    assert (tmp_path / "c" / "cache" / f"{train}.ome.zarr").resolve() == second
