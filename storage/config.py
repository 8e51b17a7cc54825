"""The configuration of one ``mydfs-storage`` node: keys, defaults, and their checks."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mydfs.common.config import REQUIRED, ConfigError, Option, load
from mydfs.common.limits import LIMIT_OPTIONS, Limits, limits_from_values
from mydfs.common.params import is_uint_text
from mydfs.common.secretfile import SECRET_OPTIONS, resolve_secret
from mydfs.common.tls import TLS_OPTIONS, tls_paths
from mydfs.common.tracing import LOG_FORMATS
from mydfs.storage.group_commands import MAX_INLINE

OPTIONS: tuple[Option, ...] = (
    Option("node_id", "str", REQUIRED, "this node's id, unique in the cluster", "g1n1"),
    Option("group_id", "int", REQUIRED, "the storage group this node belongs to (>= 1)", 1),
    Option("data_dir", "path", REQUIRED, "folder for the Raft journal and snapshot", "data/g1n1"),
    Option(
        "volume_path",
        "path",
        "",
        "the slice volume file (default: <data_dir>/volume.dat); may sit on another disk",
    ),
    Option("listen", "str", "127.0.0.1:8101", "HTTP listen address host:port"),
    Option(
        "advertise",
        "str",
        "",
        "HTTP base URL that peers, the tracker and clients use (default: http://<listen>)",
    ),
    Option("raft", "str", REQUIRED, "this node's Raft address host:port", "127.0.0.1:7101"),
    Option(
        "peers",
        "list",
        REQUIRED,
        "the other members of the group, each 'node_id,raft_host:port,http_url'",
        ["g1n2,127.0.0.1:7102,http://127.0.0.1:8102", "g1n3,127.0.0.1:7103,http://127.0.0.1:8103"],
    ),
    Option("tracker", "str", "", "tracker URL to register and heartbeat with ('' = none)"),
    *SECRET_OPTIONS,
    *TLS_OPTIONS,
    Option("log_level", "str", "info", "debug, info, warning or error"),
    Option("log_format", "str", "text", "log lines as text or json (one object a line)"),
    Option(
        "memory_budget_mb",
        "int",
        256,
        "payload MiB in flight on this node (uploads, pushes, registration, fetches, reads)",
    ),
    Option(
        "peer_budget_mb",
        "int",
        64,
        "MiB of unfinished pushes to one follower; past it the follower catches up by fetching",
    ),
    Option("fetch_concurrency", "int", 2, "slices the reconciler fetches at once"),
    Option("registration_mb", "int", 64, "leader's registration table bound, MiB"),
    Option("registration_ttl", "float", 30.0, "seconds a fresh slice stays in the table"),
    Option("replica_timeout", "float", 10.0, "seconds to get a slice durable on a majority"),
    Option("heartbeat_interval", "float", 1.0, "seconds between tracker heartbeats"),
    Option(
        "edit_timeout",
        "float",
        10.0,
        "seconds an edit may stay prepared before the leader asks the tracker for its outcome",
    ),
    Option("max_chain", "int", 10_000, "most slices one GET /chain answer lists (max= is capped)"),
    Option(
        "max_pending_reservations",
        "int",
        4096,
        "reserved, not yet sealed slices a group may have; POST /slices/reserve past it is 429",
    ),
    Option("max_json_bytes", "int", 65536, "largest JSON body (POST /slices/reserve), bytes"),
    Option(
        "scrub_rate_mb",
        "float",
        8.0,
        "MiB/s the background scrub re-reads live slots at to check their CRCs (0 = no scrub)",
    ),
    Option(
        "scrub_interval",
        "float",
        3600.0,
        "seconds from the start of one scrub pass to the start of the next (at the earliest)",
    ),
    Option(
        "hot_cache_reads",
        "int",
        20,
        "reads of a slice since start after which this node keeps it in memory (hot cache)",
    ),
    Option("hot_cache_mb", "int", 64, "bound of the hot-slice cache, MiB (0: no cache)"),
    Option(
        "inline_max",
        "int",
        4096,
        "largest one-slice upload carried inside its Raft command, bytes (0: never; max 16384)",
    ),
    *LIMIT_OPTIONS,
)


@dataclass(frozen=True)
class Peer:
    node_id: str
    raft: str
    http: str


@dataclass(frozen=True)
class StorageConfig:
    node_id: str
    group_id: int
    data_dir: Path
    volume_path: Path
    listen_host: str
    listen_port: int
    advertise: str
    raft: str
    peers: tuple[Peer, ...]
    tracker: str
    secret: str
    log_level: str
    memory_budget_bytes: int
    peer_budget_bytes: int
    fetch_concurrency: int
    registration_bytes: int
    registration_ttl: float
    replica_timeout: float
    heartbeat_interval: float
    log_format: str = "text"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    max_chain: int = 10_000
    max_pending_reservations: int = 4096
    max_json_bytes: int = 65536
    limits: Limits = field(default_factory=Limits)
    edit_timeout: float = 10.0
    scrub_rate_mb: float = 8.0
    scrub_interval: float = 3600.0
    hot_cache_reads: int = 20
    hot_cache_bytes: int = 64 << 20
    inline_max: int = 4096

    @property
    def members(self) -> tuple[Peer, ...]:
        """Every member of the group, this node first."""
        return (Peer(self.node_id, self.raft, self.advertise), *self.peers)


def _hostport(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not is_uint_text(port) or not 0 < int(port) < 65536:
        raise ConfigError(f"config key {key}: {value!r} is not host:port")
    return host, int(port)


def _url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"config key {key}: {value!r} is not an http(s) URL")
    return value.rstrip("/")


def from_values(v: dict[str, Any]) -> StorageConfig:
    """Check the merged values and build the config; a bad key raises a one-line ConfigError."""
    node_id = v["node_id"]
    if not node_id or not all(c.isalnum() or c in "-_." for c in node_id) or len(node_id) > 64:
        raise ConfigError(f"config key node_id: {node_id!r} must be 1-64 of [A-Za-z0-9._-]")
    if not 1 <= v["group_id"] <= 0xFFFF_FFFE:
        raise ConfigError(f"config key group_id: {v['group_id']} out of range 1..4294967294")
    host, port = _hostport(v["listen"], "listen")
    tls_cert, tls_key, tls_ca = tls_paths(v)
    scheme = "http" if tls_cert is None else "https"
    advertise = _url(v["advertise"] or f"{scheme}://{host}:{port}", "advertise")
    _hostport(v["raft"], "raft")
    peers = []
    for item in v["peers"]:
        parts = [p.strip() for p in item.split(",")]
        if len(parts) != 3:
            raise ConfigError(f"config key peers: {item!r} is not 'node_id,raft_host:port,url'")
        _hostport(parts[1], "peers")
        peers.append(Peer(parts[0], parts[1], _url(parts[2], "peers")))
    ids = [node_id] + [p.node_id for p in peers]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"config key peers: node ids repeat: {ids}")
    raft_addrs = [v["raft"]] + [p.raft for p in peers]
    if len(set(raft_addrs)) != len(raft_addrs):
        raise ConfigError(f"config key peers: Raft addresses repeat: {raft_addrs}")
    if len(peers) != 2:
        raise ConfigError(
            f"config key peers: a group has 3 nodes, so give 2 peers, not {len(peers)}"
        )
    if tls_cert is not None and not advertise.startswith("https://"):
        raise ConfigError("config key advertise: must be an https:// URL when tls_cert is set")
    if len(v["secret"]) < 16:
        raise ConfigError("config key secret: must be at least 16 characters")
    level = v["log_level"].lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            f"config key log_level: {v['log_level']!r} is not debug/info/warning/error"
        )
    if v["log_format"] not in LOG_FORMATS:
        raise ConfigError(f"config key log_format: {v['log_format']!r} is not text or json")
    if v["tracker"]:
        _url(v["tracker"], "tracker")
    for key in ("registration_ttl", "replica_timeout", "heartbeat_interval", "edit_timeout"):
        if v[key] <= 0:
            raise ConfigError(f"config key {key}: must be > 0")
    if v["registration_mb"] < 0:
        raise ConfigError("config key registration_mb: must be >= 0")
    for key in ("memory_budget_mb", "peer_budget_mb", "fetch_concurrency"):
        if v[key] < 1:
            raise ConfigError(f"config key {key}: must be >= 1")
    if v["peer_budget_mb"] > v["memory_budget_mb"]:
        raise ConfigError("config key peer_budget_mb: must not exceed memory_budget_mb")
    for key, lo, hi in (
        ("max_chain", 1, 1_000_000),
        ("max_pending_reservations", 1, 10_000_000),
        ("max_json_bytes", 1024, 1 << 24),
        ("hot_cache_reads", 1, 1 << 30),
        ("hot_cache_mb", 0, 1 << 20),
        ("inline_max", 0, MAX_INLINE),
    ):
        if not lo <= v[key] <= hi:
            raise ConfigError(f"config key {key}: must be between {lo} and {hi}")
    if v["scrub_rate_mb"] < 0:
        raise ConfigError("config key scrub_rate_mb: must be >= 0 (0 disables the scrub)")
    if v["scrub_interval"] <= 0:
        raise ConfigError("config key scrub_interval: must be > 0")
    data_dir = v["data_dir"]
    return StorageConfig(
        node_id=node_id,
        group_id=v["group_id"],
        data_dir=data_dir,
        volume_path=v["volume_path"] or data_dir / "volume.dat",
        listen_host=host,
        listen_port=port,
        advertise=advertise,
        raft=v["raft"],
        peers=tuple(peers),
        tracker=v["tracker"].rstrip("/"),
        secret=v["secret"],
        log_level=level,
        memory_budget_bytes=v["memory_budget_mb"] * 1024 * 1024,
        peer_budget_bytes=v["peer_budget_mb"] * 1024 * 1024,
        fetch_concurrency=v["fetch_concurrency"],
        registration_bytes=v["registration_mb"] * 1024 * 1024,
        registration_ttl=v["registration_ttl"],
        replica_timeout=v["replica_timeout"],
        heartbeat_interval=v["heartbeat_interval"],
        log_format=v["log_format"],
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        max_chain=v["max_chain"],
        max_pending_reservations=v["max_pending_reservations"],
        max_json_bytes=v["max_json_bytes"],
        limits=limits_from_values(v),
        edit_timeout=v["edit_timeout"],
        scrub_rate_mb=v["scrub_rate_mb"],
        scrub_interval=v["scrub_interval"],
        hot_cache_reads=v["hot_cache_reads"],
        hot_cache_bytes=v["hot_cache_mb"] * 1024 * 1024,
        inline_max=v["inline_max"],
    )


def from_args(args: argparse.Namespace) -> StorageConfig:
    values = load(OPTIONS, args)
    values["secret"] = resolve_secret(values, args)
    return from_values(values)
