"""What a Raft node does when its journal's disk is full (runs on the pysyncobj tick thread).

The journal (:mod:`.journal`) reserves space before it writes, so a full disk never damages it:
an append it cannot store raises :class:`DiskFull` before anything changed. What that means for
each place pysyncobj appends, and what this module adds:

* **Leader, a submitted command.** :class:`CommandQueueGuard` wraps pysyncobj's submit queue.
  When the node leads and the journal has no room for the next command, the command is refused
  *before* it is popped into the log: the local caller gets :data:`FAIL_DISK_FULL` (raised as
  ``DiskFull``, HTTP 507), a follower that forwarded it gets the same code back. The command is
  in no log, so the refusal is a definite failure. The leader then asks a caught-up follower to
  take over (``transferLeadership``, at most every :data:`TRANSFER_EVERY` seconds), so the group
  keeps committing on the two nodes that have space.
* **Follower, AppendEntries.** ``add`` raises inside pysyncobj's message handler, before the
  acknowledgement is sent: the entries it could not store are never acknowledged, and the leader
  never counts them. Entries stored before the failing one are valid log entries; they are
  synced and acknowledged with a later message. The leader retries every heartbeat, so the
  follower catches up on its own once space returns.
* **Leader, its own no-op after an election.** Refused the same way: the node leads without it,
  refuses commands (above) and hands leadership over.
* **Term and vote** are stored in place (:mod:`.journal_meta`) and never need space.

:meth:`CommandQueueGuard.run_tick` wraps one pysyncobj tick: a ``DiskFull`` escaping it is
logged (rate-limited) and the next tick runs normally; a failed meta ``fdatasync``
(``SyncFailed``) stops the node through ``on_fatal``, like a failed journal fsync.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mydfs.common.errors import DiskFull, SyncFailed

from .bridge import FAIL_DISK_FULL
from .journal import FsyncFileJournal

log = logging.getLogger(__name__)

#: At most one leadership transfer request per this many seconds while the disk is full.
TRANSFER_EVERY = 2.0
_LOG_EVERY = 10.0


class CommandQueueGuard:
    """Stands in for pysyncobj's submit queue (``FastQueue``) of one host."""

    def __init__(
        self,
        host: Any,
        journal: FsyncFileJournal,
        *,
        is_leader: Callable[[], bool],
        on_fatal: Callable[[BaseException], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._journal = journal
        self._is_leader = is_leader
        self._on_fatal = on_fatal
        self._clock = clock
        self._inner = host._SyncObj__commandsQueue
        self._next_transfer = 0.0
        self._next_log = 0.0
        #: Commands refused because the journal had no room (for status and tests).
        self.refused = 0

    def install(self) -> None:
        self._host._SyncObj__commandsQueue = self

    # -- FastQueue's interface -------------------------------------------------------------
    def put_nowait(self, value: Any) -> None:
        self._inner.put_nowait(value)

    def get_nowait(self) -> Any:
        while True:
            command, callback = self._inner.get_nowait()  # raises queue.Empty
            if not self._is_leader() or self._journal.has_room(len(command)):
                return command, callback
            self._refuse(callback)

    # -- refusals --------------------------------------------------------------------------
    def _refuse(self, callback: Any) -> None:
        self.refused += 1
        self._log("raft journal full: refusing commands on the leader (507)")
        if isinstance(callback, tuple):  # forwarded by a follower: (node, request id)
            node, request_id = callback
            self._host._SyncObj__transport.send(
                node,
                {
                    "type": "apply_command_response",
                    "request_id": request_id,
                    "error": FAIL_DISK_FULL,
                },
            )
        elif callback is not None:
            callback(None, FAIL_DISK_FULL)
        now = self._clock()
        if now >= self._next_transfer:
            self._next_transfer = now + TRANSFER_EVERY
            self._host.transferLeadership()

    def _log(self, message: str, *args: Any) -> None:
        now = self._clock()
        if now >= self._next_log:
            self._next_log = now + _LOG_EVERY
            log.warning(message, *args)

    # -- one tick ---------------------------------------------------------------------------
    def run_tick(self, tick: Callable[[], None]) -> None:
        try:
            tick()
        except DiskFull as exc:
            # An append was refused inside pysyncobj (a follower's AppendEntries, a new leader's
            # no-op): nothing was acknowledged for it; the leader retries.
            self._log(
                "raft journal full (%s): entries are not acknowledged until space returns", exc
            )
        except SyncFailed as exc:
            self._on_fatal(exc)
            raise


__all__ = ["FAIL_DISK_FULL", "TRANSFER_EVERY", "CommandQueueGuard"]
