"""The training configuration: one TOML file, four sections.

``[task]`` (:class:`~wsi_dram.data.tasks.TaskConfig`), ``[model]``
(:class:`~wsi_dram.model.dram.ModelConfig`), ``[optim]`` and ``[train]``. Read with
:func:`read_train_config`; every key is checked (see :mod:`wsi_dram.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsi_dram.config import Origin, config_to_dict, load_config
from wsi_dram.config import build_section as _build_section
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
    """Read a training config; see :func:`wsi_dram.config.load_config`.

    Raises:
        ConfigError: As :func:`~wsi_dram.config.load_config`, or a value out of
            range; the error names the ``--set`` override that gave the value,
            else the file.
    """
    config = load_config(path, TrainConfig, overrides)
    given = {item.partition("=")[0].strip(): item for item in overrides or []}
    _check(config, Origin(str(path) if path else "<defaults>", given))
    return config


def config_from_dict(data: dict[str, Any], source: str) -> TrainConfig:
    """Rebuild a config from :func:`config_to_dict` data (e.g. in a checkpoint)."""
    config = _build_section(TrainConfig, data, source, "")
    _check(config, Origin(source))
    return config


def _check(config: TrainConfig, origin: Origin) -> None:
    """Range rules; each names the keys it reads (the first one a ``--set``
    override gave is blamed, else the file)."""
    m, t = config.model, config.train
    rules: list[tuple[bool, tuple[str, ...], str]] = [
        (m.glimpses >= 1, ("model.glimpses",), "model.glimpses must be >= 1"),
        (
            m.glimpse_size >= 1,
            ("model.glimpse_size",),
            "model.glimpse_size must be >= 1",
        ),
        (m.scales >= 1, ("model.scales",), "model.scales must be >= 1"),
        (
            m.layers in (1, 2),
            ("model.layers",),
            "model.layers must be 1 (RAM) or 2 (DRAM)",
        ),
        (m.sigma > 0, ("model.sigma",), "model.sigma must be > 0"),
        (
            m.first != "context" or m.context,
            ("model.first", "model.context"),
            'model.first = "context" needs model.context = true',
        ),
        (
            not m.context or m.context_size >= 1,
            ("model.context_size", "model.context"),
            "model.context_size must be >= 1",
        ),
        (
            m.emission != "spatial" or m.context,
            ("model.emission", "model.context"),
            'model.emission = "spatial" needs model.context = true',
        ),
        (
            m.emission != "spatial"
            or m.glimpses
            <= context_feature_side(m.context_size, len(m.context_channels)) ** 2,
            (
                "model.glimpses",
                "model.emission",
                "model.context_size",
                "model.context_channels",
            ),
            'model.emission = "spatial": model.glimpses exceeds the cells of the '
            "context feature map (model.context_size halved per context conv "
            "layer while >= 8, squared)",
        ),
        (t.batch_size >= 1, ("train.batch_size",), "train.batch_size must be >= 1"),
        (t.epochs >= 1, ("train.epochs",), "train.epochs must be >= 1"),
        (
            t.eval_samples >= 1,
            ("train.eval_samples",),
            "train.eval_samples must be >= 1",
        ),
        (
            t.threads >= 0,
            ("train.threads",),
            "train.threads must be >= 0 (0: torch's default)",
        ),
        (config.optim.lr > 0, ("optim.lr",), "optim.lr must be > 0"),
    ]
    for ok, keys, message in rules:
        if not ok:
            blamed = [origin.of(k) for k in keys if origin.of(k) != origin.file]
            raise ConfigError(message, blamed[0] if blamed else origin.file)


def incompatible_keys(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Keys of ``[model]`` and ``[task]`` (except paths) on which two configs differ.

    These decide whether a checkpoint fits a configuration; the rest (epochs,
    learning rate, output folder) may change on resume. Tables (such as
    ``task.options``) are compared key by key, so each entry names one leaf:
    ``task.options.samples_per_epoch (64 vs 32)``; a key set on one side only
    shows ``unset`` on the other.
    """
    da, db = config_to_dict(a), config_to_dict(b)
    diffs: list[str] = []
    for section in ("model", "task"):
        sa = {k: v for k, v in da[section].items() if k not in _RESUME_FREE}
        sb = {k: v for k, v in db[section].items() if k not in _RESUME_FREE}
        _diff_tables(sa, sb, section, diffs)
    return diffs


# [task] keys that may change on resume (where the data lives, not what it is).
_RESUME_FREE = ("data_dir", "download")
_UNSET = object()


def _diff_tables(
    a: dict[str, Any], b: dict[str, Any], prefix: str, out: list[str]
) -> None:
    """Append ``prefix.key (a vs b)`` for each differing leaf, recursing into
    tables present on both sides."""
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _UNSET), b.get(key, _UNSET)
        if isinstance(va, dict) and isinstance(vb, dict):
            _diff_tables(va, vb, f"{prefix}.{key}", out)
        elif va != vb:
            shown = ["unset" if v is _UNSET else repr(v) for v in (va, vb)]
            out.append(f"{prefix}.{key} ({shown[0]} vs {shown[1]})")
