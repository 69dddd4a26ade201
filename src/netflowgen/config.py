"""TOML configuration for every command: dataclasses with defaults, loaded from a file, overridden by
command-line flags, printed with `--dump`, and saved beside every output.

Each stage keeps its own settings dataclass next to its code (e.g. `FeatureConfig` in
`netflowgen.features`); this module only knows how to move any (nested) dataclass to and from TOML.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message names the file and key."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain dict with TOML-safe values (None entries are dropped: TOML has no null)."""

    def clean(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {k: clean(v) for k, v in dataclasses.asdict(value).items() if v is not None}
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    return clean(cfg)


def to_toml(cfg: Any) -> str:
    """The resolved configuration as TOML text (what `--dump` prints)."""
    return tomli_w.dumps(to_dict(cfg))


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, where)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Path:
        return Path(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    if tp in (dt.datetime,) and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a dict, checking keys and types; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into a copy of `base`."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def section_if_present(path: Path | str | None, name: str) -> str | None:
    """`name` when the TOML file at `path` has a `[name]` table, else None (use its top level).

    Lets one file configure several commands while a plain file still works for one. An unreadable
    or invalid file gives None here; `load` then reports the error with the file's name."""
    if path is None or not Path(path).exists():
        return None
    try:
        return name if name in tomllib.loads(Path(path).read_text()) else None
    except tomllib.TOMLDecodeError:
        return None


def load(cls: type[T], path: Path | str | None = None, overrides: dict[str, Any] | None = None,
         section: str | None = None, preset: dict[str, Any] | None = None) -> T:
    """The one settings loader: defaults of `cls` <- `preset` <- TOML file (optionally one
    `[section]` of it) <- explicit overrides (flags), then the class's own `validate()` if it has one.

    Overrides whose value is None are ignored, so unset CLI flags keep the file's value.
    """
    data: dict[str, Any] = to_dict(cls())  # type: ignore[call-arg]
    if preset:
        data = merge(data, preset)
    if path is not None:
        p = Path(path)
        try:
            file_data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {p}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML: {e}") from e
        if section is not None:
            file_data = file_data.get(section, {})
        data = merge(data, file_data)
        where = f"{p}" + (f"[{section}]" if section else "")
    else:
        where = "config"
    if overrides:
        data = merge(data, {k: v for k, v in overrides.items() if v is not None})
    cfg = from_dict(cls, data, where)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return cfg


def save_beside(output: Path | str, cfg: Any, extra: dict[str, Any] | None = None) -> Path:
    """Write the resolved config next to an output: `DIR/config.toml` for a directory output,
    `NAME.config.toml` for a file output. Returns the path written."""
    out = Path(output)
    target = out / "config.toml" if out.is_dir() else out.with_name(out.name + ".config.toml")
    data = to_dict(cfg)
    if extra:
        data = merge(data, to_dict(extra))
    target.write_text(tomli_w.dumps(data))
    return target
