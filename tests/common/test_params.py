"""Strict parsing of request parameters (common/params.py)."""

from __future__ import annotations

import pytest

from mydfs.common.errors import InvalidArgument
from mydfs.common.location import Location
from mydfs.common.params import (
    MAX_U64,
    parse_finite,
    parse_flag,
    parse_hex_id,
    parse_token,
    parse_uint,
    require_uint,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("7", 7), ("007", 7), ("18446744073709551615", MAX_U64), (None, None), ("", None)],
)
def test_parse_uint_accepts(text: str | None, expected: int | None) -> None:
    assert parse_uint(text, "n") == expected


@pytest.mark.parametrize(
    "text",
    [
        "\u00b2",
        "\u0663",
        "\uff11",
        "9" * 5000,
        "18446744073709551616",
        "-1",
        "+1",
        " 1",
        "1_000",
        "0x10",
        "1.0",
        "nan",
        "1e300",
        "1\r\n",
    ],
)
def test_parse_uint_refuses_with_the_name(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_uint(text, "gen")
    assert info.value.context["field"] == "gen"
    assert "gen=" in info.value.message and len(info.value.message) < 200


def test_parse_uint_bounds_required_and_blanks() -> None:
    assert parse_uint("5", "n", lo=1, hi=5) == 5
    with pytest.raises(InvalidArgument, match=r"out of range 1\.\.5"):
        parse_uint("6", "n", lo=1, hi=5)
    with pytest.raises(InvalidArgument, match="required"):
        require_uint(None, "n")
    assert parse_uint(" 5\t", "n", strip=True) == 5
    assert parse_uint(None, "n", default=3) == 3


def test_parse_finite() -> None:
    assert parse_finite("1733000000.25", "mtime", lo=0, hi=1e11, default=0) == 1733000000.25
    assert parse_finite(None, "mtime", lo=0, hi=1e11, default=1.0) == 1.0
    for bad in ("nan", "inf", "1e300", "-1", "1e5", "\u00b2", "1." + "0" * 50, "9" * 30):
        with pytest.raises(InvalidArgument):
            parse_finite(bad, "mtime", lo=0, hi=1e11, default=0)


def test_parse_token_flag_and_hex_id() -> None:
    assert parse_token("abc-1", "v") == "abc-1"
    for bad in ("a\r\nb", "a b", "\u00e9", "x" * 300, "\x00"):
        with pytest.raises(InvalidArgument):
            parse_token(bad, "v")
    assert parse_flag("1", "f") and not parse_flag(None, "f") and not parse_flag("no", "f")
    with pytest.raises(InvalidArgument):
        parse_flag("maybe", "f")
    assert parse_hex_id("0" * 32, "file") == "0" * 32
    assert parse_hex_id("", "file", required=False) is None
    for bad in ("A" * 32, "0" * 31, "g" * 32, "0" * 33):
        with pytest.raises(InvalidArgument):
            parse_hex_id(bad, "file")


@pytest.mark.parametrize("text", ["1:\u00b2", "\u00b2:1", "1:" + "9" * 5000, "1:", ":1", "1:-1"])
def test_location_parse_refuses_non_ascii_and_long_numbers(text: str) -> None:
    with pytest.raises(InvalidArgument):
        Location.parse(text)
