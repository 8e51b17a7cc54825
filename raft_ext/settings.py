"""Vetted pysyncobj settings for a 3-node storage group (see docs/raft_ext.md).

The defaults encode the measurements of ``shared/notes/pysyncobj.md``:

* ``connection_retry_time=0.2`` and an app-level keepalive every 0.5 s: kill -9 failover
  0.41/0.67/0.87 s (min/median/max) instead of 1.2-4.9 s (note §4c);
* ``leader_fallback_timeout=1.0``: an isolated leader steps down after ~1.03 s instead of 30 s
  (note §4c, lease test). This is *not* a lease: two nodes may both think they lead for about a
  second, so every leader-only decision must go through a commit;
* ``append_entries_use_batch=False``: p50 0.24-0.36 ms per sequential command instead of one
  100 ms heartbeat period (note §4a/b);
* ``commands_wait_leader=False``: fail fast with "no leader" instead of queueing (note §3);
* journal **and** snapshot file always (journal-only loses everything after compaction, §4d);
* bind to the node's own address, never ``0.0.0.0`` by default; a password is mandatory
  (without one the Raft port unpickles data from anyone, §2).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pysyncobj import SyncObjConf

from mydfs.common.errors import InvalidArgument

from .machine import HARD_MAX_COMMAND_BYTES

#: Minimum password length accepted; the secret is the only protection of the Raft port.
MIN_PASSWORD_LENGTH = 8

JOURNAL_FILE_NAME = "raft.journal"
SNAPSHOT_FILE_NAME = "raft.snapshot"


def _check_address(what: str, address: str) -> tuple[str, int]:
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise InvalidArgument(f"{what} must be 'host:port'", address=address)
    port = int(port_text)
    if not 0 < port < 65536:
        raise InvalidArgument(f"{what} has an invalid port", address=address)
    return host, port


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


@dataclass(frozen=True)
class RaftSettings:
    """Everything one group member needs. Only the first five fields have no default."""

    #: This node's Raft address, ``host:port``, exactly as the peers list it.
    self_address: str
    #: The other members' Raft addresses (2 for a 3-node group).
    peers: tuple[str, ...]
    #: Raft address -> advertised HTTP base URL, for every member including this one.
    http_urls: Mapping[str, str]
    #: Directory holding ``raft.journal``, ``raft.journal.meta`` and ``raft.snapshot``.
    data_dir: Path
    #: Shared group secret (required): encrypts and authenticates every Raft frame.
    password: str | None = field(repr=False)
    #: Where to listen; defaults to ``self_address``. ``0.0.0.0`` only if given explicitly.
    bind_address: str | None = None

    raft_min_timeout: float = 0.4
    raft_max_timeout: float = 1.4
    append_entries_period: float = 0.1
    append_entries_use_batch: bool = False
    connection_timeout: float = 3.5
    connection_retry_time: float = 0.2
    leader_fallback_timeout: float = 1.0
    #: App-level ping on every Raft link so idle follower<->follower links stay alive.
    keepalive_interval: float = 0.5
    commands_wait_leader: bool = False
    commands_queue_size: int = 100_000
    log_compaction_min_entries: int = 5000
    log_compaction_min_time: float = 300.0
    #: Stagger compaction over the nodes (production). Forced compaction also waits for the
    #: node's window when this is on, so tests turn it off.
    log_compaction_split: bool = True
    max_command_bytes: int = HARD_MAX_COMMAND_BYTES
    #: Longest Raft frame accepted from the network (before decryption); a longer announced
    #: length closes the connection (``portguard.py``). Members send at most ~200 KiB.
    max_frame_bytes: int = 1 << 20
    #: How often the tick thread publishes the status snapshot read by ``status()``.
    status_interval: float = 0.1
    bind_retry_time: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "peers", tuple(self.peers))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "http_urls", dict(self.http_urls))

    # -- derived --------------------------------------------------------------------------
    @property
    def members(self) -> tuple[str, ...]:
        return (self.self_address, *self.peers)

    @property
    def journal_file(self) -> Path:
        return self.data_dir / JOURNAL_FILE_NAME

    @property
    def snapshot_file(self) -> Path:
        return self.data_dir / SNAPSHOT_FILE_NAME

    @property
    def effective_bind_address(self) -> str:
        return self.bind_address or self.self_address

    def replace(self, **changes: Any) -> RaftSettings:
        return dataclasses.replace(self, **changes)

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`InvalidArgument` for anything unsafe or inconsistent."""
        if not isinstance(self.password, str) or not self.password.strip():
            raise InvalidArgument(
                "a Raft password is required: without it the Raft port executes pickles "
                "from anyone who can reach it"
            )
        if len(self.password) < MIN_PASSWORD_LENGTH:
            raise InvalidArgument(
                f"the Raft password must have at least {MIN_PASSWORD_LENGTH} characters"
            )
        self_host, _ = _check_address("self_address", self.self_address)
        if _is_wildcard(self_host):
            raise InvalidArgument(
                "self_address must be the node's reachable address, not a wildcard",
                address=self.self_address,
            )
        if not self.peers:
            raise InvalidArgument("a Raft group needs peers")
        for peer in self.peers:
            _check_address("peer", peer)
        if len(set(self.members)) != len(self.members):
            raise InvalidArgument("duplicate Raft member address", members=",".join(self.members))
        if self.bind_address is not None:
            _check_address("bind_address", self.bind_address)
        missing = [m for m in self.members if m not in self.http_urls]
        if missing:
            raise InvalidArgument("http_urls lacks members", missing=",".join(missing))
        for member in self.members:
            url = self.http_urls[member]
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidArgument("http_urls values must be http(s) URLs", url=url)
        if not 0 < self.max_command_bytes <= HARD_MAX_COMMAND_BYTES:
            raise InvalidArgument(
                f"max_command_bytes must be in 1..{HARD_MAX_COMMAND_BYTES}",
                value=self.max_command_bytes,
            )
        if not 256 * 1024 <= self.max_frame_bytes <= 64 * 1024 * 1024:
            raise InvalidArgument(
                "max_frame_bytes must be in 256 KiB..64 MiB", value=self.max_frame_bytes
            )
        if self.keepalive_interval <= 0 or self.keepalive_interval >= self.connection_timeout:
            raise InvalidArgument("keepalive_interval must be in (0, connection_timeout)")
        if self.status_interval <= 0:
            raise InvalidArgument("status_interval must be positive")
        # pysyncobj's own constraints (config.py validate) with readable errors.
        if not self.raft_min_timeout > 3 * self.append_entries_period:
            raise InvalidArgument("raft_min_timeout must exceed 3 x append_entries_period")
        if not self.raft_max_timeout > self.raft_min_timeout:
            raise InvalidArgument("raft_max_timeout must exceed raft_min_timeout")
        if not self.leader_fallback_timeout > self.append_entries_period:
            raise InvalidArgument("leader_fallback_timeout must exceed append_entries_period")
        if not self.connection_timeout >= self.raft_max_timeout:
            raise InvalidArgument("connection_timeout must be >= raft_max_timeout")
        if self.connection_retry_time < 0 or self.log_compaction_min_entries < 2:
            raise InvalidArgument("invalid connection_retry_time or log_compaction_min_entries")

    def url_of(self, address: str | None) -> str | None:
        if address is None:
            return None
        return self.http_urls.get(address)

    # -- pysyncobj configuration ----------------------------------------------------------
    def to_syncobj_conf(
        self,
        *,
        serializer: Callable[[str, Any], None],
        deserializer: Callable[[str], Any],
        serialize_checker: Callable[[], int],
        on_state_changed: Callable[[int, int], None],
        on_ready: Callable[[], None],
    ) -> Any:
        """Build the ``SyncObjConf``. Validates first; the journal and snapshot are mandatory."""
        self.validate()
        conf = SyncObjConf(
            password=self.password,
            autoTick=True,
            raftMinTimeout=self.raft_min_timeout,
            raftMaxTimeout=self.raft_max_timeout,
            appendEntriesPeriod=self.append_entries_period,
            appendEntriesUseBatch=self.append_entries_use_batch,
            connectionTimeout=self.connection_timeout,
            connectionRetryTime=self.connection_retry_time,
            leaderFallbackTimeout=self.leader_fallback_timeout,
            commandsWaitLeader=self.commands_wait_leader,
            commandsQueueSize=self.commands_queue_size,
            logCompactionMinEntries=self.log_compaction_min_entries,
            logCompactionMinTime=self.log_compaction_min_time,
            logCompactionSplit=self.log_compaction_split,
            bindAddress=self.effective_bind_address,
            bindRetryTime=self.bind_retry_time,
            maxBindRetries=0,
            journalFile=os.fspath(self.journal_file),
            fullDumpFile=os.fspath(self.snapshot_file),
            useFork=False,
            serializer=serializer,
            deserializer=deserializer,
            serializeChecker=serialize_checker,
            dynamicMembershipChange=False,
            onStateChanged=on_state_changed,
            onReady=on_ready,
        )
        conf.validate()
        if conf.journalFile is None or conf.fullDumpFile is None or conf.password is None:
            raise InvalidArgument("journal, snapshot file and password are all mandatory")
        return conf
