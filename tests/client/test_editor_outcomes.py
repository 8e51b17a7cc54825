"""The coordinator's result when a commit decision's answer was lost: the abort that follows
finds the commit (``conflict reason=committed``), the participants are told, and the edit
returns the decision's own entry and offset (asked of the tracker again with the same txn),
not a later ``stat``: ``append_info``'s version is the one its commit made."""

from __future__ import annotations

from typing import Any

import pytest
from fake_edit_cluster import FakeTracker

from mydfs.client import AsyncClient
from mydfs.client.editor import _Editor
from mydfs.common.errors import Unavailable


async def test_a_commit_found_by_the_abort_returns_the_decisions_entry(
    fake: tuple[FakeTracker, AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, c = fake
    await c.append("/f", b"first")
    decide = _Editor.decide
    calls: list[int] = []

    async def lossy(self: _Editor, *args: Any, **kwargs: Any) -> dict[str, Any]:
        answer = await decide(self, *args, **kwargs)
        calls.append(int(answer["version"]))
        if len(calls) == 1:
            raise Unavailable("the decision's answer was lost (test)")
        return answer

    monkeypatch.setattr(_Editor, "decide", lossy)
    at, entry = await c.append_info("/f", b"second")
    assert calls[0] == calls[1] == entry.version  # asked again: the recorded decision
    assert at == 5 and entry.size == 11
    assert await c.read("/f") == b"firstsecond"
    assert tracker.commits == 2
