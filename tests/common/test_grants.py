"""Grants (common/grants.py): golden token, round trips, and every way a token is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mydfs.common.errors import Forbidden, Unauthorized
from mydfs.common.grants import (
    Grant,
    check,
    decision_of,
    decode,
    issue,
    issue_decision,
    issue_for,
)

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


TXN = "12" * 16


def test_golden_commit_token() -> None:
    """A decision token: op commit, and the claims txn, ver, prev after the usual ones."""
    token = issue_decision(
        SECRET,
        "commit",
        file_id=FILE,
        txn=TXN,
        version=5,
        prevs=((1, 4), (3, 0)),
        expires=1_900_000_000,
    )
    assert token == (
        "v1.eyJvcCI6ImNvbW1pdCIsImZpbGUiOiJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYiIsInBhdGgi"
        "OiIiLCJncm91cHMiOltdLCJuIjowLCJleHAiOjE5MDAwMDAwMDAsInR4biI6IjEyMTIxMjEyMTIxMjEyMTIxMjEy"
        "MTIxMjEyMTIxMjEyIiwidmVyIjo1LCJwcmV2IjpbWzEsNF0sWzMsMF1dfQ."
        "PH0ggZSpxUF-yp3mfFfuC-N9x-0gzTSmeqyFGrg6bJI"
    )
    grant = decision_of(SECRET, token, TXN, now=1_800_000_000)
    assert grant == Grant("commit", 1_900_000_000, FILE, "", (), 0, TXN, 5, ((1, 4), (3, 0)))
    assert grant.prev_for(1) == 4 and grant.prev_for(3) == 0 and grant.prev_for(2) == 0
    assert check(SECRET, token, op="commit", file_id=FILE, now=1_800_000_000).version == 5


def test_decision_tokens_are_checked_strictly() -> None:
    commit = issue_decision(
        SECRET, "commit", file_id=FILE, txn=TXN, version=2, prevs=((1, 1),), expires=2000
    )
    abort = issue_decision(
        SECRET, "abort", file_id=FILE, txn=TXN, version=0, prevs=(), expires=2000
    )
    assert decision_of(SECRET, abort, TXN, now=1000).op == "abort"
    with pytest.raises(Forbidden, match="another transaction"):
        decision_of(SECRET, commit, "34" * 16, now=1000)
    with pytest.raises(Forbidden, match="expired"):
        decision_of(SECRET, commit, TXN, now=2001)
    with pytest.raises(Forbidden, match="not a decision"):
        decision_of(SECRET, issue_for(SECRET, "write", 60, file_id=FILE, now=1000), TXN, now=1000)
    with pytest.raises(Unauthorized):
        decision_of("another-secret-of-16+", commit, TXN, now=1000)
    # A decision allows nothing else, and nothing else allows a decision (no fallback).
    for op in ("read", "write", "abort"):
        with pytest.raises(Forbidden):
            check(SECRET, commit, op=op, now=1000)
    with pytest.raises(Forbidden):
        check(SECRET, abort, op="commit", now=1000)
    write = issue_for(SECRET, "write", 60, file_id=FILE, now=1000)
    with pytest.raises(Forbidden):
        check(SECRET, write, op="commit", now=1000)
    with pytest.raises(ValueError):
        issue_decision(SECRET, "write", file_id=FILE, txn=TXN, version=1, prevs=(), expires=1)


@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.tuples(st.integers(1, 2**32 - 2), st.integers(0, 2**32 - 1)), max_size=20),
    st.sampled_from(["commit", "abort"]),
)
def test_decision_tokens_round_trip(version: int, prevs: list[tuple[int, int]], op: str) -> None:
    token = issue_decision(
        SECRET, op, file_id=FILE, txn=TXN, version=version, prevs=tuple(prevs), expires=10
    )
    grant = decision_of(SECRET, token, TXN, now=5)
    assert (grant.op, grant.version, grant.prevs, grant.file_id) == (
        op,
        version,
        tuple(prevs),
        FILE,
    )
    for g, _ in prevs:
        assert grant.prev_for(g) == next(p for h, p in prevs if h == g)  # the first one named
