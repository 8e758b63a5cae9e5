"""Typed configuration: nested dataclasses read from TOML, with ``--set`` overrides.

A config file is a TOML table whose sections mirror the dataclass fields. Every
key is checked: an unknown key (a typo) or a value of the wrong type raises
:class:`ConfigError` naming the file, the key and the problem, with the closest
valid key suggested.

Example::

    cfg = load_config(Path("pipelines/mnist.toml"), TrainConfig,
                      overrides=["optim.lr=1e-3", "model.glimpses=8"])
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomllib

from wsi_dram.errors import ConfigError

T = TypeVar("T")


def load_config(
    path: Path | None,
    schema: type[T],
    overrides: list[str] | None = None,
) -> T:
    """Read a TOML file into the dataclass ``schema`` and apply overrides.

    Args:
        path: The TOML file, or None to start from the schema's defaults.
        schema: A dataclass type whose fields (nested dataclasses for sections)
            define the valid keys and their types.
        overrides: ``"section.key=value"`` strings; values are parsed as TOML
            (so ``1e-3``, ``true``, ``[1, 2]``, ``"text"``), falling back to a
            plain string.

    Returns:
        An instance of ``schema``.

    Raises:
        ConfigError: The file is missing or not TOML, a key is unknown, or a
            value has the wrong type.
    """
    data: dict[str, Any] = {}
    source = str(path) if path is not None else "<defaults>"
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError("config file not found", path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", path) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError("not a UTF-8 text file", path) from exc

    given: dict[str, str] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        _set_dotted(data, key.strip(), _parse_value(raw.strip()))
        given[key.strip()] = item

    return build_section(schema, data, Origin(source, given), prefix="")


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a configuration's values came from, for error messages.

    Attributes:
        file: The TOML file (or ``<defaults>``).
        overrides: Dotted key -> the ``--set key=value`` text that set it.
    """

    file: str
    overrides: dict[str, str] = dataclasses.field(default_factory=dict)

    def of(self, key: str) -> str:
        """``--set ...`` when an override set ``key`` (or a section above it),
        else the file."""
        for given, item in self.overrides.items():
            if key == given or key.startswith((f"{given}.", f"{given}[")):
                return f"--set {item}"
        return self.file


def _at(source: str | Origin, key: str) -> str:
    """The origin to name in an error about ``key``."""
    return source.of(key) if isinstance(source, Origin) else source


def config_to_dict(config: Any) -> dict[str, Any]:
    """Turn a config dataclass into plain TOML-able data (paths become strings)."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: convert(getattr(value, f.name))
                for f in dataclasses.fields(value)
            }
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return typing.cast(dict[str, Any], convert(config))


def dump_toml(data: dict[str, Any]) -> str:
    """Write plain data (as from :func:`config_to_dict`) as TOML text.

    None values are left out (TOML has no null); the schema's default restores
    them when the file is read back.
    """
    lines: list[str] = []

    def emit(table: dict[str, Any], name: str) -> None:
        scalars = {
            k: v for k, v in table.items() if not isinstance(v, dict) and v is not None
        }
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if name and scalars:
            lines.append(f"[{name}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {_toml_value(value)}")
        if scalars:
            lines.append("")
        for key, sub in tables.items():
            emit(sub, f"{name}.{key}" if name else key)

    emit(data, "")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def build_section(
    schema: type[T], data: dict[str, Any], source: str | Origin, prefix: str = ""
) -> T:
    """Check plain data (a parsed TOML table) against ``schema`` and build it.

    Args:
        schema: The dataclass type of the section.
        data: The section's keys and values.
        source: The file (or ``<defaults>``) named in errors, or an
            :class:`Origin` that names the ``--set`` override of a key instead.
        prefix: The section's dotted name plus ".", for error messages.

    Raises:
        ConfigError: An unknown key or a value of the wrong type.
    """
    if not isinstance(data, dict):
        section = prefix.rstrip(".")
        raise ConfigError(f"[{section}] must be a table", _at(source, section))
    fields = {f.name: f for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(schema)
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {prefix + near[0]!r}?)" if near else ""
            valid = ", ".join(sorted(fields))
            raise ConfigError(
                f"unknown key {prefix + key!r}{hint}; valid keys here: {valid}",
                _at(source, prefix + key),
            )
    kwargs: dict[str, Any] = {}
    for name in fields:
        if name not in data:
            continue
        kwargs[name] = _coerce(hints[name], data[name], source, f"{prefix}{name}")
    return schema(**kwargs)


def _coerce(hint: Any, value: Any, source: str | Origin, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build_section(hint, value, source, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source, key)
            except ConfigError as exc:
                errors.append(exc.reason)
        reason = errors[0] if errors else f"{key}: bad value"
        raise ConfigError(reason, _at(source, key))
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(
                f"{key} = {value!r} is not one of {choices}", _at(source, key)
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}", _at(source, key))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table, got {value!r}", _at(source, key))
        inner = args[1] if len(args) == 2 else Any
        return {k: _coerce(inner, v, source, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(
                f"{key} must be a path string, got {value!r}", _at(source, key)
            )
        return Path(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"{key} must be a number, got {value!r}", _at(source, key)
            )
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"{key} must be an integer, got {value!r}", _at(source, key)
            )
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(
                f"{key} must be true or false, got {value!r}", _at(source, key)
            )
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(
                f"{key} must be a string, got {value!r}", _at(source, key)
            )
        return value
    return value
