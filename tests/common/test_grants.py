"""Grants (common/grants.py): golden token, round trips, and every way a token is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mydfs.common.errors import Forbidden, Unauthorized
from mydfs.common.grants import Grant, check, decode, issue, issue_for

SECRET = "0123456789abcdef-test"
FILE = "ab" * 16
OTHER = "cd" * 16


def test_golden_token() -> None:
    """The byte layout of docs/security.md: v1.<claims>.<mac>, stable across versions."""
    token = issue(SECRET, Grant("write", 1_900_000_000, FILE, groups=(1, 2), slices=3))
    assert token == (
        "v1.eyJvcCI6IndyaXRlIiwiZmlsZSI6ImFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiIiwicGF0aCI6"
        "IiIsImdyb3VwcyI6WzEsMl0sIm4iOjMsImV4cCI6MTkwMDAwMDAwMH0."
        "M9Pd_TI2uu6JA_BmcOV-05AYomITaJSQG7bLdLCmJCM"  # 32-byte MAC, base64url without padding
    )
    assert decode(SECRET, token) == Grant("write", 1_900_000_000, FILE, "", (1, 2), 3)


def test_check_allows_exactly_its_object() -> None:
    token = issue_for(SECRET, "write", 60, file_id=FILE, groups=(2,), now=1000)
    assert check(SECRET, token, op="write", file_id=FILE, group=2, now=1030).file_id == FILE
    assert check(SECRET, token, op="read", file_id=FILE, now=1030).op == "write"
    with pytest.raises(Forbidden, match="another file"):
        check(SECRET, token, op="write", file_id=OTHER, now=1030)
    with pytest.raises(Forbidden, match="other groups"):
        check(SECRET, token, op="write", file_id=FILE, group=1, now=1030)
    with pytest.raises(Forbidden, match="expired"):
        check(SECRET, token, op="write", file_id=FILE, now=1061)


def test_read_grant_does_not_write_and_paths_bind() -> None:
    token = issue_for(SECRET, "read", 60, path="/a/b", now=0)
    with pytest.raises(Forbidden, match="does not allow write"):
        check(SECRET, token, op="write", now=1)
    assert check(SECRET, token, op="read", path="/a/b", now=1).path == "/a/b"
    with pytest.raises(Forbidden, match="another path"):
        check(SECRET, token, op="read", path="/a/c", now=1)


@pytest.mark.parametrize(
    "token",
    [None, "", "v1", "v1.a.b.c", "v2.e30.AAAA", "v1.e30.!!!!", "v1." + "A" * 3000 + ".x"],
)
def test_malformed_tokens_are_401(token: str | None) -> None:
    with pytest.raises(Unauthorized):
        check(SECRET, token, op="read")


def test_wrong_secret_and_tampering_are_401() -> None:
    token = issue_for(SECRET, "read", 60, file_id=FILE)
    with pytest.raises(Unauthorized, match="does not verify"):
        check("another-secret-of-16+", token, op="read")
    version, _body, mac = token.split(".")
    forged = issue_for(SECRET, "read", 60, file_id=OTHER).split(".")[1]
    with pytest.raises(Unauthorized, match="does not verify"):
        check(SECRET, f"{version}.{forged}.{mac}", op="read")


@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes(text: str) -> None:
    with pytest.raises(Unauthorized):
        decode(SECRET, text)
