"""The typed TOML config loader: keys, types, overrides, round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from wsi_dram.config import config_to_dict, dump_toml, load_config
from wsi_dram.errors import ConfigError


@dataclass
class Inner:
    lr: float = 1e-3
    layers: list[int] = field(default_factory=lambda: [16, 32])
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = "run"
    epochs: int = 3
    out: Path = Path("runs/x")
    flag: bool = False
    limit: float | None = None
    inner: Inner = field(default_factory=Inner)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_file_and_overrides_are_applied_in_order(tmp_path: Path) -> None:
    path = _write(tmp_path, 'epochs = 5\n[inner]\nlr = 0.5\nmode = "b"\n')
    cfg = load_config(path, Outer, ["inner.lr=2e-4", "out=elsewhere", "limit=3"])
    assert cfg.epochs == 5
    assert cfg.inner.lr == pytest.approx(2e-4)
    assert cfg.inner.mode == "b"
    assert cfg.out == Path("elsewhere")
    assert cfg.limit == 3.0 and isinstance(cfg.limit, float)
    assert cfg.inner.layers == [16, 32]


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, "[inner]\nlayer = [1]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Outer)
    text = str(info.value)
    assert str(path) in text
    assert "'inner.layer'" in text and "did you mean 'inner.layers'" in text


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("epochs=2.5", "epochs must be an integer"),
        ("flag=1", "flag must be true or false"),
        ("inner.mode=c", "is not one of"),
        ("inner.layers=3", "must be a list"),
        ("epochs", "not of the form key=value"),
        ("epochs.x=1", "epochs must be an integer"),
    ],
)
def test_bad_values_are_config_errors(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(None, Outer, [override])


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", Outer)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "epochs = = 3"), Outer)


def test_dump_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, Outer, ['name="a \\"quoted\\" name"', "inner.lr=0.25"])
    text = dump_toml(config_to_dict(cfg))
    again = load_config(_write(tmp_path, text), Outer)
    assert again == cfg


def test_errors_name_the_override_or_the_file_that_caused_them(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, Outer, ["inner.mode=c"])
    assert info.value.path == "--set inner.mode=c"
    with pytest.raises(ConfigError) as info:
        load_config(path, Outer, ["inner.lyers=[1]"])
    assert info.value.path == "--set inner.lyers=[1]"
    assert "did you mean 'inner.layers'" in info.value.reason
    bad = _write(tmp_path, "epochs = 2.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, Outer, ["inner.lr=1e-4"])
    assert info.value.path == str(bad)
