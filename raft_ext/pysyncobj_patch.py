"""``SafeSyncObj``: pysyncobj 0.3.17 with Raft-correct append-entries handling.

pysyncobj 0.3.17 breaks three Raft rules in its message handler (``SyncObj.__onMessageReceived``,
syncobj.py:L909-1083); this subclass overrides that one method for the message types involved
and delegates every other type to the original:

* **Follower, ``append_entries``** (Raft §5.3, receiver rules 3-5). Once ``prevLogIdx``/
  ``prevLogTerm`` match, the original deletes *every* entry after ``prevLogIdx`` whenever it
  has any, matching or not, then appends. A stale or overlapping message (the leader re-sends
  after a rewind, a reset or a batch cut by size) therefore shrinks the log below entries that
  are already committed with this follower's acknowledgement; while shrunk, the follower can
  vote for a node that lacks them, and that node then overwrites a committed entry. Here the
  follower skips the entries it already holds with the same term, deletes only from the first
  index whose term differs, and appends only what it lacks. Deleting at or below the commit
  index is a broken invariant: :class:`InvariantViolation` goes to
  :meth:`SafeSyncObj._safe_invariant_broken` (the node stops) and nothing is changed. The
  commit index advances only up to the last entry this message verified (the original used
  the log end, which, now that a matching suffix is kept, may hold unverified entries), and
  not at all from a snapshot transmission that is still incomplete.
* **Leader, ``next_node_idx``** (the append acknowledgement). It carries no term in
  pysyncobj, so a reply produced for an earlier term could set this term's match index; a
  success reply also rewound ``nextIndex`` to just after the acknowledged batch, re-sending
  entries already in flight (the main source of the overlapping messages above). Here every
  reply carries the follower's term and the leader ignores a reply from another term
  (replies without a term, from an unpatched peer, are still accepted), the match index only
  grows, a success never moves ``nextIndex`` back, and a refusal moves it to the follower's
  answer, at most the leader's last index + 1. A follower whose entry at ``prevLogIdx`` has
  another term answers the first index of that term's run in its log (above its commit
  index), so a long divergent tail costs a round trip per term, not per entry.
* **Candidate, ``response_vote``**: a duplicated vote counted twice; each voter now counts
  once per term.

The leader's commit rule (syncobj.py:L654-675: a majority of match indexes, and only entries
of the current term) is correct and left alone. The class is only valid on the pinned
version: importing this module on another pysyncobj version raises ``RuntimeError``. See
``docs/raft_ext.md``.
"""

from __future__ import annotations

import logging
from typing import Any

import pysyncobj.syncobj as _syncobj
from pysyncobj import SyncObj
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

from mydfs.common.errors import InvariantViolation

log = logging.getLogger(__name__)

#: The only pysyncobj version this patch was written against (pyproject pins it).
PATCHED_VERSION = "0.3.17"

#: Private SyncObj members the override reads or calls; checked at import.
_REQUIRED_MEMBERS = (
    "_SyncObj__onMessageReceived",
    "_SyncObj__getEntries",
    "_SyncObj__deleteEntriesFrom",
    "_SyncObj__getCurrentLogIndex",
    "_SyncObj__setCurrentTerm",
    "_SyncObj__setState",
    "_SyncObj__onLeaderChanged",
    "_SyncObj__generateRaftTimeout",
    "_SyncObj__parseChangeClusterRequest",
    "_SyncObj__doChangeCluster",
    "_SyncObj__loadDumpFile",
)

_FOLLOWER = 0
_CANDIDATE = 1
_LEADER = 2


def check_pysyncobj_version(version: str = PYSYNCOBJ_VERSION) -> None:
    """Raise ``RuntimeError`` unless the installed pysyncobj is the one this patch fits."""
    if version != PATCHED_VERSION:
        raise RuntimeError(
            f"mydfs.raft_ext patches pysyncobj {PATCHED_VERSION}'s append-entries handler, "
            f"but pysyncobj {version} is installed: re-check the patch against that "
            "version's syncobj.py before changing the pin"
        )
    missing = [name for name in _REQUIRED_MEMBERS if not hasattr(SyncObj, name)]
    if missing:
        raise RuntimeError(f"pysyncobj {version} lacks the patched members {missing}")


check_pysyncobj_version()


class SafeSyncObj(SyncObj):  # type: ignore[misc]
    """``SyncObj`` whose follower never drops entries it holds unless they conflict."""

    # SyncObj's private state written here (declared for the type checker only).
    _SyncObj__raftLeader: Any
    _SyncObj__raftCommitIndex: int
    _SyncObj__raftElectionDeadline: float
    _SyncObj__transferInProgress: bool
    _SyncObj__leaderCommitIndex: int | None
    _SyncObj__recvTransmission: Any
    _safe_votes: tuple[int, set[Any]]

    def _safe_invariant_broken(self, error: InvariantViolation) -> None:
        """Called before the handler raises ``error``; subclasses stop the node here."""
        log.critical("raft invariant broken: %s", error)

    # -- dispatch ---------------------------------------------------------------------------
    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries":
            self._safe_on_append_entries(node, message)
        elif kind == "next_node_idx":
            self._safe_on_next_node_idx(node, message)
        elif kind == "response_vote":
            self._safe_on_response_vote(node, message)
        else:
            SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _safe_reply(self, node: Any, next_idx: int, *, success: bool, reset: bool) -> None:
        self._SyncObj__transport.send(
            node,
            {
                "type": "next_node_idx",
                "next_node_idx": next_idx,
                "reset": reset,
                "success": success,
                "term": self._SyncObj__raftCurrentTerm,
            },
        )

    def _safe_log_end(self) -> int:
        return int(self._SyncObj__getCurrentLogIndex())

    # -- follower ---------------------------------------------------------------------------
    def _safe_on_append_entries(self, node: Any, message: dict[str, Any]) -> None:
        term = message["term"]
        if term < self._SyncObj__raftCurrentTerm:
            return  # a stale leader: ignored, as in the original
        # Leader bookkeeping, unchanged from syncobj.py:L945-958.
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__transferInProgress = False
        if not self._SyncObj__transferInProgress:
            self._SyncObj__raftElectionDeadline = (
                _syncobj.monotonicTime() + self._SyncObj__generateRaftTimeout()
            )
        if self._SyncObj__raftLeader != node:
            self._SyncObj__onLeaderChanged()
        self._SyncObj__raftLeader = node
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__setCurrentTerm(term, None)
        self._SyncObj__setState(_FOLLOWER)
        leader_commit = message["commit_index"]
        self._SyncObj__leaderCommitIndex = leader_commit

        verified: int | None = None  # last index known to equal the leader's log
        if "prevLogIdx" in message:
            entries = self._safe_received_entries(node, message)
            if entries is None:
                return
            verified = self._safe_append(
                node, message["prevLogIdx"], message["prevLogTerm"], entries
            )
            if verified is None:
                return
            self._safe_reply(node, verified + 1, success=True, reset=False)
        elif message.get("serialized") is not None and (
            self._SyncObj__serializer.setTransmissionData(message["serialized"])
        ):
            self._SyncObj__loadDumpFile(clearJournal=True)
            # The log is now the snapshot's tail: committed entries only.
            verified = self._safe_log_end()
            self._safe_reply(node, verified + 1, success=True, reset=False)
        if verified is not None and leader_commit > self._SyncObj__raftCommitIndex:
            self._SyncObj__raftCommitIndex = min(leader_commit, verified)
        self._SyncObj__raftLog.setRaftCommitIndex(self._SyncObj__raftCommitIndex)

    def _safe_received_entries(self, node: Any, message: dict[str, Any]) -> list[Any] | None:
        """The message's entries, or None while a chunked entry is still arriving."""
        transmission = message.get("transmission")
        if transmission is None:
            return list(message.get("entries", []))
        if transmission == "start":
            self._SyncObj__recvTransmission = message["data"]
        elif transmission == "process":
            self._SyncObj__recvTransmission += message["data"]
        elif transmission == "finish":
            # As in the original: the buffer is kept if this "finish" was premature (the
            # leader marks several chunks "finish", syncobj.py:L1281; note §4e).
            self._SyncObj__recvTransmission += message["data"]
            entry = _syncobj.pickle.loads(self._SyncObj__recvTransmission)
            self._SyncObj__recvTransmission = ""
            return [entry]
        else:
            raise ValueError(f"wrong transmission type {transmission!r}")
        self._safe_reply(node, self._safe_log_end() + 1, success=False, reset=False)
        return None

    def _safe_append(
        self, node: Any, prev_idx: int | None, prev_term: int | None, entries: list[Any]
    ) -> int | None:
        """Raft §5.3 receiver rules 2-4. Returns the last verified index, or None (refused)."""
        prev = self._SyncObj__getEntries(prev_idx, 1)
        if not prev:  # beyond our log end (or below its compacted start)
            self._safe_reply(node, self._safe_log_end() + 1, success=False, reset=True)
            return None
        assert prev_idx is not None
        if prev[0][2] != prev_term:
            start = self._safe_conflict_start(prev_idx, prev[0][2])
            self._safe_reply(node, start, success=False, reset=True)
            return None
        end = self._safe_log_end()
        for position, entry in enumerate(entries):
            idx = prev_idx + 1 + position
            if entry[1] != idx:
                raise ValueError(f"append_entries with index {entry[1]} at position {idx}")
            if idx > end:
                self._safe_add(entries[position:])
                break
            held = self._SyncObj__getEntries(idx, 1)
            if held and held[0][2] == entry[2]:
                continue  # the same entry (log matching): keep it
            self._safe_truncate(idx, entry)
            self._safe_add(entries[position:])
            break
        return prev_idx + len(entries)

    def _safe_conflict_start(self, idx: int, term: int) -> int:
        """Where the leader should try next after ``idx`` (of ``term``) did not match: the
        first index of this log's run of ``term`` entries ending there, never at or below
        the commit index (committed entries match every leader's). The original answered
        ``idx``, one index back per round trip: an old leader that appended a long tail
        while cut off took minutes to catch up (the Raft thesis, section 5.3, "the follower
        can include the term of the conflicting entry and the first index it stores for
        that term")."""
        floor = self._SyncObj__raftCommitIndex + 1
        while idx > floor:
            before = self._SyncObj__getEntries(idx - 1, 1)
            if not before or before[0][2] != term:
                break
            idx -= 1
        return idx

    def _safe_truncate(self, idx: int, incoming: Any) -> None:
        commit = self._SyncObj__raftCommitIndex
        applied = self._SyncObj__raftLastApplied
        if idx <= commit or idx <= applied:
            error = InvariantViolation(
                "append_entries conflicts with a committed log entry",
                index=idx,
                commit_index=commit,
                last_applied=applied,
                incoming_term=incoming[2],
            )
            self._safe_invariant_broken(error)
            raise error
        log.warning("raft: deleting conflicting uncommitted log entries from index %d", idx)
        if self._SyncObj__conf.dynamicMembershipChange:
            for entry in reversed(self._SyncObj__getEntries(idx)):
                request = self._SyncObj__parseChangeClusterRequest(entry[0])
                if request is not None:
                    self._SyncObj__doChangeCluster(request, reverse=True)
        self._SyncObj__deleteEntriesFrom(idx)

    def _safe_add(self, entries: list[Any]) -> None:
        for entry in entries:
            self._SyncObj__raftLog.add(*entry)
        if self._SyncObj__conf.dynamicMembershipChange:
            for entry in entries:
                request = self._SyncObj__parseChangeClusterRequest(entry[0])
                if request is not None:
                    self._SyncObj__doChangeCluster(request)

    # -- leader -----------------------------------------------------------------------------
    def _safe_on_next_node_idx(self, node: Any, message: dict[str, Any]) -> None:
        if self._SyncObj__raftState != _LEADER:
            return
        term = message.get("term")
        if term is not None and term != self._SyncObj__raftCurrentTerm:
            return  # a reply to an earlier term's append_entries
        match_index = self._SyncObj__raftMatchIndex
        next_index = self._SyncObj__raftNextIndex
        if node not in match_index:
            return
        next_idx = int(message["next_node_idx"])
        ceiling = self._safe_log_end() + 1
        if message["success"]:
            match_index[node] = max(match_index[node], min(next_idx, ceiling) - 1)
            next_index[node] = max(next_index[node], min(next_idx, ceiling))
        elif message["reset"]:
            # Not floored at matchIndex + 1: a follower whose disk was replaced must be able
            # to catch up, and re-sending matching entries is harmless to a patched follower.
            next_index[node] = min(next_idx, ceiling)
        self._SyncObj__lastResponseTime[node] = _syncobj.monotonicTime()

    # -- candidate --------------------------------------------------------------------------
    def _safe_on_response_vote(self, node: Any, message: dict[str, Any]) -> None:
        term = self._SyncObj__raftCurrentTerm
        if message.get("term") == term:
            votes: tuple[int, set[Any]] | None = getattr(self, "_safe_votes", None)
            if votes is None or votes[0] != term:
                votes = (term, set())
                self._safe_votes = votes
            if node in votes[1]:
                return  # a duplicated vote
            votes[1].add(node)
        SyncObj._SyncObj__onMessageReceived(self, node, message)


__all__ = ["PATCHED_VERSION", "SafeSyncObj", "check_pysyncobj_version"]
