"""The values the group state machine hands out: slot records, upload refs, config, stats.

All are immutable and plain (no I/O); :mod:`mydfs.storage.group_state` re-exports them.
Results of :meth:`~mydfs.storage.group_state.GroupState.apply` are plain dicts; this module also
holds the helpers that build and read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mydfs.common.errors import MydfsError, error_from_dict
from mydfs.common.location import Location
from mydfs.storage.slot_state import SlotState

__all__ = [
    "COMMITTED",
    "DEFAULT_MIN_HOLDERS",
    "DEFAULT_UPLOAD_WINDOW",
    "EDIT_WINDOW",
    "PREPARED",
    "ROLLED_BACK",
    "TXN_STATES",
    "GroupConfig",
    "GroupStats",
    "Result",
    "SlotInfo",
    "TxnInfo",
    "UploadRef",
    "raise_for_result",
    "refusal",
    "wire_location",
]

DEFAULT_UPLOAD_WINDOW: Final = 50_000
"""Sealed upload ids kept for retries. At 125 slices/s (500 MB/s of ingest into one group) that
is more than 6 minutes of uploads; it costs about 250 bytes of memory per id."""

EDIT_WINDOW: Final = 50_000
"""Finished (committed or rolled back) edit transactions remembered for duplicates."""

PREPARED: Final = "prepared"
COMMITTED: Final = "committed"
ROLLED_BACK: Final = "rolled_back"
TXN_STATES: Final = (PREPARED, COMMITTED, ROLLED_BACK)

DEFAULT_MIN_HOLDERS: Final = 2
"""A seal needs the payload durable on a majority of the 3 nodes of a group."""

Result = dict[str, Any]
"""What :meth:`~mydfs.storage.group_state.GroupState.apply` returns (JSON types only)."""


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """One slot's record in the group's table. It stays after the slot is deleted (state
    ``DELETED``, no holders) until the slot is reused, so late retries of ``abort``/``delete``
    can be recognised. ``state`` is never ``FREE``: a slot the group never allocated has no
    record."""

    slot: int
    state: SlotState
    generation: int
    """Group-wide counter value of the reservation that last wrote this slot."""
    upload_id: str
    file_id: str
    slice_index: int
    length: int
    crc32c: int
    next: Location | None
    holders: tuple[str, ...]
    """Node ids holding the payload durably, sorted. Empty for PENDING and DELETED slots."""
    target: Location | None
    """Where a MOVED slot redirects to; ``None`` in every other state."""
    reserved_at_ms: int
    """The leader's clock when the reservation was committed (``Reserve.now_ms``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (locations as ``[group, slot]``)."""
        return {
            "slot": self.slot,
            "state": self.state.value,
            "generation": self.generation,
            "upload_id": self.upload_id,
            "file_id": self.file_id,
            "slice_index": self.slice_index,
            "length": self.length,
            "crc32c": self.crc32c,
            "next": wire_location(self.next),
            "holders": list(self.holders),
            "target": wire_location(self.target),
            "reserved_at_ms": self.reserved_at_ms,
        }


@dataclass(frozen=True, slots=True)
class TxnInfo:
    """An edit transaction as this group knows it (``docs/group_state.md``, "Edits").

    A prepared txn carries what it locked; a finished one (``committed`` or ``rolled_back``,
    kept in a bounded window) only its outcome: ``lock``, ``move`` and ``new`` are empty then.
    ``file_id`` is ``""`` for a txn rolled back before this group ever saw its prepare."""

    txn: str
    state: str
    """``prepared``, ``committed`` or ``rolled_back``."""
    file_id: str
    prepared_at_ms: int
    """The leader's clock when the prepare was committed (0 once finished: the window keeps
    only the outcome)."""
    lock: tuple[tuple[int, int], ...] = ()
    move: tuple[int, int, Location] | None = None
    new: tuple[tuple[int, int], ...] = ()
    version: int = 0
    """The file's version this commit set (0 unless committed)."""
    keep: tuple[tuple[int, int, Location | None], ...] = ()
    """Slots of ``lock`` the commit keeps, each with its next pointer after it."""

    def slots(self) -> tuple[tuple[int, int], ...]:
        """Every slot this txn locks: ``lock`` then ``new``."""
        return self.lock + self.new

    def to_dict(self) -> dict[str, Any]:
        move = None
        if self.move is not None:
            move = [self.move[0], self.move[1], wire_location(self.move[2])]
        return {
            "txn": self.txn,
            "state": self.state,
            "file_id": self.file_id,
            "prepared_at_ms": self.prepared_at_ms,
            "lock": [list(r) for r in self.lock],
            "move": move,
            "new": [list(r) for r in self.new],
            "version": self.version,
            "keep": [[s, g, wire_location(n)] for s, g, n in self.keep],
        }


@dataclass(frozen=True, slots=True)
class UploadRef:
    """An entry of the upload-id index: where ``upload_id`` was stored and what became of it.

    ``state`` is the slot's state if the slot still carries this upload's generation, else
    ``DELETED`` (the slot was freed and reused since)."""

    upload_id: str
    slot: int
    generation: int
    sealed: bool
    state: SlotState


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Replicated configuration; changed only by the ``configure`` command."""

    max_slots: int | None
    """Volume capacity in slots; ``None`` means unbounded."""
    min_holders: int
    upload_window: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_slots": self.max_slots,
            "min_holders": self.min_holders,
            "upload_window": self.upload_window,
        }


@dataclass(frozen=True, slots=True)
class GroupStats:
    group: int
    end: int
    """Slots ever allocated: the next slot at the end of the volume."""
    generation: int
    """The last generation number handed out (0 before the first reservation)."""
    pending: int
    live: int
    moved: int
    deleted: int
    """404 slots, which is also the size of the free-slice table."""
    bytes_live: int
    bytes_pending: int
    available: int | None
    """Slots a reservation can still get (free table + room at the end); ``None`` if
    unbounded."""
    uploads_pending: int
    uploads_sealed: int
    """Size of the bounded window of sealed upload ids."""
    bytes_inline: int = 0
    """Payload bytes of inline uploads the table carries (not yet in min_holders volumes)."""
    ahead: int = 0
    """Pending slots a leader reserved ahead (``pool.`` upload ids); ``pending`` and
    ``uploads_pending`` count the others: uploads under way."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "end": self.end,
            "generation": self.generation,
            "pending": self.pending,
            "live": self.live,
            "moved": self.moved,
            "deleted": self.deleted,
            "bytes_live": self.bytes_live,
            "bytes_pending": self.bytes_pending,
            "available": self.available,
            "uploads_pending": self.uploads_pending,
            "uploads_sealed": self.uploads_sealed,
            "bytes_inline": self.bytes_inline,
            "ahead": self.ahead,
        }


def wire_location(location: Location | None) -> list[int] | None:
    """A location's JSON form ``[group, slot]`` (``None`` stays ``None``)."""
    return None if location is None else [location.group, location.slot]


def raise_for_result(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return ``result`` if it is a success, else raise the typed error it carries."""
    if result.get("ok") is True:
        return result
    raise error_from_dict(dict(result))


def refusal(op: str | None, exc: MydfsError) -> Result:
    """The result of a refused command: ``{"ok": False, "op": op, <the error's wire form>}``."""
    out: Result = {"ok": False, "op": op}
    out.update(exc.to_dict())
    return out
