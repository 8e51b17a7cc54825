"""Group commit: many writers, one ``fdatasync``.

A writer finishes its ``pwrite``, takes a ticket, and waits until a sync that *started after*
its write has completed. While one sync runs, later writers queue; the next sync covers all of
them at once, so N concurrent writers cost about two syncs, not N.

A failed ``fdatasync`` is fatal for the file: after an fsync error Linux may already have dropped
the dirty pages, so retrying would report data durable that is not. The syncer then refuses every
later wait with :class:`~mydfs.common.errors.SyncFailed` (a ``StorageIOError``).
"""

from __future__ import annotations

import os
import threading

from mydfs.common.errors import SyncFailed

__all__ = ["GroupSyncer", "SyncFailed"]


class GroupSyncer:
    """Shares ``fdatasync`` calls on one file descriptor among concurrent writers."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._cond = threading.Condition()
        self._written = 0  # tickets handed out (one per completed write)
        self._synced = 0  # every ticket <= this is durable
        self._syncing = False
        self._failure: OSError | None = None
        self.syncs = 0  # how many fdatasync calls ran (for tests and metrics)

    def ticket(self) -> int:
        """Call after a write has returned; the ticket names that write."""
        with self._cond:
            self._written += 1
            return self._written

    def wait_durable(self, ticket: int) -> None:
        """Block until the write behind ``ticket`` is on stable storage."""
        with self._cond:
            while True:
                if self._failure is not None:
                    raise SyncFailed("an earlier fdatasync failed", errno=self._failure.errno)
                if self._synced >= ticket:
                    return
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target = self._written
                self._cond.release()
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    self._cond.acquire()
                    self._failure = exc
                    self._syncing = False
                    self._cond.notify_all()
                    raise SyncFailed(f"fdatasync failed: {exc}", errno=exc.errno) from exc
                except BaseException:
                    # Interrupted (not an I/O error): let the next waiter sync instead.
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                    raise
                self._cond.acquire()
                self.syncs += 1
                self._synced = max(self._synced, target)
                self._syncing = False
                self._cond.notify_all()

    def sync(self) -> None:
        """Make every write completed so far durable."""
        self.wait_durable(self.ticket())

    @property
    def failed(self) -> bool:
        return self._failure is not None
