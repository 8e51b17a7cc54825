"""The pure parsers of the plain-HTTP edit routes (``storage/http_edit_files.py``):
``Content-Range`` and a ``POST``'s one operation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from mydfs.common.errors import InvalidArgument
from mydfs.storage.http_edit_files import parse_content_range, post_op


@given(st.integers(0, 2**62), st.integers(0, 2**20), st.booleans())
def test_content_range_gives_offset_and_length(a: int, n: int, total: bool) -> None:
    b = a + n
    tail = str(b + 1) if total else "*"
    assert parse_content_range(f"bytes {a}-{b}/{tail}") == (a, n + 1)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "0-3/*",
        "items 0-3/*",
        "bytes 3-1/*",
        "bytes -1-3/*",
        "bytes 0-3",
        "bytes 0-3/3",
        "bytes 0-3/x",
        "bytes 1.5-3/*",
        "bytes " + "9" * 21 + "-" + "9" * 22 + "/*",
        "bytes 0-18446744073709551616/*",
    ],
)
def test_bad_content_ranges_are_refused(header: str | None) -> None:
    with pytest.raises(InvalidArgument):
        parse_content_range(header)


def q(text: str) -> MultiDict[str]:
    out: MultiDict[str] = MultiDict()
    for part in text.split("&") if text else []:
        key, _, value = part.partition("=")
        out.add(key, value)
    return out


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("append", ("append", 0, 0)),
        ("append&if_version=3", ("append", 0, 0)),
        ("truncate=10", ("truncate", 10, 0)),
        ("insert=0&grant=x", ("insert", 0, 0)),
        ("cut=5&length=7", ("cut", 5, 7)),
    ],
)
def test_post_ops(query: str, want: tuple[str, int, int]) -> None:
    assert post_op(q(query)) == want


@pytest.mark.parametrize(
    "query",
    [
        "",
        "truncate=-1",
        "truncate=abc",
        "truncate=",
        "insert=1.5",
        "cut=1",
        "cut=1&length=-2",
        "append&truncate=1",
        "truncate=1&cut=2&length=1",
        "append=yes",
        "append&bogus=1",
        "truncate=1&truncate=2",
        "append&length=3",
    ],
)
def test_bad_post_ops_are_refused(query: str) -> None:
    with pytest.raises(InvalidArgument):
        post_op(q(query))
