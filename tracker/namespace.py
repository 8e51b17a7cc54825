"""The file table of the tracker: path → file entry, directories, trash and intents (pure).

No I/O and no clock: times come in as arguments. Every change is made in two steps, so the same
code serves live requests and log replay:

* ``plan_*`` checks a request against the current state and returns the :data:`Edit` that
  performs it (or raises a typed error and changes nothing);
* :meth:`Namespace.apply` performs an edit. It is deterministic and strict: an edit that does not
  fit the state raises :class:`InvariantViolation` (on replay that means a corrupt log).

The durable shell (:mod:`mydfs.tracker.store`) logs the edit between the two steps.

The namespace also holds the decisions of in-place edits (:attr:`Namespace.decisions`, a
:class:`~mydfs.tracker.decisions.DecisionTable`): a ``Decide`` edit records one and, for a
commit, replaces the file's entry in place. Their rules are in :mod:`mydfs.tracker.decisions`.

Layout in memory: one :class:`~mydfs.tracker.dirtable.DirTable` per directory (a dict-like
table packed into two buffers), ``dirs[dir_path][name]`` → the file's packed entry (``bytes``,
see :mod:`mydfs.tracker.records`) or ``None`` for a subdirectory. A file's full path
is never stored: it is its directory's key (shared by all its files) plus its name. Directories
are implicit: a directory exists while a file is below it, and vanishes with its last file. The
root ``/`` always exists. Listing a directory reads only its own dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mydfs.common.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    InvariantViolation,
    NotFound,
)
from mydfs.common.location import Location
from mydfs.common.paths import ROOT, check_dir_path, check_file_path, join, parents, split
from mydfs.common.slices import PAYLOAD_CAPACITY
from mydfs.tracker.decisions import DecisionTable
from mydfs.tracker.dirtable import DirTable
from mydfs.tracker.records import (
    MAX_SIZE,
    MAX_U32,
    AddIntent,
    Decide,
    Decision,
    DeleteFile,
    DropIntent,
    DropTrash,
    Edit,
    FileEntry,
    Intent,
    MarkTrash,
    PurgeTrash,
    PutFile,
    TrashReason,
    TrashRecord,
    TrashState,
    Undelete,
    check_file_id,
    check_hash,
    entry_size,
    parse_head,
)

Children = DirTable


@dataclass(frozen=True, slots=True)
class Registration:
    """What a client registers for a path (the body of ``PUT /meta/files/...``)."""

    file_id: str
    size: int
    slices: int
    head: Location | None
    hash: str

    @staticmethod
    def from_dict(body: Mapping[str, Any]) -> Registration:
        """Check a request body; a bad field raises :class:`InvalidArgument` naming it."""
        if not isinstance(body, Mapping):
            raise InvalidArgument("the body must be a JSON object")
        for key in ("file_id", "size", "slices", "head"):
            if key not in body:
                raise InvalidArgument(f"missing field {key!r}", field=key)
        file_id = check_file_id(body["file_id"])
        size = _int(body["size"], "size", MAX_SIZE)
        slices = _int(body["slices"], "slices", MAX_U32 - 1)
        head = parse_head(body["head"])
        hash_text = check_hash(body.get("hash"))
        if (head is None) != (slices == 0):
            raise InvalidArgument(
                "head must be null exactly when slices is 0 (an empty file has no chain)",
                field="head",
            )
        if slices == 0 and size != 0:
            raise InvalidArgument("a file without slices must have size 0", field="size")
        if size > slices * PAYLOAD_CAPACITY:
            raise InvalidArgument(
                f"size {size} does not fit in {slices} slices of {PAYLOAD_CAPACITY} bytes",
                field="size",
            )
        return Registration(file_id, size, slices, head, hash_text)


def _int(value: Any, field: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise InvalidArgument(f"{field} must be an integer 0..{limit}, got {value!r}", field=field)
    return value


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent copy of the state, cheap to take (the entries themselves are immutable)."""

    dirs: dict[str, Children]
    trash: list[TrashRecord]
    intents: list[Intent]
    files: int
    decisions: list[Decision] = field(default_factory=list)

    def iter_files(self) -> Iterator[tuple[str, bytes]]:
        for d, children in self.dirs.items():
            for name, packed in children.items():
                if packed is not None:
                    yield join(d, name), packed


class Namespace:
    """The in-memory file table. See the module docstring for the plan/apply split."""

    def __init__(self) -> None:
        self._dirs: dict[str, Children] = {ROOT: DirTable()}
        self._trash: dict[str, TrashRecord] = {}
        self._intents: dict[str, Intent] = {}
        #: Decisions of in-place edits (``tracker/decisions.py``), kept in checkpoints too.
        self.decisions = DecisionTable()
        self.files = 0
        self.bytes = 0

    # --- queries --------------------------------------------------------------------------------

    def get(self, path: str) -> FileEntry | None:
        """The entry at a valid ``path``, or None (also for a directory)."""
        parent, name = split(path)
        children = self._dirs.get(parent)
        packed = None if children is None else children.get(name)
        return None if packed is None else FileEntry.unpack(packed)

    def is_dir(self, path: str) -> bool:
        return path in self._dirs

    def stat(self, path: str) -> FileEntry:
        check_file_path(path)
        entry = self.get(path)
        if entry is None:
            if self.is_dir(path):
                raise NotFound("no such file: the path is a directory", path=path, is_dir=True)
            raise NotFound("no such file", path=path)
        return entry

    def listdir(
        self, path: str, *, after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, FileEntry | None]]:
        """Children of a directory sorted by name (``None`` = subdirectory).

        ``after`` skips names up to and including it; ``limit`` caps the count.
        """
        check_dir_path(path)
        children = self._dirs.get(path)
        if children is None:
            if path != ROOT and self.get(path) is not None:
                raise Conflict("not a directory: the path is a file", path=path)
            raise NotFound("no such directory", path=path)
        out: list[tuple[str, FileEntry | None]] = []
        for name, packed in children.items(after=after):
            if limit is not None and len(out) >= limit:
                break
            out.append((name, None if packed is None else FileEntry.unpack(packed)))
        return out

    def trash(self) -> list[TrashRecord]:
        return list(self._trash.values())

    def intents(self) -> list[Intent]:
        return list(self._intents.values())

    @property
    def trash_count(self) -> int:
        return len(self._trash)

    @property
    def intent_count(self) -> int:
        return len(self._intents)

    def find_intent(self, file_id: str) -> Intent | None:
        return self._intents.get(file_id)

    def find_trash(self, file_id: str) -> TrashRecord | None:
        return self._trash.get(file_id)

    @property
    def directories(self) -> int:
        return len(self._dirs)

    # --- planning: check a request, return the edit ----------------------------------------------

    def plan_put(
        self, path: str, reg: Registration, *, now: float, overwrite: bool
    ) -> PutFile | None:
        """The edit registering ``reg`` at ``path``; None if it is already there, identical.

        Raises :class:`AlreadyExists` if the path holds another file and ``overwrite`` is off,
        :class:`Conflict` if the path is a directory or one of its parents is a file.
        """
        check_file_path(path)
        self._check_parents(path)
        if self.is_dir(path):
            raise Conflict("the path is a directory", path=path)
        old = self.get(path)
        if old is not None and old.file_id == reg.file_id:
            if (old.size, old.slices, old.head, old.hash) == (
                reg.size,
                reg.slices,
                reg.head,
                reg.hash,
            ):
                return None  # a retry of a registration that already happened
            raise Conflict(
                "this file id is already registered at the path with other metadata",
                path=path,
                file_id=reg.file_id,
            )
        if old is not None and not overwrite:
            raise AlreadyExists(
                "the path exists (add ?overwrite=1 to replace it)", path=path, file_id=old.file_id
            )
        entry = FileEntry(
            file_id=reg.file_id,
            size=reg.size,
            slices=reg.slices,
            head=reg.head,
            hash=reg.hash,
            ctime=now if old is None else old.ctime,
            mtime=now,
            version=1 if old is None else min(old.version + 1, MAX_U32),
        )
        return PutFile(path, entry)

    def plan_delete(self, path: str, *, now: float) -> DeleteFile:
        check_file_path(path)
        if self.get(path) is None:
            if self.is_dir(path):
                raise Conflict(
                    "the path is a directory; directories vanish with their last file", path=path
                )
            raise NotFound("no such file", path=path)
        return DeleteFile(path, now)

    def plan_intent(self, file_id: Any, path: Any, *, now: float) -> AddIntent:
        fid = check_file_id(file_id)
        if not isinstance(path, str):
            raise InvalidArgument(f"path must be a string, got {path!r}", field="path")
        check_file_path(path)
        return AddIntent(Intent(fid, path, now))

    def plan_drop_intent(self, file_id: str) -> DropIntent:
        check_file_id(file_id)
        if file_id not in self._intents:
            raise NotFound("no such intent", file_id=file_id)
        return DropIntent(file_id)

    def plan_drop_trash(self, file_id: str) -> DropTrash:
        check_file_id(file_id)
        if file_id not in self._trash:
            raise NotFound("no such trash record", file_id=file_id)
        return DropTrash(file_id)

    def find_trashed(self, path: str | None, file_id: str | None) -> TrashRecord:
        """The trash record of ``file_id`` (at ``path`` if given too), else the newest one of
        ``path``; :class:`NotFound` if there is none."""
        if file_id is not None:
            check_file_id(file_id)
            record = self._trash.get(file_id)
            if record is None or (path is not None and record.path != path):
                raise NotFound("no such trash record", file_id=file_id, path=path)
            return record
        if path is None:
            raise InvalidArgument("give a path or a file id", field="path")
        check_file_path(path)
        found = [r for r in self._trash.values() if r.path == path]
        if not found:
            raise NotFound("no trash record of this path", path=path)
        return max(found, key=lambda r: (r.time, r.file_id))

    def plan_undelete(
        self, path: str | None, new_path: str | None = None, file_id: str | None = None
    ) -> Undelete:
        """Put a trashed file back at ``new_path`` (default: its old path). :class:`Conflict`
        if the reclaimer started freeing it, if the record predates format 3 (it lacks the
        entry), or if the target path is taken (a file or a directory, or a parent is a file)."""
        if new_path is not None:
            check_file_path(new_path)
        record = self.find_trashed(path, file_id)
        target = record.path if new_path is None else new_path
        if record.state is TrashState.RECLAIMING:
            raise Conflict(
                "the reclaimer is freeing this file's slices: it can no longer be undeleted",
                path=record.path,
                file_id=record.file_id,
            )
        if record.entry() is None:
            raise Conflict(
                "this trash record was written by an older tracker without the file's entry; "
                "it cannot be undeleted",
                path=record.path,
                file_id=record.file_id,
            )
        if self.get(target) is not None:
            raise Conflict(
                "the path exists: remove it or undelete under another path",
                path=target,
                file_id=record.file_id,
            )
        if self.is_dir(target):
            raise Conflict("the path is a directory", path=target)
        self._check_parents(target)
        return Undelete(record.file_id, target)

    def plan_purge(
        self, path: str | None, file_id: str | None, *, every: bool = False
    ) -> list[PurgeTrash]:
        """Purge one record (see :meth:`find_trashed`) or, with ``every``, all of them; records
        already purged or being reclaimed need no edit."""
        records = list(self._trash.values()) if every else [self.find_trashed(path, file_id)]
        return [PurgeTrash(r.file_id) for r in records if r.state is TrashState.HELD]

    def plan_mark(self, file_id: str) -> MarkTrash | None:
        """The reclaimer's mark (None if the record is already marked)."""
        record = self._trash.get(file_id)
        if record is None:
            raise NotFound("no such trash record", file_id=file_id)
        return None if record.state is TrashState.RECLAIMING else MarkTrash(file_id)

    def _check_parents(self, path: str) -> None:
        for d in parents(path):
            parent, name = split(d)
            children = self._dirs.get(parent)
            if children is None or name not in children:
                return
            if children[name] is not None:
                raise Conflict(f"parent {d} is a file", path=path, parent=d)

    # --- applying ---------------------------------------------------------------------------------

    def apply(self, edit: Edit) -> FileEntry | None:
        """Perform an edit; returns the replaced (put) or removed (delete) entry, if any."""
        if isinstance(edit, PutFile):
            return self._apply_put(edit)
        if isinstance(edit, DeleteFile):
            return self._apply_delete(edit)
        if isinstance(edit, AddIntent):
            self._intents[edit.intent.file_id] = edit.intent
            return None
        if isinstance(edit, DropIntent):
            if self._intents.pop(edit.file_id, None) is None:
                raise InvariantViolation("drop of an unknown intent", file_id=edit.file_id)
            return None
        if isinstance(edit, Decide):
            return self._apply_decide(edit.decision)
        if isinstance(edit, Undelete):
            return self._apply_undelete(edit)
        if isinstance(edit, MarkTrash | PurgeTrash):
            record = self._trash.get(edit.file_id)
            if record is None:
                raise InvariantViolation("mark of an unknown trash record", file_id=edit.file_id)
            if isinstance(edit, MarkTrash):
                self._trash[edit.file_id] = record.with_state(TrashState.RECLAIMING)
            elif record.state is TrashState.HELD:
                self._trash[edit.file_id] = record.with_state(TrashState.PURGED)
            return None
        if self._trash.pop(edit.file_id, None) is None:
            raise InvariantViolation("drop of an unknown trash record", file_id=edit.file_id)
        return None

    def _apply_put(self, edit: PutFile) -> FileEntry | None:
        path, entry = edit.path, edit.entry
        parent, name = split(path)
        children = self._ensure_dir(parent, path)
        if name in children and children[name] is None:
            raise InvariantViolation("put onto a directory", path=path)
        old_packed = children.get(name)
        old = None if old_packed is None else FileEntry.unpack(old_packed)
        if old is not None:
            self._to_trash(path, old, entry.mtime, TrashReason.REPLACED)
            self.bytes -= old.size
        else:
            self.files += 1
        children[name] = entry.pack()
        self.bytes += entry.size
        self._intents.pop(entry.file_id, None)
        return old

    def _apply_delete(self, edit: DeleteFile) -> FileEntry:
        parent, name = split(edit.path)
        children = self._dirs.get(parent)
        packed = None if children is None else children.get(name)
        if children is None or packed is None:
            raise InvariantViolation("delete of a missing file", path=edit.path)
        del children[name]
        old = FileEntry.unpack(packed)
        self.files -= 1
        self.bytes -= old.size
        self._to_trash(edit.path, old, edit.time, TrashReason.DELETED)
        self._prune(parent)
        return old

    def _apply_undelete(self, edit: Undelete) -> FileEntry:
        record = self._trash.get(edit.file_id)
        entry = None if record is None else record.entry()
        if record is None or entry is None or record.state is TrashState.RECLAIMING:
            raise InvariantViolation("undelete of a record that cannot be", file_id=edit.file_id)
        parent, name = split(edit.path)
        children = self._ensure_dir(parent, edit.path)
        if name in children:
            raise InvariantViolation("undelete onto an existing path", path=edit.path)
        children[name] = entry.pack()
        del self._trash[edit.file_id]
        self.files += 1
        self.bytes += entry.size
        return entry

    def _apply_decide(self, decision: Decision) -> FileEntry | None:
        """Record a decision; a commit replaces the entry at its path in place (same file id:
        no trash, the groups drop the replaced slices themselves). Returns the old entry."""
        old: FileEntry | None = None
        if decision.entry is not None:
            parent, name = split(decision.path)
            children = self._dirs.get(parent)
            packed = None if children is None else children.get(name)
            if children is None or packed is None:
                raise InvariantViolation("commit of an edit to a missing file", path=decision.path)
            old = FileEntry.unpack(packed)
            if old.file_id != decision.file_id:
                raise InvariantViolation(
                    "commit of an edit to another file", path=decision.path, file_id=old.file_id
                )
            children[name] = decision.entry.pack()
            self.bytes += decision.entry.size - old.size
        self.decisions.put(decision)
        return old

    def _to_trash(self, path: str, old: FileEntry, when: float, reason: TrashReason) -> None:
        # An empty file too: it has no slices to free, but it can be undeleted until dropped.
        self._trash[old.file_id] = TrashRecord.of(path, old, when, reason)

    def _ensure_dir(self, d: str, path: str) -> Children:
        children = self._dirs.get(d)
        if children is not None:
            return children
        missing = [d]
        parent, _ = split(d)
        while parent not in self._dirs:
            missing.append(parent)
            parent, _ = split(parent)
        for new in reversed(missing):
            up, name = split(new)
            siblings = self._dirs[up]
            if siblings.get(name) is not None:
                raise InvariantViolation(f"parent {new} is a file", path=path)
            siblings[name] = None
            self._dirs[new] = DirTable()
        return self._dirs[d]

    def _prune(self, d: str) -> None:
        while d != ROOT and not self._dirs[d]:
            del self._dirs[d]
            d, name = split(d)
            del self._dirs[d][name]

    # --- checkpoints ------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """A consistent copy for a checkpoint: one shallow dict copy per directory."""
        return Snapshot(
            {d: children.copy() for d, children in self._dirs.items()},
            list(self._trash.values()),
            list(self._intents.values()),
            self.files,
            self.decisions.snapshot(),
        )

    def load_file(self, path: str, packed: bytes) -> None:
        """Insert one file from a checkpoint (no trash, no intents)."""
        parent, name = split(path)
        children = self._ensure_dir(parent, path)
        if name in children:
            raise InvariantViolation("checkpoint holds a path twice", path=path)
        children[name] = packed
        self.files += 1
        self.bytes += entry_size(packed)

    def load_trash(self, record: TrashRecord) -> None:
        self._trash[record.file_id] = record

    def load_intent(self, intent: Intent) -> None:
        self._intents[intent.file_id] = intent

    def load_decision(self, decision: Decision) -> None:
        """Insert one decision from a checkpoint (its entry is already among the files)."""
        self.decisions.put(decision)

    # --- for tests --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything, in a canonical comparable form."""
        files = dict(sorted(self.snapshot().iter_files()))
        return {
            "files": files,
            "trash": sorted(self._trash.values(), key=lambda r: r.file_id),
            "intents": sorted((i.file_id, i.path, i.time) for i in self._intents.values()),
            "decisions": [d.pack() for d in self.decisions],
        }

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` if the directory index is inconsistent."""
        files = total = 0
        for d, children in self._dirs.items():
            if d != ROOT:
                parent, name = split(d)
                if self._dirs.get(parent, DirTable()).get(name, b"") is not None:
                    raise InvariantViolation("directory not linked from its parent", path=d)
                if not children:
                    raise InvariantViolation("empty directory kept", path=d)
            for name, packed in children.items():
                if packed is None:
                    if join(d, name) not in self._dirs:
                        raise InvariantViolation("dangling subdirectory", path=join(d, name))
                else:
                    files += 1
                    total += entry_size(packed)
        if (files, total) != (self.files, self.bytes):
            raise InvariantViolation("file counters drifted", files=files, bytes=total)
