"""Internal-call signatures, HTTP Range parsing and config loading."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mydfs.common import auth
from mydfs.common.config import REQUIRED, ConfigError, Option, add_arguments, load, render_default
from mydfs.common.errors import InvalidArgument
from mydfs.common.httprange import RangeNotSatisfiable, parse_range

SECRET = "0123456789abcdef-secret"


def test_signature_round_trip_and_tampering() -> None:
    value = auth.sign(SECRET, "GET", "/internal/slices/3?gen=7", now=1000)
    assert auth.verify(SECRET, "GET", "/internal/slices/3?gen=7", value, now=1000)
    assert auth.verify(SECRET, "get", "/internal/slices/3?gen=7", value, now=1200)
    assert not auth.verify(SECRET, "GET", "/internal/slices/3?gen=8", value, now=1000)
    assert not auth.verify(SECRET, "PUT", "/internal/slices/3?gen=7", value, now=1000)
    assert not auth.verify(
        "another-secret-0000", "GET", "/internal/slices/3?gen=7", value, now=1000
    )
    assert not auth.verify(SECRET, "GET", "/internal/slices/3?gen=7", value, now=1000 + 301)
    for bad in (None, "", "nonsense", "abc:def", "1000:", "\u00b2:ab", "9" * 5000 + ":ab"):
        assert not auth.verify(SECRET, "GET", "/x", bad, now=1000)
    assert not auth.verify(SECRET, "GET", "/x", "1000:\u00e9\u00e9", now=1000)


def test_signature_covers_the_body_when_given() -> None:
    value = auth.sign(SECRET, "POST", "/heartbeat", now=1000, body=b'{"a":1}')
    assert auth.verify(SECRET, "POST", "/heartbeat", value, now=1000, body=b'{"a":1}')
    assert not auth.verify(SECRET, "POST", "/heartbeat", value, now=1000, body=b'{"a":2}')
    assert not auth.verify(SECRET, "POST", "/heartbeat", value, now=1000, body=b"")
    assert not auth.verify(SECRET, "POST", "/heartbeat", value, now=1000)
    bare = auth.sign(SECRET, "POST", "/heartbeat", now=1000)
    assert not auth.verify(SECRET, "POST", "/heartbeat", bare, now=1000, body=b'{"a":1}')


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=2-5", 10, (2, 4)),
        ("bytes=2-", 10, (2, 8)),
        ("bytes=5-100", 10, (5, 5)),
        ("bytes=-3", 10, (7, 3)),
        ("bytes=-30", 10, (0, 10)),
        ("BYTES = 1-1", 10, (1, 1)),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [
        "items=0-1",
        "bytes=1-2,4-5",
        "bytes=a-b",
        "bytes=-",
        "bytes=5-2",
        "bytes=\u00b2-3",
        "bytes=0-\u00b2",
        "bytes=-\u0663",
        "bytes=" + "9" * 5000 + "-",
        "bytes=+1-2",
    ],
)
def test_parse_range_rejects(header: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_range(header, 10)


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=-1", 0)])
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.status == 416


OPTIONS = (
    Option("name", "str", REQUIRED, "a name", "n1"),
    Option("port", "int", 8000, "a port"),
    Option("ratio", "float", 0.5, "a ratio"),
    Option("flag", "bool", False, "a flag"),
    Option("dir", "path", "", "a folder"),
    Option("peers", "list", [], "peers"),
)


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, OPTIONS)
    return parser.parse_args(argv)


def test_config_flags_override_file(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('name = "a"\nport = 1\npeers = ["x", "y"]\nflag = true\n')
    values = load(OPTIONS, _args(["--config", str(conf), "--port", "2", "--peers", "z"]))
    assert values == {
        "name": "a",
        "port": 2,
        "ratio": 0.5,
        "flag": True,
        "dir": "",
        "peers": ["z"],
    }


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing config key name"):
        load(OPTIONS, _args([]))
    with pytest.raises(ConfigError, match="port"):
        load(OPTIONS, _args(["--name", "a", "--port", "eighty"]))
    conf = tmp_path / "c.toml"
    conf.write_text('name = "a"\nbogus = 1\n')
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        load(OPTIONS, _args(["--config", str(conf)]))
    conf.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(OPTIONS, _args(["--config", str(conf)]))
    with pytest.raises(ConfigError, match="does not exist"):
        load(OPTIONS, _args(["--config", str(tmp_path / "nope.toml")]))
    conf.write_text('name = "a"\nflag = "maybe"\n')
    with pytest.raises(ConfigError, match="flag"):
        load(OPTIONS, _args(["--config", str(conf)]))


def test_printed_default_config_loads_back(tmp_path: Path) -> None:
    text = render_default(OPTIONS, "test")
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    values = load(OPTIONS, _args(["--config", str(conf)]))
    assert values["name"] == "n1" and values["port"] == 8000


def test_signature_survives_reencoding() -> None:
    value = auth.sign(SECRET, "PUT", "/internal/slices/3?next=1%3A2&gen=7", now=1000)
    assert auth.verify(SECRET, "PUT", "/internal/slices/3?gen=7&next=1:2", value, now=1000)
    assert not auth.verify(SECRET, "PUT", "/internal/slices/3?gen=7&next=1:3", value, now=1000)
