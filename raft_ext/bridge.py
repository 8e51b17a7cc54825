"""Mapping pysyncobj outcomes (``FAIL_REASON`` codes, apply results) to mydfs errors."""

from __future__ import annotations

from typing import Any

from pysyncobj import FAIL_REASON

from mydfs.common.errors import (
    DiskFull,
    MydfsError,
    NoQuorum,
    NotLeader,
    OutcomeUnknown,
    Unavailable,
    error_from_dict,
)

from .machine import ERROR_KEY

#: Our own failure code (pysyncobj's are 0-7): the leader refused the command because its
#: journal's disk is full (:mod:`.diskguard`). A definite failure: the command is in no log.
FAIL_DISK_FULL = 100

FAIL_REASON_NAMES: dict[int, str] = {
    FAIL_REASON.SUCCESS: "success",
    FAIL_REASON.QUEUE_FULL: "queue_full",
    FAIL_REASON.MISSING_LEADER: "missing_leader",
    FAIL_REASON.DISCARDED: "discarded",
    FAIL_REASON.NOT_LEADER: "not_leader",
    FAIL_REASON.LEADER_CHANGED: "leader_changed",
    FAIL_REASON.REQUEST_DENIED: "request_denied",
    FAIL_REASON.UNKNOWN_OUTCOME: "unknown_outcome",
    FAIL_DISK_FULL: "disk_full",
}


def fail_reason_name(code: int) -> str:
    return FAIL_REASON_NAMES.get(code, f"code_{code}")


def error_for_fail_reason(
    code: int, *, node: str, leader_url: str | None, has_quorum: bool
) -> MydfsError:
    """The typed error for a non-success pysyncobj callback.

    Definite failures (the command is known not to be applied) are ``Unavailable`` /
    ``NotLeader`` / ``NoQuorum``; the others are ``OutcomeUnknown``: the command may still
    commit, so a retry must be idempotent.
    """
    reason = fail_reason_name(code)
    if code == FAIL_REASON.QUEUE_FULL:
        return Unavailable("raft submit queue is full", node=node, reason=reason)
    if code == FAIL_REASON.MISSING_LEADER:
        if not has_quorum:
            return NoQuorum("no Raft leader: this node cannot reach a majority", node=node)
        return NotLeader("no Raft leader elected yet", leader=leader_url, node=node, reason=reason)
    if code == FAIL_REASON.NOT_LEADER:
        return NotLeader("this node is not the Raft leader", leader=leader_url, node=node)
    if code == FAIL_REASON.DISCARDED:
        # Another entry was committed at the command's index: it will never apply.
        return Unavailable(
            "command discarded by a leader change (not applied); retry", node=node, reason=reason
        )
    if code == FAIL_DISK_FULL:
        return DiskFull(
            "the Raft leader's journal disk is full; the command was not logged",
            node=node,
            leader=leader_url,
        )
    if code == FAIL_REASON.REQUEST_DENIED:
        return Unavailable("raft request denied", node=node, reason=reason)
    # LEADER_CHANGED (a forwarded command whose leader went away), UNKNOWN_OUTCOME, and codes
    # this version does not know: the leader may have appended the command.
    return OutcomeUnknown(
        "the Raft leader changed before answering; the command may still commit",
        node=node,
        reason=reason,
    )


def unwrap_result(result: Any) -> dict[str, Any]:
    """Turn an apply result into the caller's dict, raising a rejection the machine raised."""
    if isinstance(result, dict):
        error = result.get(ERROR_KEY)
        if error is not None and len(result) == 1 and isinstance(error, dict):
            raise error_from_dict(error)
        return result
    if result is None:
        return {}
    raise OutcomeUnknown("unexpected apply result type", type=type(result).__name__)
