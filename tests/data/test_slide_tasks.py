"""Region and slide tasks over a tiny synthetic cache: splits, labels, sampling."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import box

from tests.data.slide_cohort import SlideCohort, region_config, slide_cohort  # noqa: F401
from wsi_dram.cache.store import open_cache
from wsi_dram.data.slide_tasks import (
    RegionTask,
    WholeSlideTask,
    cohort_splits,
    read_options,
    stratified_split,
    tissue_square,
)
from wsi_dram.data.tasks import build_task
from wsi_dram.errors import ConfigError
from wsi_dram.glimpse.slide import SlideSensor


def _task(cohort: SlideCohort, **options: object) -> RegionTask:
    config = region_config(cohort, **options)
    task = build_task(config.task, config.sensor_spec())
    assert isinstance(task, RegionTask)
    return task


def test_stratified_split_is_by_slide_and_by_class() -> None:
    items = [(f"t{i}", 1) for i in range(8)] + [(f"n{i}", 0) for i in range(12)]
    parts = stratified_split(items, [0.5, 0.25, 0.25], seed=4)
    ids = [s for part in parts for s, _ in part]
    assert sorted(ids) == sorted(s for s, _ in items)  # every slide once
    assert len(set(ids)) == len(ids)
    # 8 tumour slides: 4/2/2; 12 normal: 6/3/3.
    assert [sum(lab for _, lab in p) for p in parts] == [4, 2, 2]
    assert [sum(1 - lab for _, lab in p) for p in parts] == [6, 3, 3]
    assert parts == stratified_split(items, [0.5, 0.25, 0.25], seed=4)
    assert parts != stratified_split(items, [0.5, 0.25, 0.25], seed=5)


def test_cohort_csv_carves_val_from_train_and_drops_exclusions(tmp_path: Path) -> None:
    path = tmp_path / "cohort.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id", "split", "label"])
        w.writerows([(f"tumor_{i:03d}", "train", 1) for i in range(1, 11)])
        w.writerows([(f"normal_{i:03d}", "train", 0) for i in range(1, 11)])
        w.writerows([(f"test_{i:03d}", "test", "") for i in range(1, 5)])
    config = region_config(
        SlideCohort(tmp_path, tmp_path, tmp_path, path, (), ()),
        labels=None,
        cohort=path,
        val_fraction=0.2,
        exclude_training={"normal_002": "mislabelled"},
    )
    splits = cohort_splits(read_options(config.task))
    train = {s for s, _ in splits["train"]}
    val = {s for s, _ in splits["val"]}
    assert not train & val
    assert "normal_002" not in train | val
    assert len(val) == 4  # round(0.2 * 10) tumour + round(0.2 * 9) normal
    assert [lab for _, lab in splits["test"]] == [None] * 4


def test_options_are_checked(slide_cohort: SlideCohort) -> None:  # noqa: F811
    config = region_config(slide_cohort, aggregate="mean")
    with pytest.raises(ConfigError, match="aggregate"):
        read_options(config.task)
    config = region_config(slide_cohort, cohort=slide_cohort.labels)
    with pytest.raises(ConfigError, match="exactly one"):
        read_options(config.task)


def test_splits_are_disjoint_by_slide(slide_cohort: SlideCohort) -> None:  # noqa: F811
    task = _task(slide_cohort)
    seen = [
        s.slide_id for sp in ("train", "val", "test") for s in task.split_slides(sp)
    ]
    assert sorted(seen) == sorted(slide_cohort.ids)
    # One tumour and one normal slide in train and in val.
    for split in ("train", "val"):
        assert sorted(s.label for s in task.split_slides(split)) == [0, 1]


@pytest.mark.parametrize("split", ["train", "val"])
def test_region_labels_match_the_tumour_outline(
    slide_cohort: SlideCohort,  # noqa: F811
    split: str,
) -> None:
    task = _task(slide_cohort, samples_per_epoch=64, eval_fields_per_slide=8)
    items = task.items(split, epoch=0, seed=1)
    f = task.opts.field_size
    slides = task.split_slides(split)
    assert set(items[:, 3].tolist()) == {0, 1}
    for index, x0, y0, label in items.tolist():
        slide = slides[index]
        geometry = open_cache(slide.cache.path).tumor_geometry
        field = box(x0, y0, x0 + f, y0 + f)
        if label == 1:
            # The label raster is 16 px: allow one raster pixel of outline.
            grown = shapely.intersection(geometry.buffer(16), field).area
            assert slide.label == 1
            assert grown / f**2 > task.opts.tumor_fraction
        elif geometry is not None and not geometry.is_empty:
            assert shapely.intersection(geometry.buffer(-16), field).area == 0


def test_training_draws_are_balanced_and_seeded(slide_cohort: SlideCohort) -> None:  # noqa: F811
    task = _task(slide_cohort, samples_per_epoch=40)
    a = task.items("train", epoch=2, seed=7)
    assert len(a) == 40 and int(a[:, 3].sum()) == 20
    assert np.array_equal(a, task.items("train", epoch=2, seed=7))
    assert not np.array_equal(a, task.items("train", epoch=3, seed=7))
    # Fields lie on the position grid (field / 8 = 64 px).
    assert task.step == 64
    assert (a[:, 1:3] % 64 == 0).all()


def test_batches_shard_over_ranks(slide_cohort: SlideCohort) -> None:  # noqa: F811
    task = _task(slide_cohort, samples_per_epoch=16)
    whole = list(task.batches("train", 8, 0, 0))
    halves = [
        list(task.batches("train", 8, 0, 0, rank=r, world_size=2)) for r in (0, 1)
    ]
    assert len(whole) == 2
    for b, (sensor, labels) in enumerate(whole):
        assert isinstance(sensor, SlideSensor)
        assert sensor.fields.shape == (8, 3) and (sensor.fields[:, 2] == 512).all()
        joined = np.concatenate([halves[r][b][0].fields for r in (0, 1)])
        assert np.array_equal(joined, sensor.fields)
        assert (
            labels.tolist() == task.items("train", 0, 0)[8 * b : 8 * b + 8, 3].tolist()
        )
    sensor, _ = whole[0]
    assert tuple(sensor.context().shape) == (8, 3, 16, 16)
    assert tuple(sensor.read(torch.zeros(8, 2)).shape) == (8, 2, 3, 16, 16)


def test_fixed_eval_fields(slide_cohort: SlideCohort) -> None:  # noqa: F811
    task = _task(slide_cohort, eval_fields_per_slide=6)
    items = task.items("val")
    assert np.array_equal(
        items, _task(slide_cohort, eval_fields_per_slide=6).items("val")
    )
    assert task.size("val") == len(items) == 12
    # The tumour slide gives 3 tumour and 3 normal fields, the normal slide 6 normal.
    for index, slide in enumerate(task.split_slides("val")):
        labels = items[items[:, 0] == index, 3]
        assert int(labels.sum()) == (3 if slide.label == 1 else 0)


def test_slide_task_field_is_the_tissue_square(slide_cohort: SlideCohort) -> None:  # noqa: F811
    config = region_config(slide_cohort)
    config.task.kind = "slide"
    task = build_task(config.task, config.sensor_spec())
    assert isinstance(task, WholeSlideTask)
    sensor, labels = next(task.batches("val", 8, 0, 0))
    slides = task.split_slides("val")
    assert labels.tolist() == [s.label for s in slides]
    for (x0, y0, side), s in zip(sensor.fields.tolist(), slides, strict=True):
        mask, d = s.cache.tissue_mask()
        rows, cols = np.nonzero(mask)
        bx0, bx1 = cols.min() * d, (cols.max() + 1) * d
        by0, by1 = rows.min() * d, (rows.max() + 1) * d
        assert side == int(np.ceil(max(bx1 - bx0, by1 - by0)))
        assert x0 <= bx0 and x0 + side >= bx1 and y0 <= by0 and y0 + side >= by1
        assert (x0, y0, side) == tissue_square(s.cache)


def test_camelyon16_pipeline_states_its_exclusions() -> None:
    from wsi_dram.training.config import read_train_config

    root = Path(__file__).resolve().parents[2]
    config = read_train_config(root / "pipelines" / "camelyon16.toml")
    opts = read_options(config.task)
    assert opts.cohort == Path("data_manifests/camelyon16.csv")
    assert set(opts.exclude_training) == {"normal_086", "normal_144"}
    assert set(opts.exclude_lesion_scoring) == {"test_049", "test_114"}
    assert set(opts.exclude_slide_scoring) == {"test_049"}
    assert all(reason for reason in opts.exclude_training.values())
    rows = (root / "data_manifests" / "camelyon16.csv").read_text().splitlines()
    assert len(rows) == 401  # header + 400 slides


def test_centred_tumour_fields_have_tumour_near_their_centre(
    slide_cohort: SlideCohort,  # noqa: F811
) -> None:
    task = _task(slide_cohort, samples_per_epoch=40, centred_tumour=1.0)
    items = task.items("train", epoch=0, seed=3)
    f = task.opts.field_size
    slides = task.split_slides("train")
    tumour = items[items[:, 3] == 1]
    assert len(tumour) == 20
    for index, x0, y0, _ in tumour.tolist():
        geometry = open_cache(slides[index].cache.path).tumor_geometry
        # Centred within f/8 per axis on a label pixel (16 px raster): the tumour
        # reaches the square of half-side f/8 + 16 around the field centre ...
        cx, cy = x0 + f / 2, y0 + f / 2
        near = box(cx - f / 8 - 16, cy - f / 8 - 16, cx + f / 8 + 16, cy + f / 8 + 16)
        assert geometry.intersects(near)
        # ... and the field is a tumour field by the usual rule.
        grown = shapely.intersection(geometry.buffer(16), box(x0, y0, x0 + f, y0 + f))
        assert grown.area / f**2 > task.opts.tumor_fraction
    # Not on the position grid, unlike the grid draws.
    assert (tumour[:, 1:3] % task.step != 0).any()
    with pytest.raises(ConfigError, match="centred_tumour"):
        _task(slide_cohort, centred_tumour=1.5)


class _Spotted:
    """A stand-in slide: 40 x 40 thumbnail (8 level-0 px per px) of pale tissue
    on the left half, white glass on the right, one dark 4 x 4 px spot in the
    tissue at rows 10-13, columns 6-9, and a darker ink mark on the glass."""

    mpp = 2.0  # sigma = 25 µm / 2 µm / 8 = 1.56 thumbnail px

    def thumbnail(self) -> tuple[np.ndarray, float]:
        rgb = np.full((40, 40, 3), 255, np.uint8)
        rgb[:, :20] = (220, 170, 200)
        rgb[10:14, 6:10] = (120, 60, 110)
        rgb[30:34, 30:34] = (20, 20, 120)  # ink on glass: not tissue
        return rgb, 8.0

    def tissue_mask(self) -> tuple[np.ndarray, float]:
        mask = np.zeros((20, 20), bool)  # 16 level-0 px per mask px
        mask[:, :10] = True
        return mask, 16.0


def test_dark_tissue_is_the_dense_spot_not_the_ink() -> None:
    from wsi_dram.data.slide_tasks import _dark_tissue

    px = _dark_tissue(_Spotted(), quantile=16 / 800)  # 16 of the 800 tissue px
    assert len(px) == 16
    # level-0 centres (col * 8 + 4, row * 8 + 4): the smoothed minimum is the
    # spot's 4 x 4 core, rows 10-13 and columns 6-9
    cols, rows = (px[:, 0] - 4) // 8, (px[:, 1] - 4) // 8
    assert set(rows.tolist()) == {10, 11, 12, 13}
    assert set(cols.tolist()) == {6, 7, 8, 9}


def test_hard_normal_fields_are_centred_on_dark_tissue_and_normal(
    slide_cohort: SlideCohort,  # noqa: F811
) -> None:
    from wsi_dram.data.slide_tasks import _label_of

    task = _task(slide_cohort, samples_per_epoch=64, hard_normal=1.0)
    fields = task.fields_of("train")
    dark = [f.dark_px for f in fields]
    assert all(len(d) > 0 for d in dark)
    rng = np.random.default_rng(0)
    hard = task._around(fields, dark, 40, 0, rng).astype(np.int64)
    assert 0 < len(hard) <= 40  # fields that would hold tumour are dropped
    for index, x0, y0, label in hard.tolist():
        assert label == 0
        assert _label_of(fields[index], np.array([[x0, y0]]), task.opts)[0] == 0
        # centred within field / 8 = 64 px (per axis) of a dark tissue pixel
        centre = np.array([x0 + 256, y0 + 256])
        assert np.abs(dark[index] - centre).max(axis=1).min() <= 64 + 1
    # the training draw takes its normal fields from them first
    items = task.items("train", epoch=0, seed=3)
    assert int((items[:, 3] == 0).sum()) == 32
    # without the option no slide computes dark pixels
    plain = _task(slide_cohort, samples_per_epoch=64)
    assert all(len(f.dark_px) == 0 for f in plain.fields_of("train"))
