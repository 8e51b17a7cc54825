"""When a trash record is freed, and how it is shown (pure: the clock comes in as ``now``).

Deleting or replacing a file puts its whole entry in the trash (:mod:`mydfs.tracker.records`,
:class:`~mydfs.tracker.records.TrashRecord`). A record is **held** for ``trash_retention``
seconds after the removal: it can be undeleted or purged. The reclaimer frees only records that
are **due**: older than the retention, purged, or already being reclaimed (a pass that a crash
or a down group interrupted). Before it deletes a record's first slice the reclaimer marks it
``RECLAIMING`` (a durable edit); from then on it can never be undeleted. The states and the
commands are in ``docs/space.md`` (Trash).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mydfs.tracker.records import TrashRecord, TrashState

#: The production default of the tracker's ``trash_retention`` (seconds): one day.
DEFAULT_RETENTION = 86_400.0


def free_at(record: TrashRecord, retention: float) -> float | None:
    """The wall time from which the reclaimer may free ``record``; None: now (purged or
    already being reclaimed)."""
    if record.state is not TrashState.HELD:
        return None
    return record.time + retention


def is_due(record: TrashRecord, now: float, retention: float) -> bool:
    """May the reclaimer free ``record`` at ``now``?"""
    when = free_at(record, retention)
    return when is None or now >= when


def due(records: Iterable[TrashRecord], now: float, retention: float) -> list[TrashRecord]:
    """The records the reclaimer may free at ``now``, oldest first."""
    return sorted((r for r in records if is_due(r, now, retention)), key=lambda r: r.time)


def describe(record: TrashRecord, now: float, retention: float) -> dict[str, Any]:
    """A record as ``GET /meta/trash`` shows it: its fields plus ``free_at`` (wall time, null
    when it is freed at the next pass) and ``due`` (the reclaimer may free it now)."""
    return dict(
        record.to_dict(),
        free_at=free_at(record, retention),
        due=is_due(record, now, retention),
    )
