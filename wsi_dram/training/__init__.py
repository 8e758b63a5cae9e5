"""Training: the config schema, the loop (one process or DDP) and checkpoints."""

from wsi_dram.training.checkpoints import load_checkpoint, load_model, save_checkpoint
from wsi_dram.training.config import (
    OptimConfig,
    TrainConfig,
    TrainSection,
    read_train_config,
)
from wsi_dram.training.trainer import TrainCallbacks, train

__all__ = [
    "OptimConfig",
    "TrainCallbacks",
    "TrainConfig",
    "TrainSection",
    "load_checkpoint",
    "load_model",
    "read_train_config",
    "save_checkpoint",
    "train",
]
