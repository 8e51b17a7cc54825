"""The one state of a slot, shared by the on-disk slot header and the group's slot table.

A slot is in the same state whether one looks at the header byte on a node's disk
(``docs/format.md``) or at the group's replicated record (``docs/group_state.md``); both
modules use this enum (:data:`mydfs.storage.format.SlotState` and
:data:`mydfs.storage.group_state.SlotState` are this very class). Each member has two wire
forms that never change:

* its **value**, the lowercase name (``"live"``), used in JSON: command results, group
  snapshots, status pages;
* its **byte**, the state byte of the slot header (offset 6): 0 FREE, 1 PENDING, 2 LIVE,
  3 MOVED, 4 DELETED.

``FREE`` exists only on disk, and only as the absence of a header (it is never written); a
group record is never ``FREE``: a slot the group never allocated has no record at all, and the
group's free-slice table is its ``DELETED`` slots.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["RECORD_STATES", "SlotState"]


class SlotState(StrEnum):
    """The state of a slot: the header byte on disk (:attr:`byte`), the name in JSON (value)."""

    FREE = "free"
    """Disk only: no header (never written, or a write that did not complete). Reusable."""
    PENDING = "pending"
    """Written or reserved for an upload whose seal has not committed; not readable."""
    LIVE = "live"
    """Sealed (group) / committed (disk): readable."""
    MOVED = "moved"
    """301: the slice now lives at ``target``. Not reusable until released."""
    DELETED = "deleted"
    """404: deleted, aborted or released; reusable. On disk a header remains as the marker."""

    @property
    def byte(self) -> int:
        """The state byte of the on-disk slot header."""
        return _BYTE_OF[self]

    @classmethod
    def from_byte(cls, value: int) -> SlotState:
        """The state a header byte names; :class:`ValueError` for an unknown byte."""
        try:
            return _STATE_OF[value]
        except KeyError:
            raise ValueError(f"{value!r} is not a slot state byte") from None


_BYTE_OF: Final[dict[SlotState, int]] = {
    SlotState.FREE: 0,
    SlotState.PENDING: 1,
    SlotState.LIVE: 2,
    SlotState.MOVED: 3,
    SlotState.DELETED: 4,
}
_STATE_OF: Final[dict[int, SlotState]] = {byte: state for state, byte in _BYTE_OF.items()}

RECORD_STATES: Final = (SlotState.PENDING, SlotState.LIVE, SlotState.MOVED, SlotState.DELETED)
"""The states a group record can be in (every state but FREE)."""
