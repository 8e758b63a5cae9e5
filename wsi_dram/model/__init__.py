"""DRAM/RAM recurrent attention models."""

from wsi_dram.model.dram import (
    DRAM,
    DramOutput,
    ModelConfig,
    hybrid_loss,
    predict_log_probs,
)

__all__ = ["DRAM", "DramOutput", "ModelConfig", "hybrid_loss", "predict_log_probs"]
