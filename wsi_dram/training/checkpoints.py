"""Checkpoints: model, optimiser, schedule, epoch, config and RNG states in one file.

Written under a temporary name and renamed, so a killed run never leaves half a
checkpoint. :func:`load_model` rebuilds the model from the config stored inside,
so ``evaluate`` and ``visualize`` need nothing but the checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsi_dram.config import config_to_dict
from wsi_dram.errors import CheckpointError, WsiDramError
from wsi_dram.model.dram import DRAM
from wsi_dram.training.config import TrainConfig, config_from_dict, incompatible_keys

FORMAT = "wsi-dram-checkpoint-1"


def rng_states() -> dict[str, Any]:
    """The torch, numpy and Python RNG states (for the record; batches and paths
    are seeded from ``(seed, epoch)`` and do not depend on them)."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def save_checkpoint(
    path: Path,
    model: DRAM,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    config: TrainConfig,
    num_classes: int,
    channels: int,
    metrics: dict[str, Any],
    best_val: float,
) -> None:
    """Write a checkpoint after ``epoch`` completed epochs (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "config": config_to_dict(config),
        "num_classes": num_classes,
        "channels": channels,
        "metrics": metrics,
        "best_val": best_val,
        "rng": rng_states(),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    except (OSError, RuntimeError) as exc:  # disk full: torch raises RuntimeError
        tmp.unlink(missing_ok=True)
        reason = " ".join(str(exc).split())
        raise CheckpointError(
            f"cannot write the checkpoint ({reason}); the previous one is kept",
            path,
        ) from exc


def _short_reason(exc: BaseException, limit: int = 160) -> str:
    """``Type: message`` of ``exc`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: Missing, a directory, unreadable (any failure to
            unpickle: a TIFF, random bytes, a truncated or foreign zip), or not
            a wsi-dram checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError("is a directory, not a checkpoint file", path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - unpickling any file raises anything
        raise CheckpointError(
            f"not a readable checkpoint ({_short_reason(exc)})", path
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError("not a wsi-dram checkpoint", path)
    return payload


def checkpoint_config(payload: dict[str, Any], path: Path) -> TrainConfig:
    """The training config stored in a checkpoint."""
    try:
        return config_from_dict(payload["config"], str(path))
    except WsiDramError as exc:
        raise CheckpointError(f"stored config is invalid: {exc.reason}", path) from exc


def check_compatible(payload: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """Raise :class:`CheckpointError` if the checkpoint's model/task differ.

    The message is one line naming every differing key.
    """
    stored = checkpoint_config(payload, path)
    diffs = incompatible_keys(stored, config)
    if diffs:
        raise CheckpointError(
            "checkpoint comes from another configuration: " + "; ".join(diffs), path
        )


def load_model(
    path: Path, device: torch.device | str = "cpu"
) -> tuple[DRAM, TrainConfig, dict[str, Any]]:
    """Rebuild the model of a checkpoint with its weights, in eval mode.

    Returns:
        ``(model, config, payload)``.
    """
    payload = load_checkpoint(path)
    config = checkpoint_config(payload, path)
    model = DRAM(config.model, int(payload["channels"]), int(payload["num_classes"]))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"weights do not fit the model: {first}", path) from exc
    model.to(device).eval()
    return model, config, payload
