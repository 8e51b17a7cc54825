"""Decisions of in-place edits (tracker/decisions.py), pure: the table, the request checks, the
rules of :func:`judge`, and a stateful test of commits and aborts against a simple model,
replayed through the edit log's and the checkpoint's encodings."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mydfs.common.errors import Conflict, InvalidArgument, MydfsError, NotFound
from mydfs.common.location import Location
from mydfs.tracker.checkpoint import decode_checkpoint, encode_checkpoint
from mydfs.tracker.decisions import CommitRequest, DecisionTable, abort_of, judge
from mydfs.tracker.namespace import Namespace
from mydfs.tracker.records import (
    Decide,
    Decision,
    Edit,
    FileEntry,
    Outcome,
    PutFile,
    decode_edit,
    encode_edit,
)

PATH = "/f.bin"
FID = "aa" * 16


def txn(n: int) -> str:
    return f"{n:032x}"


def entry(file_id: str = FID, **kw: Any) -> FileEntry:
    base: dict[str, Any] = {
        "file_id": file_id,
        "size": 10,
        "slices": 1,
        "head": Location(1, 5),
        "hash": "crc32c:00000000",
        "ctime": 1.0,
        "mtime": 1.0,
        "version": 1,
    }
    base.update(kw)
    return FileEntry(**base)


def request(**kw: Any) -> CommitRequest:
    body: dict[str, Any] = {
        "path": PATH,
        "file_id": FID,
        "base": 1,
        "layout_change": False,
        "size": 10,
        "slices": 1,
        "groups": [1],
    }
    body.update(kw)
    return CommitRequest.from_dict(body)


# --- the table -----------------------------------------------------------------------------------


@given(
    st.lists(st.floats(0, 1000), max_size=30).map(sorted),
    st.floats(0, 2000),
    st.floats(1, 500),
)
def test_expire_forgets_exactly_the_old_decisions(
    ats: list[float], now: float, keep: float
) -> None:
    table = DecisionTable()
    for i, at in enumerate(ats):
        table.put(abort_of(txn(i), FID, "", at))
    gone = table.expire(now, keep)
    assert gone == sum(1 for at in ats if at < now - keep)
    assert [d.at for d in table] == [at for at in ats if at >= now - keep]


def test_put_again_replaces_and_moves_to_the_end() -> None:
    table = DecisionTable()
    table.put(abort_of(txn(1), FID, "", 1.0))
    table.put(abort_of(txn(2), FID, "", 2.0))
    table.put(abort_of(txn(1), FID, "/x", 3.0))
    assert [d.txn for d in table] == [txn(2), txn(1)] and len(table) == 2
    assert table.expire(2.5, 0.0) == 1 and table.get(txn(1)) is not None


# --- request checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"path": "rel"}, "path"),
        ({"file_id": "XY"}, "file_id"),
        ({"base": -1}, "base"),
        ({"base": True}, "base"),
        ({"layout_change": 1}, "layout_change"),
        ({"size": 5 << 22, "slices": 1}, "size"),
        ({"groups": [1, 1]}, "groups"),
        ({"groups": [0]}, "groups"),
        ({"groups": "1"}, "groups"),
        ({"head": [1]}, "head"),
        ({"if_version": -2}, "if_version"),
        ({"offset": "3"}, "offset"),
    ],
)
def test_bad_commit_bodies_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(MydfsError) as info:
        request(**change)
    assert info.value.status == 400
    assert info.value.context.get("field", field) == field


def test_missing_fields_and_non_objects_are_400() -> None:
    with pytest.raises(InvalidArgument, match="missing field 'groups'"):
        CommitRequest.from_dict(
            {
                "path": PATH,
                "file_id": FID,
                "base": 1,
                "layout_change": False,
                "size": 1,
                "slices": 1,
            }
        )
    with pytest.raises(InvalidArgument):
        CommitRequest.from_dict([1])


# --- the rules -----------------------------------------------------------------------------------


def test_commit_builds_the_new_entry() -> None:
    current = entry(version=3, versions=((1, 2), (4, 3)), layout=2)
    verdict = judge(current, request(base=2, groups=[4, 2], size=20, offset=10), txn(1), 9.0)
    d = verdict.decision
    assert verdict.refusal is None and d.outcome is Outcome.COMMIT
    assert (d.version, d.prevs, d.offset, d.at, d.path) == (4, ((4, 3), (2, 0)), 10, 9.0, PATH)
    assert d.entry is not None
    assert d.entry.versions == ((1, 2), (2, 4), (4, 4))
    assert (d.entry.size, d.entry.hash, d.entry.mtime, d.entry.layout) == (20, "", 9.0, 2)
    assert (d.entry.ctime, d.entry.file_id, d.entry.head) == (1.0, FID, Location(1, 5))
    changed = judge(current, request(base=3, layout_change=True), txn(2), 9.0).decision
    assert changed.entry is not None and changed.entry.layout == 4


def test_refusals_record_an_abort() -> None:
    current = entry(version=3, layout=2)
    for got, kind, reason in (
        (judge(None, request(), txn(1), 5.0), NotFound, None),
        (judge(entry("bb" * 16), request(), txn(1), 5.0), NotFound, None),
        (judge(current, request(base=3, if_version=2), txn(1), 5.0), Conflict, "version"),
        (judge(current, request(base=1), txn(1), 5.0), Conflict, "layout_changed"),
    ):
        assert isinstance(got.refusal, kind)
        assert got.refusal.context.get("reason") == reason
        assert got.decision == abort_of(txn(1), FID, PATH, 5.0)


def test_heads_only_on_empty_files_or_cleared_with_every_slice() -> None:
    with pytest.raises(InvalidArgument, match="only be set on an empty file"):
        judge(entry(), request(head=[2, 7]), txn(1), 1.0)
    empty = entry(size=0, slices=0, head=None)
    made = judge(empty, request(head=[2, 7]), txn(1), 1.0).decision
    assert made.entry is not None and made.entry.head == Location(2, 7)
    cleared = judge(entry(), request(head=None, size=0, slices=0), txn(2), 1.0).decision
    assert cleared.entry is not None and cleared.entry.head is None
    with pytest.raises(InvalidArgument):
        judge(entry(), request(head=None, slices=1), txn(3), 1.0)
    with pytest.raises(InvalidArgument):
        judge(entry(), request(slices=0, size=0), txn(3), 1.0)  # head kept, no slices
    with pytest.raises(InvalidArgument, match="newer than"):
        judge(entry(), request(base=2), txn(3), 1.0)


# --- stateful: the namespace, the table, the log and the checkpoint ------------------------------


class EditModel(RuleBasedStateMachine):
    """Commits and aborts of one file's edits, with the file sometimes replaced, against a
    model: versions, per-group versions, layout, and the first decision of every txn."""

    def __init__(self) -> None:
        super().__init__()
        self.ns = Namespace()
        self.log: list[Edit] = []
        self.now = 100.0
        self.file_id = FID
        self.version = 1
        self.groups: dict[int, int] = {}
        self.layout = 0
        self.first: dict[str, Decision] = {}
        self._apply(PutFile(PATH, entry(version=1)))

    def _apply(self, edit: Edit) -> None:
        kind, payload = encode_edit(edit)
        self.log.append(decode_edit(kind, payload))
        self.ns.apply(edit)

    def _decide(self, t: str, body: dict[str, Any]) -> Decision:
        """What the shell does: a decided txn gets its decision again, else judge and log."""
        self.now += 1.0
        found = self.ns.decisions.get(t)
        if found is not None:
            return found
        try:
            verdict = judge(self.ns.get(PATH), request(**body), t, self.now)
        except InvalidArgument:
            return abort_of(t, body.get("file_id", FID), PATH, -1.0)  # nothing recorded
        self._apply(Decide(verdict.decision))
        return verdict.decision

    @rule(
        n=st.integers(0, 7),
        groups=st.sets(st.integers(1, 4), min_size=1, max_size=3),
        change=st.booleans(),
        back=st.integers(0, 3),
        stale_if=st.booleans(),
        old_file=st.booleans(),
    )
    def commit(
        self, n: int, groups: set[int], change: bool, back: int, stale_if: bool, old_file: bool
    ) -> None:
        t = txn(n)
        base = max(0, self.version - back)
        file_id = "cc" * 16 if old_file else self.file_id
        body = {
            "file_id": file_id,
            "base": base,
            "layout_change": change,
            "groups": sorted(groups),
            "size": 7,
            "if_version": self.version - 1 if stale_if else None,
        }
        decided_before = t in self.first
        before = (self.version, dict(self.groups), self.layout)
        d = self._decide(t, body)
        if decided_before:
            assert d == self.first[t]
            return
        if d.at < 0:
            return  # refused without a decision (400)
        self.first[t] = d
        should_commit = file_id == self.file_id and not stale_if and self.layout <= base
        assert d.committed == should_commit, (d, before)
        if d.committed:
            assert d.version == before[0] + 1
            assert d.prevs == tuple((g, before[1].get(g, 0)) for g in sorted(groups))
            self.version = d.version
            for g in groups:
                self.groups[g] = d.version
            if change:
                self.layout = d.version

    @rule(n=st.integers(0, 7))
    def abort(self, n: int) -> None:
        t = txn(n)
        if t in self.first:
            return  # decided: the shell answers the decision (or 409 for a commit)
        self.now += 1.0
        d = abort_of(t, self.file_id, PATH, self.now)
        self._apply(Decide(d))
        self.first[t] = d

    @rule()
    def replace_file(self) -> None:
        self.file_id = f"{int(self.file_id, 16) + 1:032x}"
        self.version += 1
        self.groups, self.layout = {}, 0
        self._apply(PutFile(PATH, entry(self.file_id, version=self.version)))

    @invariant()
    def entry_matches_the_model(self) -> None:
        current = self.ns.get(PATH)
        assert current is not None and current.file_id == self.file_id
        assert current.version == self.version
        assert current.versions == tuple(sorted(self.groups.items()))
        assert current.layout == self.layout
        for t, d in self.first.items():
            assert self.ns.decisions.get(t) == d  # first decision wins, and stays
        self.ns.check_invariants()

    def teardown(self) -> None:
        replayed = Namespace()
        for edit in self.log:
            replayed.apply(edit)
        assert replayed.state() == self.ns.state()
        out = io.BytesIO()
        encode_checkpoint(len(self.log), self.ns.snapshot(), 1.0, out)
        _, _, loaded = decode_checkpoint(out.getvalue())
        assert loaded.state() == self.ns.state()


TestEditModel = EditModel.TestCase
TestEditModel.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
