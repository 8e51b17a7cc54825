"""Decisions of in-place edits: the table and the rules (pure, no I/O, no clock).

An edit of a file is a two-phase commit with the client as coordinator (``docs/tracker.md``,
Edits): every participant group prepares, then the tracker **decides**, and its decision record
in the edit log is the commit point. The decision of a transaction ``txn`` is made once: the
first one (a client's commit or abort, or an abort asked for by a participant that waited too
long) wins, and every later request for ``txn`` gets it again.

* :class:`DecisionTable` holds the decisions of the last ``edit_decision_retention`` seconds,
  oldest first (:meth:`DecisionTable.expire` forgets older ones; the time comes in).
* :class:`CommitRequest` checks the body of ``POST /meta/edits/{txn}/commit``.
* :func:`judge` says what a commit request becomes given the file's current entry: a commit
  decision with the new entry, or an abort decision plus the refusal the client gets.

The shell (:mod:`mydfs.tracker.edits`) logs the decision (``DECIDE`` edit, fsynced), then
answers; :meth:`mydfs.tracker.namespace.Namespace.apply` applies it, on replay too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mydfs.common.errors import Conflict, InvalidArgument, MydfsError, NotFound
from mydfs.common.location import MAX_GROUP, Location
from mydfs.common.paths import check_file_path
from mydfs.common.slices import PAYLOAD_CAPACITY
from mydfs.tracker.records import (
    MAX_PAIRS,
    MAX_SIZE,
    MAX_U32,
    Decision,
    FileEntry,
    Outcome,
    check_file_id,
    merge_versions,
    parse_head,
)


class DecisionTable:
    """txn → :class:`Decision`, in the order they were recorded (``at`` ascending as far as the
    wall clock is monotonic). Recording a txn again replaces it (a replay after the live
    tracker forgot an expired decision and decided anew must not fail)."""

    def __init__(self) -> None:
        self._by_txn: dict[str, Decision] = {}

    def get(self, txn: str) -> Decision | None:
        return self._by_txn.get(txn)

    def put(self, decision: Decision) -> None:
        self._by_txn.pop(decision.txn, None)
        self._by_txn[decision.txn] = decision

    def expire(self, now: float, retention: float) -> int:
        """Forget the decisions recorded more than ``retention`` seconds before ``now``
        (oldest first, stopping at the first one still kept); the number forgotten."""
        cutoff = now - retention
        gone = 0
        while self._by_txn:
            txn, first = next(iter(self._by_txn.items()))
            if first.at >= cutoff:
                break
            del self._by_txn[txn]
            gone += 1
        return gone

    def __len__(self) -> int:
        return len(self._by_txn)

    def __iter__(self) -> Iterator[Decision]:
        return iter(list(self._by_txn.values()))

    def snapshot(self) -> list[Decision]:
        return list(self._by_txn.values())


def check_txn(value: Any) -> str:
    """A transaction id is 32 lowercase hex digits (``uuid4().hex``)."""
    return check_file_id(value, "txn")


def _uint(body: Mapping[str, Any], key: str, limit: int, *, optional: bool = False) -> int | None:
    value = body.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise InvalidArgument(f"{key} must be an integer 0..{limit}, got {value!r}", field=key)
    return value


def _require(body: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if key not in body:
            raise InvalidArgument(f"missing field {key!r}", field=key)


def check_body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidArgument("the body must be a JSON object")
    return body


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """The body of ``POST /meta/edits/{txn}/commit`` (see ``docs/tracker.md``)."""

    path: str
    file_id: str
    base: int
    layout_change: bool
    size: int
    slices: int
    head_given: bool
    head: Location | None
    groups: tuple[int, ...]
    if_version: int | None
    offset: int | None

    @staticmethod
    def from_dict(body: Any) -> CommitRequest:
        """Check a request body; a bad field raises :class:`InvalidArgument` naming it."""
        b = check_body(body)
        _require(b, "path", "file_id", "base", "layout_change", "size", "slices", "groups")
        path = b["path"]
        if not isinstance(path, str):
            raise InvalidArgument(f"path must be a string, got {path!r}", field="path")
        check_file_path(path)
        file_id = check_file_id(b["file_id"])
        base = _uint(b, "base", MAX_U32)
        size = _uint(b, "size", MAX_SIZE)
        slices = _uint(b, "slices", MAX_U32 - 1)
        if_version = _uint(b, "if_version", MAX_U32, optional=True)
        offset = _uint(b, "offset", MAX_SIZE, optional=True)
        assert base is not None and size is not None and slices is not None
        change = b["layout_change"]
        if not isinstance(change, bool):
            raise InvalidArgument("layout_change must be true or false", field="layout_change")
        groups = b["groups"]
        if (
            not isinstance(groups, list)
            or len(groups) > MAX_PAIRS
            or not all(type(g) is int and 1 <= g <= MAX_GROUP for g in groups)
            or len(set(groups)) != len(groups)
        ):
            raise InvalidArgument(
                f"groups must be a list of distinct group ids 1..{MAX_GROUP} (at most {MAX_PAIRS})",
                field="groups",
            )
        head_given = "head" in b
        head = parse_head(b.get("head")) if head_given else None
        if size > slices * PAYLOAD_CAPACITY:
            raise InvalidArgument(
                f"size {size} does not fit in {slices} slices of {PAYLOAD_CAPACITY} bytes",
                field="size",
            )
        return CommitRequest(
            path,
            file_id,
            base,
            change,
            size,
            slices,
            head_given,
            head,
            tuple(groups),
            if_version,
            offset,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a commit request becomes: the decision to record, and (for an abort) the error the
    client gets once it is recorded (the shell adds the abort token to its context)."""

    decision: Decision
    refusal: MydfsError | None = None


def abort_of(txn: str, file_id: str, path: str, now: float) -> Decision:
    """An abort decision (version 0, no prevs, no entry)."""
    return Decision(txn, file_id, path, Outcome.ABORT, 0, (), None, now)


def judge(current: FileEntry | None, req: CommitRequest, txn: str, now: float) -> Verdict:
    """The decision for an undecided ``txn`` whose client asks to commit ``req``.

    ``current`` is the entry at ``req.path`` (None when there is no file there). Refusals that
    abort (recorded, so a participant asking later learns it): no such file or another file id
    (:class:`NotFound`), ``if_version`` stale (:class:`Conflict` ``reason=version``), a
    layout-changing commit after ``base`` (``reason=layout_changed``). A request that cannot be
    right whatever the state (a head set on a file that has one, a count that contradicts the
    head) raises :class:`InvalidArgument` and records nothing.
    """
    path = req.path
    if current is None or current.file_id != req.file_id:
        refusal: MydfsError = NotFound(
            "no such file (or the path holds another file now)",
            path=path,
            file_id=req.file_id,
            txn=txn,
        )
        return Verdict(abort_of(txn, req.file_id, path, now), refusal)
    if req.if_version is not None and req.if_version != current.version:
        refusal = Conflict(
            f"the file is at version {current.version}, not {req.if_version}",
            reason="version",
            path=path,
            version=current.version,
            txn=txn,
        )
        return Verdict(abort_of(txn, req.file_id, path, now), refusal)
    if req.base > current.version:
        raise InvalidArgument(
            f"base {req.base} is newer than the file's version {current.version}", field="base"
        )
    if current.layout > req.base:
        refusal = Conflict(
            f"the file's layout changed at version {current.layout}, after base {req.base}",
            reason="layout_changed",
            path=path,
            layout=current.layout,
            txn=txn,
        )
        return Verdict(abort_of(txn, req.file_id, path, now), refusal)
    if req.head_given and req.head is not None and current.head is not None:
        raise InvalidArgument(
            "head may only be set on an empty file (or cleared when every slice goes)",
            field="head",
        )
    head = req.head if req.head_given else current.head
    if (head is None) != (req.slices == 0):
        raise InvalidArgument(
            "the new head must be null exactly when slices is 0", field="head", slices=req.slices
        )
    if req.slices == 0 and req.size != 0:
        raise InvalidArgument("a file without slices must have size 0", field="size")
    if current.version >= MAX_U32:
        raise Conflict("the file's version cannot grow any more", reason="version", path=path)
    version = current.version + 1
    prevs = tuple((g, current.version_of(g)) for g in req.groups)
    entry = replace(
        current,
        size=req.size,
        slices=req.slices,
        head=head,
        hash="",
        mtime=now,
        version=version,
        versions=merge_versions(current.versions, req.groups, version),
        layout=version if req.layout_change else current.layout,
    )
    decision = Decision(
        txn, req.file_id, path, Outcome.COMMIT, version, prevs, req.offset, now, entry
    )
    return Verdict(decision)
