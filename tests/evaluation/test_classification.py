"""evaluate_model: the M = 1 figures do not depend on M."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import wsi_dram.evaluation.classification as classification


class _Sensor:
    pixels_read = 10


class _Task:
    num_classes = 2

    def size(self, split: str) -> int:
        return 12

    def batches(self, split: str, batch_size: int, *_: Any, **__: Any) -> Iterator:
        for _ in range(3):
            yield _Sensor(), torch.tensor([0, 1, 1, 0])


def _one_path_states(monkeypatch: pytest.MonkeyPatch, samples: int) -> list[str]:
    """The generator state each M = 1 call starts from."""
    states: list[str] = []

    def fake(model: Any, sensor: Any, m: int, policy: str, gen: Any) -> Any:
        if m == 1:
            states.append(hashlib.sha1(gen.get_state().numpy()).hexdigest())
        torch.rand(5, generator=gen)  # a path consumes randomness
        return torch.log(torch.full((4, 2), 0.5)), None

    monkeypatch.setattr(classification, "predict_log_probs", fake)
    model = torch.nn.Linear(1, 1)
    task: Any = _Task()
    report = classification.evaluate_model(model, task, "test", samples, seed=3)
    assert report["n"] == 12
    return states


def test_one_path_figures_do_not_depend_on_m(monkeypatch: pytest.MonkeyPatch) -> None:
    alone = _one_path_states(monkeypatch, samples=1)
    with_m = _one_path_states(monkeypatch, samples=4)
    assert len(alone) == 3 and len(set(alone)) == 3  # the generator moves on
    assert with_m == alone
