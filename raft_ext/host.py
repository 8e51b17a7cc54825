"""The SyncObj subclass that hosts one :class:`StateMachine` (runs on the pysyncobj tick thread).

Only :class:`~mydfs.raft_ext.node.RaftNode` uses this class. Its base is
:class:`~.pysyncobj_patch.SafeSyncObj` (pysyncobj with the append-entries fix); what it adds:

* one ``@replicated`` method, ``_rx_apply(payload: str)``: every command is a small orjson
  ``str``; the machine's ``apply`` is called with the decoded dict;
* journal durability (:mod:`.journal`): a sync at the start of each tick and right before any
  acknowledgement or vote leaves the node (by wrapping the transport's ``send``);
* full-disk handling (:mod:`.diskguard`): each tick runs guarded, and the submit queue is
  wrapped so a leader refuses commands its journal has no room for;
* an app-level keepalive ``{"type": "ping"}`` to every peer every ``keepalive_interval``. The
  receiver ignores unknown message types (syncobj.py:L909-1083); the read refreshes the link's
  idle timer, so follower<->follower links are still up when an election needs them (note §4c);
* the Raft port guard (:mod:`.portguard`): frames longer than ``max_frame_bytes`` close the
  connection before they are buffered, and handshakes are bounded in number and time;
* a status snapshot published from the tick thread (``getStatus()`` iterates internal dicts and
  must not run on another thread, note §1), plus a queue of small tasks run on the tick thread
  (consistent reads of the machine).

Attributes are set *before* ``super().__init__()`` on purpose: the tick thread starts inside it
and uses them. The "state attributes after ``super().__init__``" rule of the note concerns the
default pickle serializer, which dumps ``__dict__``; with our custom serializer pysyncobj never
serializes the SyncObj (``data[0]`` is None, syncobj.py:L1460-1468) and all replicated state
lives in the machine. The class has no properties: ``SyncObj.__init__`` calls ``getattr`` on
every name in ``dir(self)``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pysyncobj import replicated

from mydfs.common.errors import InvariantViolation, MydfsError, StorageIOError

from .diskguard import CommandQueueGuard
from .journal import FsyncFileJournal, journal_factory_installed, make_journal_factory
from .machine import ERROR_KEY, NOOP_PAYLOAD, StateMachine, decode_command
from .portguard import GuardedTcpConnection, transport_class
from .pysyncobj_patch import SafeSyncObj
from .settings import RaftSettings
from .snapshot import SnapshotStore

log = logging.getLogger(__name__)

ROLE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}
LEADER_STATE = 2
#: Messages that acknowledge or vote on the local log: the journal must be durable first.
_SYNC_BEFORE_SEND = frozenset({"next_node_idx", "response_vote"})
_PING: dict[str, Any] = {"type": "ping"}

SubmitCallback = Callable[[Any, int], None]


class RaftHost(SafeSyncObj):
    """SyncObj + one replicated apply method + durability, keepalive and status hooks.

    The base is :class:`~.pysyncobj_patch.SafeSyncObj`: pysyncobj with Raft-correct
    append-entries handling (a follower never drops entries it holds unless they conflict).
    """

    def __init__(
        self,
        settings: RaftSettings,
        machine: StateMachine,
        snapshots: SnapshotStore,
        *,
        on_state_changed: Callable[[int, int], None],
        on_ready: Callable[[], None],
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        # Set before super().__init__(): the tick thread starts inside it (see module doc).
        self._rx_settings = settings
        self._rx_machine = machine
        self._rx_snapshots = snapshots
        self._rx_on_fatal = on_fatal
        self._rx_on_state_changed = on_state_changed
        self._rx_wired = False
        self._rx_journal: FsyncFileJournal | None = None
        self._rx_guard: CommandQueueGuard | None = None  # disk-full handling (.diskguard)
        self._rx_tasks: deque[Callable[[], None]] = deque()
        self._rx_status: dict[str, Any] = {"node": settings.self_address, "role": "starting"}
        self._rx_next_status = 0.0
        self._rx_next_ping = 0.0
        self._rx_last_leader: str | None = None
        self._rx_leader_changes = 0
        self._rx_applied = 0
        self._rx_rejected = 0
        self._rx_pings_sent = 0
        self._rx_started = time.monotonic()
        conf = settings.to_syncobj_conf(
            serializer=snapshots.serialize,
            deserializer=snapshots.deserialize,
            serialize_checker=snapshots.check,
            on_state_changed=self._rx_state_changed,
            on_ready=on_ready,
        )
        factory = make_journal_factory(settings.journal_file, settings.snapshot_file)
        with journal_factory_installed(factory):
            super().__init__(
                settings.self_address,
                list(settings.peers),
                conf,
                transportClass=transport_class(settings.max_frame_bytes),
            )

    # -- the one replicated method (tick thread) ------------------------------------------
    @replicated  # type: ignore[untyped-decorator]
    def _rx_apply(self, payload: str) -> dict[str, Any]:
        return self._rx_apply_payload(payload)

    def _rx_apply_payload(self, payload: str) -> dict[str, Any]:
        if payload == NOOP_PAYLOAD:
            return {}
        try:
            command = decode_command(payload)
            result: Any = self._rx_machine.apply(command)
        except InvariantViolation as exc:
            return self._rx_apply_bug(exc)
        except MydfsError as exc:
            # A deterministic rejection: the same on every replica, state unchanged.
            self._rx_rejected += 1
            return {ERROR_KEY: exc.to_dict()}
        except Exception as exc:
            return self._rx_apply_bug(exc)
        self._rx_applied += 1
        if result is None:
            return {}
        if not isinstance(result, dict):
            return self._rx_apply_bug(
                TypeError(f"apply() returned {type(result).__name__}, not dict")
            )
        return result

    def _safe_invariant_broken(self, error: InvariantViolation) -> None:
        super()._safe_invariant_broken(error)
        self._rx_on_fatal(error)

    def _rx_apply_bug(self, exc: BaseException) -> dict[str, Any]:
        log.critical("state machine apply failed (a bug; the node stops)", exc_info=exc)
        error = (
            exc
            if isinstance(exc, InvariantViolation)
            else InvariantViolation(f"state machine apply failed: {exc!r}")
        )
        self._rx_on_fatal(error)
        return {ERROR_KEY: error.to_dict()}

    # -- called from the event-loop thread ------------------------------------------------
    def rx_submit(self, payload: str, callback: SubmitCallback) -> None:
        """Queue a command (pickle + deque append; cheap, never blocks)."""
        self._rx_apply(payload, callback=callback)

    def rx_run_on_tick(self, task: Callable[[], None]) -> None:
        """Run ``task`` on the tick thread between two ticks' applies (wakes the tick up)."""
        self._rx_tasks.append(task)
        notifier = getattr(self, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()

    def rx_status(self) -> dict[str, Any]:
        """The last published status (a dict the tick thread never mutates again)."""
        return self._rx_status

    def rx_role(self) -> int:
        return int(getattr(self, "_SyncObj__raftState", 0))

    def rx_leader_address(self) -> str | None:
        leader = self._getLeader()
        return None if leader is None else str(leader.id)

    # -- tick thread ----------------------------------------------------------------------
    def _onTick(self, timeToWait: float = 0.0) -> None:
        if not self._rx_wired:
            self._rx_wire()
        # The leader counts its own log towards the commit index early in the tick
        # (syncobj.py:L654-675): everything it appended so far must be durable first.
        self._rx_sync_journal()
        assert self._rx_guard is not None
        self._rx_guard.run_tick(functools.partial(super()._onTick, timeToWait))

    def _rx_wire(self) -> None:
        journal = getattr(self, "_SyncObj__raftLog", None)
        if not isinstance(journal, FsyncFileJournal):
            error = InvariantViolation("the durable journal was not installed")
            self._rx_on_fatal(error)
            raise error
        self._rx_journal = journal
        self._rx_guard = CommandQueueGuard(
            self,
            journal,
            is_leader=lambda: self.rx_role() == LEADER_STATE,
            on_fatal=self._rx_on_fatal,
        )
        self._rx_guard.install()
        transport = self._SyncObj__transport
        original_send = transport.send

        def send(node: Any, message: Any) -> Any:
            if isinstance(message, dict) and message.get("type") in _SYNC_BEFORE_SEND:
                self._rx_sync_journal()
            return original_send(node, message)

        transport.send = send
        self.addOnTickCallback(self._rx_on_tick)
        self._rx_wired = True

    def _rx_sync_journal(self) -> None:
        journal = self._rx_journal
        if journal is None or not journal.dirty:
            return
        try:
            journal.sync()
        except OSError as exc:
            # After a failed fsync the page cache state is unknown: stop (never ack).
            error = StorageIOError(f"raft journal fsync failed: {exc}", path=str(exc.filename))
            self._rx_on_fatal(error)
            raise error from exc

    def _rx_state_changed(self, old: int, new: int) -> None:
        self._rx_next_status = 0.0
        self._rx_on_state_changed(old, new)

    def _rx_on_tick(self) -> None:
        while self._rx_tasks:
            task = self._rx_tasks.popleft()
            try:
                task()
            except Exception:
                log.exception("raft tick task failed")
        now = time.monotonic()
        if now >= self._rx_next_ping:
            self._rx_next_ping = now + self._rx_settings.keepalive_interval
            transport = self._SyncObj__transport
            for node in self.otherNodes:
                if transport.send(node, _PING):
                    self._rx_pings_sent += 1
        leader = self.rx_leader_address()
        if leader != self._rx_last_leader:
            if leader is not None:
                self._rx_leader_changes += 1
            self._rx_last_leader = leader
            self._rx_next_status = 0.0
        if now >= self._rx_next_status:
            self._rx_next_status = now + self._rx_settings.status_interval
            self._rx_status = self._rx_build_status(now)

    def _rx_build_status(self, now: float) -> dict[str, Any]:
        raw = self.getStatus()
        settings = self._rx_settings
        leader = raw.get("leader")
        leader_address = None if leader is None else str(leader.id)
        peers: dict[str, dict[str, Any]] = {}
        for peer in settings.peers:
            peers[peer] = {
                "url": settings.url_of(peer),
                "connected": raw.get("partner_node_status_server_" + peer) == 2,
                "match_index": raw.get("match_idx_server_" + peer),
                "next_index": raw.get("next_node_idx_server_" + peer),
            }
        journal = self._rx_journal
        snaps = self._rx_snapshots
        transport = self._SyncObj__transport
        return {
            "node": settings.self_address,
            "url": settings.url_of(settings.self_address),
            "role": ROLE_NAMES.get(int(raw["state"]), "unknown"),
            "term": int(raw["raft_term"]),
            "leader": leader_address,
            "leader_url": settings.url_of(leader_address),
            "commit_index": int(raw["commit_idx"]),
            "last_applied": int(raw["last_applied"]),
            "leader_commit_index": raw.get("leader_commit_idx"),
            "log_entries": int(raw["log_len"]),
            "has_quorum": bool(raw["has_quorum"]),
            "ready": bool(self.isReady()),
            "bound": bool(transport.ready),
            "peers": peers,
            "leader_changes": self._rx_leader_changes,
            "applied_commands": self._rx_applied,
            "rejected_commands": self._rx_rejected,
            "keepalive_pings_sent": self._rx_pings_sent,
            "raft_frames_refused": GuardedTcpConnection.frames_refused,
            "journal_syncs": 0 if journal is None else journal.sync_count,
            "journal_appends_refused": 0 if journal is None else journal.refused,
            "commands_refused_disk_full": 0 if self._rx_guard is None else self._rx_guard.refused,
            "snapshots_saved": snaps.saved,
            "snapshots_loaded": snaps.loaded,
            "snapshot_failures": snaps.failed,
            "snapshot_last_index": snaps.last_saved_index,
            "snapshot_bytes": snaps.last_size,
            "uptime_seconds": round(now - self._rx_started, 3),
            "published_monotonic": now,
        }


__all__ = ["LEADER_STATE", "ROLE_NAMES", "RaftHost", "SubmitCallback"]
