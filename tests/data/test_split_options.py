"""Checks of the split shares and of fields larger than the cohort's slides."""

from __future__ import annotations

import pytest

from tests.data.slide_cohort import SIZE, SlideCohort, region_config, slide_cohort  # noqa: F401
from wsi_dram.data.slide_tasks import read_options
from wsi_dram.data.tasks import build_task
from wsi_dram.errors import ConfigError


@pytest.mark.parametrize(
    "shares",
    [[0.5, 0.6, 0.2], [1.0, 1.0, 1.0], [1.2, 0.0, 0.0], [0.5, -0.1, 0.6]],
)
def test_split_shares_out_of_range_are_refused(
    slide_cohort: SlideCohort,  # noqa: F811
    shares: list[float],
) -> None:
    config = region_config(slide_cohort, split_fractions=shares)
    with pytest.raises(ConfigError, match=r"split_fractions: each share in \[0, 1\]"):
        read_options(config.task)


@pytest.mark.parametrize(
    "shares", [[0.5, 0.25, 0.25], [0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [1, 0, 0]]
)
def test_split_shares_summing_to_one_or_less_are_kept(
    slide_cohort: SlideCohort,  # noqa: F811
    shares: list[float],
) -> None:
    config = region_config(slide_cohort, split_fractions=shares)
    assert read_options(config.task).split_fractions == shares


def test_a_field_larger_than_every_slide_is_warned_about(
    slide_cohort: SlideCohort,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert SIZE == (1536, 1536)  # every slide of the tiny cohort
    for field_size, warned in [(1536, False), (2048, True)]:
        caplog.clear()
        config = region_config(slide_cohort, field_size=field_size)
        with caplog.at_level("WARNING", logger="wsi_dram"):
            build_task(config.task, config.sensor_spec())
        messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        hits = [m for m in messages if "larger than every slide" in m]
        assert bool(hits) == warned, messages
        if warned:
            assert "field_size = 2048 px" in hits[0]
            assert "1536 x 1536" in hits[0]
