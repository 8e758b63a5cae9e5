"""Tasks: what the trainer learns from, looked up by ``[task] kind`` in a registry.

A :class:`Task` hands the trainer batches of ``(sensor, labels)``: the sensor is
any :class:`~wsi_dram.glimpse.sensor.GlimpseSensor` over the batch's fields, so
the trainer never sees pixels and a whole-slide task plugs in by registering a
builder::

    register_task("slide_regions", build_region_task)

Builders have the signature ``builder(config: TaskConfig, sensor: SensorSpec) ->
Task``. Task-specific settings go under ``[task.options]``; a builder can check
them against its own dataclass with :func:`task_options`. Modules listed in
:data:`TASK_MODULES` are imported on the first lookup, so their
``register_task`` calls run without the trainer importing them.

Batches depend only on ``(seed, epoch)`` (order and content), which makes a
resumed run repeat an uninterrupted one exactly.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from wsi_dram.config import build_section as _build_section
from wsi_dram.data.mnist import clutter, load_mnist, translate
from wsi_dram.errors import ConfigError
from wsi_dram.glimpse.sensor import GlimpseSensor, PyramidSensor

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Modules imported on the first task lookup (they call :func:`register_task`).
TASK_MODULES = ["wsi_dram.data.slide_tasks"]

SPLITS = ("train", "val", "test")


@dataclass
class TaskConfig:
    """The ``[task]`` section.

    Attributes:
        kind: Registry key: "mnist", "mnist_translated", "mnist_cluttered", or a
            kind registered by another module.
        data_dir: Where the data lives (MNIST: the four IDX .gz files).
        download: Download missing MNIST files (md5-checked) when reachable.
        val_size: Images held out from the end of the training file as the fixed
            validation split.
        train_subset: Use only the first N training images (0 = all).
        canvas: Side in pixels of translated / cluttered images.
        clutter_pieces: Pieces of other digits added per cluttered image.
        clutter_size: Side of each clutter piece in pixels.
        generation_seed: Seed of the translated / cluttered placement (fixed
            datasets, independent of the training seed).
        background: Sensor value outside the field (0 black, 1 white).
        options: Settings of tasks registered by other modules.
    """

    kind: str = "mnist"
    data_dir: Path = Path("data/mnist")
    download: bool = True
    val_size: int = 6000
    train_subset: int = 0
    canvas: int = 60
    clutter_pieces: int = 4
    clutter_size: int = 8
    generation_seed: int = 1234
    background: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SensorSpec:
    """What the model needs from every sensor: g, K and the context view side."""

    size: int
    scales: int
    context_size: int


@runtime_checkable
class Task(Protocol):
    """A supervised attention task."""

    num_classes: int
    channels: int
    class_names: list[str]

    def size(self, split: str) -> int:
        """Number of items in ``split`` ("train", "val" or "test")."""
        ...

    def batches(
        self,
        split: str,
        batch_size: int,
        epoch: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
    ) -> Iterator[tuple[GlimpseSensor, Tensor]]:
        """Yield ``(sensor, labels (b,) int64)`` batches.

        "train" is shuffled by ``(seed, epoch)`` and drops the last incomplete
        batch; other splits keep their order and every item. With
        ``world_size > 1`` each global batch of ``batch_size`` is cut into
        ``world_size`` shards and rank r gets shard r.
        """
        ...


TaskBuilder = Callable[[TaskConfig, SensorSpec], Task]
_REGISTRY: dict[str, TaskBuilder] = {}


def register_task(kind: str, builder: TaskBuilder) -> None:
    """Make ``[task] kind = "<kind>"`` build its task with ``builder``."""
    _REGISTRY[kind] = builder


def build_task(config: TaskConfig, sensor: SensorSpec) -> Task:
    """Build the task named by ``config.kind``.

    Raises:
        ConfigError: No task of that kind is registered.
    """
    if config.kind not in _REGISTRY:
        for name in TASK_MODULES:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
    if config.kind not in _REGISTRY:
        kinds = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"task.kind = {config.kind!r} is unknown; known: {kinds}")
    task = _REGISTRY[config.kind](config, sensor)
    if config.kind == "slide_regions":  # fields of side field_size (level-0 px)
        region: Any = task
        slides = [s for part in region.slides.values() for s in part]
        sizes = [(s.cache.width, s.cache.height) for s in slides]
        warn_oversized_fields(region.opts.field_size, sizes)
    return task


def warn_oversized_fields(field_size: int, sizes: list[tuple[int, int]]) -> bool:
    """Warn when square fields of side ``field_size`` fit in none of the slides.

    Such fields lie mostly outside every slide (read as padding).

    Args:
        field_size: Field side in level-0 px.
        sizes: Level-0 ``(width, height)`` in px of every slide of the cohort.

    Returns:
        True if the warning was given.
    """
    if not sizes or any(field_size <= min(w, h) for w, h in sizes):
        return False
    distinct = sorted(set(sizes), key=lambda wh: (min(wh), wh))
    shown = ", ".join(f"{w} x {h}" for w, h in distinct[-3:])
    more = f", the largest of {len(distinct)} sizes" if len(distinct) > 3 else ""
    log.warning(
        "task.options.field_size = %d px is larger than every slide of the cohort "
        "(level-0 width x height: %s px%s): each field is mostly outside its slide",
        field_size,
        shown,
        more,
    )
    return True


def task_options(config: TaskConfig, schema: type[T]) -> T:
    """Check ``[task.options]`` against a task's own dataclass.

    Raises:
        ConfigError: Unknown key or wrong type, naming ``task.options.<key>``.
    """
    return _build_section(schema, dict(config.options), "<config>", "task.options.")


def epoch_seed(seed: int, epoch: int, rank: int = 0, stream: int = 0) -> int:
    """A 63-bit seed that depends only on its arguments (for per-epoch RNGs)."""
    mixed = np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(2)
    return int(mixed[0]) << 31 ^ int(mixed[1])


class ArrayTask:
    """A task over in-memory images (N, C, H, W) uint8 per split.

    Args:
        arrays: split -> (images (N, C, H, W) uint8, labels (N,) int64).
        sensor: g, K and the context side.
        num_classes: number of classes.
        background: sensor value outside the image, in ``[0, 1]``.
    """

    def __init__(
        self,
        arrays: dict[str, tuple[np.ndarray, np.ndarray]],
        sensor: SensorSpec,
        num_classes: int,
        background: float = 0.0,
    ) -> None:
        self.arrays = {
            split: (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))
            for split, (x, y) in arrays.items()
        }
        self.spec = sensor
        self.num_classes = num_classes
        self.channels = int(next(iter(arrays.values()))[0].shape[1])
        self.class_names = [str(i) for i in range(num_classes)]
        self.background = background

    def size(self, split: str) -> int:
        """Number of images in ``split``."""
        return len(self._split(split)[1])

    def _split(self, split: str) -> tuple[Tensor, Tensor]:
        if split not in self.arrays:
            known = ", ".join(self.arrays)
            raise ConfigError(f"split {split!r} is unknown; known: {known}")
        return self.arrays[split]

    def batches(
        self,
        split: str,
        batch_size: int,
        epoch: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
    ) -> Iterator[tuple[GlimpseSensor, Tensor]]:
        """See :meth:`Task.batches`."""
        images, labels = self._split(split)
        n = len(labels)
        if split == "train":
            gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            order = torch.randperm(n, generator=gen)
            stop = n - n % batch_size
        else:
            order = torch.arange(n)
            stop = n
        shard = -(-batch_size // world_size)
        for start in range(0, stop, batch_size):
            idx = order[start : min(start + batch_size, stop)]
            idx = idx[rank * shard : (rank + 1) * shard]
            if len(idx) == 0:
                continue
            x = images[idx].to(device or "cpu", torch.float32) / 255.0  # (b, C, H, W)
            sensor = PyramidSensor(
                x,
                self.spec.size,
                self.spec.scales,
                self.spec.context_size,
                self.background,
            )
            yield sensor, labels[idx].to(device or "cpu")


def _mnist_arrays(
    config: TaskConfig, transform: Callable[[np.ndarray, str], np.ndarray] | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    train_x, train_y = load_mnist(config.data_dir, "train", config.download)
    test_x, test_y = load_mnist(config.data_dir, "test", config.download)
    if not 0 < config.val_size < len(train_y):
        raise ConfigError(f"task.val_size = {config.val_size} out of range")
    cut = len(train_y) - config.val_size
    parts = {
        "train": (train_x[:cut], train_y[:cut]),
        "val": (train_x[cut:], train_y[cut:]),
        "test": (test_x, test_y),
    }
    if config.train_subset:
        x, y = parts["train"]
        parts["train"] = (x[: config.train_subset], y[: config.train_subset])
    out = {}
    for split, (x, y) in parts.items():
        if transform is not None:
            x = transform(x, split)
        out[split] = (x[:, None], y)  # (N, 1, S, S)
    return out


def _split_seed(config: TaskConfig, split: str, stream: int) -> int:
    return epoch_seed(config.generation_seed, SPLITS.index(split), 0, stream)


def build_mnist(config: TaskConfig, sensor: SensorSpec) -> Task:
    """Plain MNIST 28 x 28."""
    return ArrayTask(_mnist_arrays(config, None), sensor, 10, config.background)


def build_translated(config: TaskConfig, sensor: SensorSpec) -> Task:
    """Translated MNIST: each digit at a random place on a ``canvas`` square."""

    def place(x: np.ndarray, split: str) -> np.ndarray:
        return translate(x, config.canvas, _split_seed(config, split, 1))

    return ArrayTask(_mnist_arrays(config, place), sensor, 10, config.background)


def build_cluttered(config: TaskConfig, sensor: SensorSpec) -> Task:
    """Cluttered MNIST: translated, plus pieces of other digits of the same split."""

    def place(x: np.ndarray, split: str) -> np.ndarray:
        canvas = translate(x, config.canvas, _split_seed(config, split, 1))
        return clutter(
            canvas,
            x,
            config.clutter_pieces,
            config.clutter_size,
            _split_seed(config, split, 2),
        )

    return ArrayTask(_mnist_arrays(config, place), sensor, 10, config.background)


register_task("mnist", build_mnist)
register_task("mnist_translated", build_translated)
register_task("mnist_cluttered", build_cluttered)
