"""The pure namespace: registration rules, implicit directories, trash, intents, replay.

The stateful test drives :class:`Namespace` and a naive model (a flat dict of paths, directories
found by scanning) with the same random operations and compares every answer; every edit it
produces is also pushed through the record codec and replayed into a fresh namespace, which must
end up identical.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mydfs.common.errors import AlreadyExists, Conflict, InvalidArgument, InvalidPath, NotFound
from mydfs.common.location import Location
from mydfs.tracker.namespace import Namespace, Registration
from mydfs.tracker.records import Edit, FileEntry, TrashState, decode_edit, encode_edit

FID = "00112233445566778899aabbccddeeff"
FID2 = "ffeeddccbbaa99887766554433221100"


def reg(file_id: str = FID, size: int = 10, head: tuple[int, int] | None = (1, 5)) -> Registration:
    return Registration.from_dict(
        {
            "file_id": file_id,
            "size": size if head else 0,
            "slices": 1 if head else 0,
            "head": list(head) if head else None,
            "hash": "crc32c:0000abcd",
        }
    )


def put(ns: Namespace, path: str, r: Registration, now: float = 100.0, **kw: Any) -> Any:
    edit = ns.plan_put(path, r, now=now, overwrite=kw.get("overwrite", False))
    return None if edit is None else (edit, ns.apply(edit))


def test_register_stat_list_delete() -> None:
    ns = Namespace()
    _edit, old = put(ns, "/a/b/c.bin", reg())
    assert old is None
    entry = ns.stat("/a/b/c.bin")
    assert entry == FileEntry(FID, 10, 1, Location(1, 5), "crc32c:0000abcd", 100.0, 100.0, 1)
    assert [(n, e is None) for n, e in ns.listdir("/")] == [("a", True)]
    assert [(n, e is None) for n, e in ns.listdir("/a")] == [("b", True)]
    assert ns.listdir("/a/b") == [("c.bin", entry)]
    assert (ns.files, ns.bytes, ns.directories) == (1, 10, 3)
    removed = ns.apply(ns.plan_delete("/a/b/c.bin", now=200.0))
    assert removed == entry
    assert ns.listdir("/") == []  # implicit directories vanished with their last file
    assert (ns.files, ns.bytes, ns.directories) == (0, 0, 1)
    with pytest.raises(NotFound):
        ns.listdir("/a")
    [trash] = ns.trash()
    assert (trash.file_id, trash.path, trash.time, trash.reason.name) == (
        FID,
        "/a/b/c.bin",
        200.0,
        "DELETED",
    )
    ns.check_invariants()


def test_exists_overwrite_and_idempotent_retry() -> None:
    ns = Namespace()
    put(ns, "/f", reg(), now=1.0)
    assert put(ns, "/f", reg(), now=2.0) is None  # the same registration again: no edit
    with pytest.raises(AlreadyExists) as info:
        put(ns, "/f", reg(FID2), now=2.0)
    assert info.value.status == 409
    with pytest.raises(Conflict, match="other metadata"):
        put(ns, "/f", reg(FID, size=11), now=2.0, overwrite=True)
    _edit, old = put(ns, "/f", reg(FID2, head=(2, 7)), now=3.0, overwrite=True)
    assert old.file_id == FID
    new = ns.stat("/f")
    assert (new.file_id, new.version, new.ctime, new.mtime) == (FID2, 2, 1.0, 3.0)
    [trash] = ns.trash()
    assert (trash.file_id, trash.reason.name, trash.head) == (FID, "REPLACED", Location(1, 5))
    assert (ns.files, ns.bytes) == (1, 10)


def test_directory_and_parent_conflicts() -> None:
    ns = Namespace()
    put(ns, "/a/b/c", reg())
    with pytest.raises(Conflict, match="is a directory"):
        put(ns, "/a/b", reg(FID2))
    with pytest.raises(Conflict, match="is a directory"):
        put(ns, "/a", reg(FID2), overwrite=True)
    with pytest.raises(Conflict, match="parent /a/b/c is a file"):
        put(ns, "/a/b/c/d", reg(FID2))
    with pytest.raises(Conflict, match="parent /a/b/c is a file"):
        put(ns, "/a/b/c/d/e", reg(FID2))
    with pytest.raises(Conflict, match="is a file"):
        ns.listdir("/a/b/c")
    with pytest.raises(NotFound, match="is a directory"):
        ns.stat("/a/b")
    with pytest.raises(Conflict, match="is a directory"):
        ns.plan_delete("/a", now=1.0)
    with pytest.raises(NotFound):
        ns.plan_delete("/nope", now=1.0)


def test_empty_files_have_no_head_and_go_to_the_trash_too() -> None:
    ns = Namespace()
    put(ns, "/empty", reg(head=None))
    assert ns.stat("/empty").head is None
    assert ns.stat("/empty").to_dict("/empty")["head"] is None
    ns.apply(ns.plan_delete("/empty", now=5.0))
    [record] = ns.trash()  # nothing to free, but it can be undeleted
    assert record.head is None and record.entry() is not None


def test_intents_are_cleared_by_registration() -> None:
    ns = Namespace()
    ns.apply(ns.plan_intent(FID, "/up/load", now=1.0))
    ns.apply(ns.plan_intent(FID2, "/other", now=2.0))
    assert [i.file_id for i in ns.intents()] == [FID, FID2]
    put(ns, "/up/load", reg())
    assert [i.file_id for i in ns.intents()] == [FID2]
    ns.apply(ns.plan_drop_intent(FID2))
    assert ns.intents() == []
    with pytest.raises(NotFound):
        ns.plan_drop_intent(FID2)
    with pytest.raises(InvalidPath):
        ns.plan_intent(FID, "relative", now=1.0)
    with pytest.raises(InvalidArgument):
        ns.plan_intent("XYZ", "/a", now=1.0)


def test_listing_pages() -> None:
    ns = Namespace()
    for i in range(10):
        put(ns, f"/d/f{i}", reg(f"{i:032x}"))
    names = [n for n, _ in ns.listdir("/d", limit=3)]
    assert names == ["f0", "f1", "f2"]
    assert [n for n, _ in ns.listdir("/d", after="f2", limit=3)] == ["f3", "f4", "f5"]
    assert [n for n, _ in ns.listdir("/d", after="f9")] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"size": 1, "slices": 1, "head": [1, 1]}, "file_id"),
        ({"file_id": "AB" * 16, "size": 1, "slices": 1, "head": [1, 1]}, "file_id"),
        ({"file_id": FID, "size": -1, "slices": 1, "head": [1, 1]}, "size"),
        ({"file_id": FID, "size": True, "slices": 1, "head": [1, 1]}, "size"),
        ({"file_id": FID, "size": 1, "slices": 1, "head": None}, "head"),
        ({"file_id": FID, "size": 0, "slices": 0, "head": [1, 1]}, "head"),
        ({"file_id": FID, "size": 1, "slices": 1, "head": "1:1"}, "head"),
        ({"file_id": FID, "size": 1, "slices": 1, "head": [1, -1]}, "head"),
        ({"file_id": FID, "size": 5, "slices": 0, "head": None}, "size"),
        ({"file_id": FID, "size": 10**9, "slices": 1, "head": [1, 1]}, "size"),
        ({"file_id": FID, "size": 1, "slices": 1, "head": [1, 1], "hash": "a b"}, "hash"),
        ({"file_id": FID, "size": 1, "slices": 1, "head": [1, 1], "hash": 7}, "hash"),
    ],
)
def test_registration_fields_are_checked(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Registration.from_dict(body)
    assert info.value.context["field"] == field


def test_snapshot_is_isolated_from_later_changes() -> None:
    ns = Namespace()
    put(ns, "/a/x", reg())
    snap = ns.snapshot()
    put(ns, "/a/y", reg(FID2))
    ns.apply(ns.plan_delete("/a/x", now=9.0))
    assert [p for p, _ in snap.iter_files()] == ["/a/x"]
    assert snap.files == 1 and snap.trash == []


# --- model-based stateful test -----------------------------------------------------------------

_names = st.sampled_from(["a", "b", "c"])
_paths = st.lists(_names, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
_fids = st.sampled_from([f"{i:032x}" for i in range(1, 7)])
_heads = st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(0, 5)))


class NamespaceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ns = Namespace()
        self.model: dict[str, tuple[str, int, tuple[int, int] | None, int, float]] = {}
        self.trash: dict[str, str] = {}
        self.trashed: dict[str, tuple[str, int, tuple[int, int] | None, int, float]] = {}
        self.marked: set[str] = set()  # trash records the reclaimer marked
        self.intents: dict[str, str] = {}
        self.edits: list[Edit] = []
        self.clock = 0.0

    def _tick(self) -> float:
        self.clock += 1.0
        return self.clock

    def _is_dir(self, path: str) -> bool:
        return any(p.startswith(path + "/") for p in self.model)

    def _to_trash(
        self, path: str, old: tuple[str, int, tuple[int, int] | None, int, float]
    ) -> None:
        self.trash[old[0]] = path
        self.trashed[old[0]] = old
        self.marked.discard(old[0])  # a new record: held

    def _apply(self, edit: Edit) -> Any:
        kind, payload = encode_edit(edit)
        assert decode_edit(kind, payload) == edit
        self.edits.append(edit)
        return self.ns.apply(edit)

    @rule(path=_paths, fid=_fids, head=_heads, size=st.integers(1, 100), overwrite=st.booleans())
    def put(
        self, path: str, fid: str, head: tuple[int, int] | None, size: int, overwrite: bool
    ) -> None:
        r = reg(fid, size=size, head=head)
        now = self._tick()
        parent_file = any(path.startswith(p + "/") for p in self.model)
        old = self.model.get(path)
        expected: type[Exception] | None = None
        if parent_file or self._is_dir(path):
            expected = Conflict
        elif old is not None and old[0] == fid:
            expected = None if (old[1], old[2]) == (r.size, head) else Conflict
        elif old is not None and not overwrite:
            expected = AlreadyExists
        try:
            edit = self.ns.plan_put(path, r, now=now, overwrite=overwrite)
        except (Conflict, AlreadyExists) as exc:
            assert type(exc) is expected, (path, exc)
            return
        assert expected is None
        if old is not None and old[0] == fid:
            assert edit is None
            return
        assert edit is not None
        replaced = self._apply(edit)
        assert (replaced is None) == (old is None)
        if old is not None:  # empty files too: they can be undeleted
            self._to_trash(path, old)
        self.intents.pop(fid, None)
        version = 1 if old is None else old[3] + 1
        ctime = now if old is None else old[4]
        self.model[path] = (fid, r.size, head, version, ctime)
        entry = self.ns.stat(path)
        assert (entry.file_id, entry.version, entry.ctime, entry.mtime) == (
            fid,
            version,
            ctime,
            now,
        )

    @rule(path=_paths)
    def delete(self, path: str) -> None:
        now = self._tick()
        try:
            edit = self.ns.plan_delete(path, now=now)
        except NotFound:
            assert path not in self.model and not self._is_dir(path)
            return
        except Conflict:
            assert self._is_dir(path)
            return
        old = self.model.pop(path)
        removed = self._apply(edit)
        assert removed is not None and removed.file_id == old[0]
        self._to_trash(path, old)

    @rule(fid=_fids, path=_paths)
    def intent(self, fid: str, path: str) -> None:
        self._apply(self.ns.plan_intent(fid, path, now=self._tick()))
        self.intents[fid] = path

    @rule(fid=_fids)
    def drop_trash(self, fid: str) -> None:
        try:
            edit = self.ns.plan_drop_trash(fid)
        except NotFound:
            assert fid not in self.trash
            return
        self._apply(edit)
        del self.trash[fid]

    @rule(fid=_fids)
    def mark(self, fid: str) -> None:
        try:
            edit = self.ns.plan_mark(fid)
        except NotFound:
            assert fid not in self.trash
            return
        assert (edit is None) == (fid in self.marked)
        if edit is not None:
            self._apply(edit)
        self.marked.add(fid)

    @rule(fid=_fids)
    def purge(self, fid: str) -> None:
        try:
            edits = self.ns.plan_purge(None, fid)
        except NotFound:
            assert fid not in self.trash
            return
        for edit in edits:
            self._apply(edit)

    @rule(fid=_fids, to_path=st.one_of(st.none(), _paths))
    def undelete(self, fid: str, to_path: str | None) -> None:
        target = to_path
        try:
            edit = self.ns.plan_undelete(None, target, fid)
        except NotFound:
            assert fid not in self.trash
            return
        except Conflict:
            to = self.trash[fid] if target is None else target
            parent_file = any(to.startswith(p + "/") for p in self.model)
            assert fid in self.marked or to in self.model or self._is_dir(to) or parent_file
            return
        to = self.trash[fid] if target is None else target
        assert fid not in self.marked and to not in self.model and not self._is_dir(to)
        restored = self._apply(edit)
        old = self.trashed.pop(fid)
        del self.trash[fid]
        assert (restored.file_id, restored.size, restored.version) == (old[0], old[1], old[3])
        self.model[to] = old

    @rule(path=st.one_of(st.just("/"), _paths))
    def listdir(self, path: str) -> None:
        prefix = "" if path == "/" else path
        children: dict[str, bool] = {}
        for p in self.model:
            if p.startswith(prefix + "/"):
                rest = p[len(prefix) + 1 :]
                name, _, deeper = rest.partition("/")
                children[name] = not deeper
        try:
            got = self.ns.listdir(path)
        except NotFound:
            assert path != "/" and not children and path not in self.model
            return
        except Conflict:
            assert path in self.model
            return
        assert [(n, e is not None) for n, e in got] == sorted(children.items())

    @invariant()
    def consistent(self) -> None:
        self.ns.check_invariants()
        assert self.ns.files == len(self.model)
        assert self.ns.bytes == sum(v[1] for v in self.model.values())
        assert {r.file_id: r.path for r in self.ns.trash()} == self.trash
        reclaiming = {r.file_id for r in self.ns.trash() if r.state is TrashState.RECLAIMING}
        assert reclaiming == self.marked & set(self.trash)
        assert {i.file_id: i.path for i in self.ns.intents()} == self.intents

    def teardown(self) -> None:
        replayed = Namespace()
        for edit in self.edits:
            replayed.apply(edit)
        assert replayed.state() == self.ns.state()


NamespaceMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_namespace_matches_model = NamespaceMachine.TestCase
