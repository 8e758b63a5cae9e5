"""The training configuration: one TOML file, four sections.

``[task]`` (:class:`~wsi_dram.data.tasks.TaskConfig`), ``[model]``
(:class:`~wsi_dram.model.dram.ModelConfig`), ``[optim]`` and ``[train]``. Read with
:func:`read_train_config`; every key is checked (see :mod:`wsi_dram.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsi_dram.config import build_section as _build_section
from wsi_dram.config import config_to_dict, load_config
from wsi_dram.data.tasks import SensorSpec, TaskConfig
from wsi_dram.errors import ConfigError
from wsi_dram.model.dram import ModelConfig
from wsi_dram.model.modules import context_feature_side


@dataclass
class OptimConfig:
    """The ``[optim]`` section (Adam).

    Attributes:
        lr: initial learning rate.
        lr_decay: multiplicative decay applied after every epoch
            (``lr_epoch = lr * lr_decay**epoch``, independent of the epoch count,
            so a run can be extended on resume).
        weight_decay: Adam L2 weight decay.
        grad_clip: clip the global gradient norm to this value (0: no clipping).
    """

    lr: float = 1e-3
    lr_decay: float = 0.95
    weight_decay: float = 0.0
    grad_clip: float = 0.0


@dataclass
class TrainSection:
    """The ``[train]`` section.

    Attributes:
        epochs: epochs to train in total (a resumed run continues to this).
        batch_size: images per optimiser step, over all DDP ranks together.
        seed: model initialisation, data order and sampled paths depend only on
            this seed and the epoch.
        reinforce_weight: lambda of the hybrid loss.
        eval_samples: M, paths averaged for the final test figure.
        eval_batch_size: images per batch when evaluating.
        threads: torch CPU threads per process (0: leave torch's default).
        device: "auto" (CUDA when available, else CPU), "cpu" or "cuda".
        out: run folder used when ``--out`` is not given.
        tensorboard: write a TensorBoard log.
        final_test: evaluate best.pt on the test split at the end.
    """

    epochs: int = 30
    batch_size: int = 128
    seed: int = 0
    reinforce_weight: float = 1.0
    eval_samples: int = 10
    eval_batch_size: int = 500
    threads: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out: Path = Path("runs/mnist")
    tensorboard: bool = True
    final_test: bool = True


@dataclass
class TrainConfig:
    """The whole training configuration (``pipelines/*.toml``)."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)

    def sensor_spec(self) -> SensorSpec:
        """The g, K and context side every sensor of the task must have."""
        m = self.model
        return SensorSpec(m.glimpse_size, m.scales, m.context_size)


def read_train_config(
    path: Path | None, overrides: list[str] | None = None
) -> TrainConfig:
    """Read a training config; see :func:`wsi_dram.config.load_config`."""
    config = load_config(path, TrainConfig, overrides)
    _check(config, str(path) if path else "<defaults>")
    return config


def config_from_dict(data: dict[str, Any], source: str) -> TrainConfig:
    """Rebuild a config from :func:`config_to_dict` data (e.g. in a checkpoint)."""
    config = _build_section(TrainConfig, data, source, "")
    _check(config, source)
    return config


def _check(config: TrainConfig, source: str) -> None:
    m, t = config.model, config.train
    rules = [
        (m.glimpses >= 1, "model.glimpses must be >= 1"),
        (m.glimpse_size >= 1, "model.glimpse_size must be >= 1"),
        (m.scales >= 1, "model.scales must be >= 1"),
        (m.layers in (1, 2), "model.layers must be 1 (RAM) or 2 (DRAM)"),
        (m.sigma > 0, "model.sigma must be > 0"),
        (
            m.first != "context" or m.context,
            'model.first = "context" needs model.context = true',
        ),
        (not m.context or m.context_size >= 1, "model.context_size must be >= 1"),
        (
            m.emission != "spatial" or m.context,
            'model.emission = "spatial" needs model.context = true',
        ),
        (
            m.emission != "spatial"
            or m.glimpses
            <= context_feature_side(m.context_size, len(m.context_channels)) ** 2,
            'model.emission = "spatial": model.glimpses exceeds the cells of the '
            "context feature map (model.context_size halved per context conv "
            "layer while >= 8, squared)",
        ),
        (t.batch_size >= 1, "train.batch_size must be >= 1"),
        (t.epochs >= 1, "train.epochs must be >= 1"),
        (t.eval_samples >= 1, "train.eval_samples must be >= 1"),
        (t.threads >= 0, "train.threads must be >= 0 (0: torch's default)"),
        (config.optim.lr > 0, "optim.lr must be > 0"),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(message, source)


def incompatible_keys(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Keys of ``[model]`` and ``[task]`` (except paths) on which two configs differ.

    These decide whether a checkpoint fits a configuration; the rest (epochs,
    learning rate, output folder) may change on resume.
    """
    da, db = config_to_dict(a), config_to_dict(b)
    diffs = []
    for section in ("model", "task"):
        for key in sorted(set(da[section]) | set(db[section])):
            if key in ("data_dir", "download"):
                continue
            va, vb = da[section].get(key), db[section].get(key)
            if va != vb:
                diffs.append(f"{section}.{key} ({va!r} vs {vb!r})")
    return diffs
