"""Config loading shared by ``mydfs-storage`` and ``mydfs-tracker``.

A process declares its keys once as :class:`Option` objects. From that list come: the command
line flags (``--node-id`` for key ``node_id``), the TOML file keys (``--config FILE``), the
commented default printed by ``--print-config``, and the checks. Flags override the file. A
missing, unknown or malformed key gets a one-line :class:`ConfigError` naming it.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mydfs.common.errors import InvalidArgument


class ConfigError(InvalidArgument):
    code = "config_error"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_KINDS = ("str", "int", "float", "bool", "path", "list")


@dataclass(frozen=True)
class Option:
    """One config key. ``kind`` is str, int, float, bool, path or list (of strings)."""

    key: str
    kind: str
    default: Any
    help: str
    example: Any = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown option kind {self.kind!r}")

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Add ``--config``, ``--print-config`` and one flag per option to ``parser``."""
    parser.add_argument("--config", type=Path, help="TOML config file; flags override it")
    parser.add_argument(
        "--print-config", action="store_true", help="print a commented default config and exit"
    )
    for opt in options:
        if opt.kind == "bool":
            parser.add_argument(opt.flag, dest=opt.key, default=None, action=_BoolAction)
        elif opt.kind == "list":
            parser.add_argument(
                opt.flag, dest=opt.key, default=None, action="append", help=opt.help
            )
        else:
            parser.add_argument(opt.flag, dest=opt.key, default=None, help=opt.help)


class _BoolAction(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kw: Any) -> None:
        kw.pop("nargs", None)
        super().__init__(option_strings, dest, nargs="?", const="true", **kw)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)


def _coerce(opt: Option, value: Any, source: str) -> Any:
    where = f"{opt.key} (from {source})"
    try:
        if opt.kind == "str":
            if not isinstance(value, str):
                raise TypeError("expected a string")
            return value
        if opt.kind == "path":
            if not isinstance(value, str | Path):
                raise TypeError("expected a path")
            return Path(value) if str(value) else ""  # "" keeps the documented default
        if opt.kind == "int":
            if isinstance(value, bool):
                raise TypeError("expected an integer")
            return int(value)
        if opt.kind == "float":
            if isinstance(value, bool):
                raise TypeError("expected a number")
            return float(value)
        if opt.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise TypeError("expected true or false")
        if opt.kind == "list":
            if isinstance(value, str):
                return [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TypeError("expected a list of strings")
            return list(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {where}: bad value {value!r}: {exc}") from None
    raise AssertionError(opt.kind)


def load(options: Sequence[Option], args: argparse.Namespace) -> dict[str, Any]:
    """Merge defaults, the TOML file and flags; check every key. Returns key → value."""
    by_key = {opt.key: opt for opt in options}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in data.items():
            if key not in by_key:
                raise ConfigError(f"unknown config key {key!r} in {path}")
            values[key] = _coerce(by_key[key], value, str(path))
            sources[key] = str(path)
    for opt in options:
        flag_value = getattr(args, opt.key, None)
        if flag_value is not None:
            values[opt.key] = _coerce(opt, flag_value, opt.flag)
            sources[opt.key] = opt.flag
    for opt in options:
        if opt.key not in values:
            if opt.default is REQUIRED:
                raise ConfigError(
                    f"missing config key {opt.key} (set {opt.flag} or {opt.key} in --config)"
                )
            values[opt.key] = opt.default
    return values


def render_default(options: Sequence[Option], title: str) -> str:
    """A commented TOML config with every key, its help and its default (or an example)."""
    lines = [f"# {title}", "# Every key can also be given as a flag: key_name -> --key-name.", ""]
    for opt in options:
        lines.append(f"# {opt.help}")
        if opt.default is REQUIRED:
            lines.append("# (required)")
            value = opt.example
        else:
            value = opt.default if opt.example is None else opt.example
        lines.append(f"{opt.key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '""'
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
