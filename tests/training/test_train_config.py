"""Training config: resume diffs name single keys; range errors name --set."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_dram.errors import ConfigError
from wsi_dram.training.config import TrainConfig, incompatible_keys, read_train_config


def _with_options(**options: object) -> TrainConfig:
    config = TrainConfig()
    config.task.kind = "slide_regions"
    config.task.options = dict(options)
    return config


def test_a_changed_task_option_is_named_alone() -> None:
    stored = _with_options(samples_per_epoch=64, field_size=512, labels="l.csv")
    current = _with_options(samples_per_epoch=32, field_size=512, labels="l.csv")
    assert incompatible_keys(stored, current) == [
        "task.options.samples_per_epoch (64 vs 32)"
    ]


def test_option_keys_set_on_one_side_only_and_model_keys() -> None:
    stored = _with_options(field_size=512, top_k=3)
    current = _with_options(field_size=1024, aggregate="topk")
    current.model.hidden = stored.model.hidden + 1
    h = stored.model.hidden
    assert incompatible_keys(stored, current) == [
        f"model.hidden ({h} vs {h + 1})",
        "task.options.aggregate (unset vs 'topk')",
        "task.options.field_size (512 vs 1024)",
        "task.options.top_k (3 vs unset)",
    ]
    assert incompatible_keys(stored, _with_options(field_size=512, top_k=3)) == []


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_a_range_error_from_set_names_the_override(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[train]\nepochs = 3\n")
    with pytest.raises(ConfigError) as info:
        read_train_config(path, ["train.epochs=-1"])
    assert str(info.value) == "--set train.epochs=-1: train.epochs must be >= 1"


def test_a_range_error_from_the_file_names_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[train]\nepochs = 0\n")
    with pytest.raises(ConfigError) as info:
        read_train_config(path, ["optim.lr=0.5"])
    assert str(info.value) == f"{path}: train.epochs must be >= 1"


def test_a_two_key_rule_blames_the_override_that_broke_it(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[model]\nfirst = "context"\ncontext = true\n')
    with pytest.raises(ConfigError) as info:
        read_train_config(path, ["model.context=false"])
    assert info.value.path == "--set model.context=false"
    assert "needs model.context = true" in info.value.reason
    # a whole section given with --set is named too
    with pytest.raises(ConfigError) as info:
        read_train_config(path, ["optim={lr = -1.0}"])
    assert info.value.path == "--set optim={lr = -1.0}"
