"""The task registry and the MNIST tasks' batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import DATA, need
from wsi_dram.data.tasks import (
    ArrayTask,
    SensorSpec,
    TaskConfig,
    build_task,
    register_task,
)
from wsi_dram.errors import ConfigError

SPEC = SensorSpec(size=8, scales=1, context_size=7)


def _task(n: int = 10) -> ArrayTask:
    x = np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(4, 2).repeat(4, 3)
    arrays = {"train": (x, np.arange(n)), "val": (x[:3], np.arange(3))}
    return ArrayTask(arrays, SPEC, num_classes=n)


def test_train_order_depends_only_on_seed_and_epoch() -> None:
    task = _task()
    order = [
        torch.cat([y for _, y in task.batches("train", 4, e, 7)]) for e in (0, 0, 1)
    ]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])
    assert len(order[0]) == 8  # last incomplete batch dropped
    val = torch.cat([y for _, y in task.batches("val", 2, 5, 7)])
    assert val.tolist() == [0, 1, 2]


def test_ranks_get_disjoint_shards_of_each_batch() -> None:
    task = _task()
    whole = [y for _, y in task.batches("train", 4, 0, 7)]
    r0 = [y for _, y in task.batches("train", 4, 0, 7, rank=0, world_size=2)]
    r1 = [y for _, y in task.batches("train", 4, 0, 7, rank=1, world_size=2)]
    for w, a, b in zip(whole, r0, r1, strict=True):
        assert torch.equal(torch.cat([a, b]), w)


def test_sensor_pixels_match_the_images() -> None:
    task = _task()
    sensor, labels = next(iter(task.batches("val", 3, 0, 0)))
    assert sensor.images.shape == (3, 1, 4, 4)
    assert torch.allclose(sensor.images[:, 0, 0, 0], labels.float() / 255)


def test_registry() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        build_task(TaskConfig(kind="nope"), SPEC)
    register_task("tiny_test", lambda config, spec: _task())
    assert build_task(TaskConfig(kind="tiny_test"), SPEC).num_classes == 10


def test_mnist_splits_and_cluttered_shapes() -> None:
    mnist_dir = need(DATA / "mnist")
    cfg = TaskConfig(kind="mnist", data_dir=mnist_dir, download=False, val_size=6000)
    task = build_task(cfg, SPEC)
    assert (task.size("train"), task.size("val"), task.size("test")) == (
        54000,
        6000,
        10000,
    )
    cfg = TaskConfig(
        kind="mnist_cluttered", data_dir=mnist_dir, download=False, train_subset=50
    )
    a = build_task(cfg, SPEC)
    sensor, _ = next(iter(a.batches("train", 8, 0, 0)))
    assert sensor.images.shape == (8, 1, 60, 60)
    b = build_task(cfg, SPEC)
    assert torch.equal(a.arrays["test"][0], b.arrays["test"][0])  # deterministic
