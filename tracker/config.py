"""The configuration of ``mydfs-tracker``: keys, defaults, and their checks."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mydfs.common.config import REQUIRED, ConfigError, Option, load
from mydfs.common.errors import InvalidArgument
from mydfs.common.limits import LIMIT_OPTIONS, Limits, limits_from_values
from mydfs.common.params import is_uint_text
from mydfs.common.paths import check_dir_path
from mydfs.common.secretfile import SECRET_OPTIONS, resolve_secret
from mydfs.common.tls import TLS_OPTIONS, tls_paths
from mydfs.common.tracing import LOG_FORMATS
from mydfs.tracker.scheduler import MAX_SLICES

OPTIONS: tuple[Option, ...] = (
    Option("listen", "str", "127.0.0.1:8100", "HTTP listen address host:port"),
    Option(
        "advertise",
        "str",
        "",
        "HTTP base URL that storage nodes and clients use (default: http://<listen>)",
    ),
    Option(
        "data_dir",
        "path",
        REQUIRED,
        "folder for the edit log and the checkpoints (one tracker per folder)",
        "data/tracker",
    ),
    Option(
        "heartbeat_timeout",
        "float",
        3.0,
        "seconds without a heartbeat after which a storage node is marked down",
    ),
    Option(
        "max_consecutive",
        "int",
        3,
        "K: at most this many consecutive slices of a file go to one group",
    ),
    Option(
        "checkpoint_interval",
        "float",
        60.0,
        "seconds between checkpoints of the file table (if anything changed)",
    ),
    Option(
        "checkpoint_edits",
        "int",
        100_000,
        "edits after which a checkpoint is taken early (bounds replay at start-up)",
    ),
    Option(
        "public_prefixes",
        "list",
        [],
        "folders anyone may read without a key (GET /files, /meta/files, /meta/list under them)",
        ["/public"],
    ),
    Option(
        "grant_ttl",
        "float",
        3600.0,
        "seconds a read or write grant the tracker hands out stays valid (storage nodes check it)",
    ),
    Option(
        "reclaim_rate",
        "float",
        200.0,
        "at most this many slices per second are deleted for removed and replaced files",
    ),
    Option(
        "reclaim_interval",
        "float",
        1.0,
        "seconds between passes of the reclaimer over the trash (and after a failed pass)",
    ),
    Option(
        "trash_retention",
        "float",
        86_400.0,
        "seconds a removed or replaced file stays in the trash (undelete works) before the "
        "reclaimer frees its slices; mydfs trash purge / rm --now free at once",
    ),
    Option(
        "orphan_grace",
        "float",
        3600.0,
        "seconds a slice must have been reserved before the collector may free it as an orphan "
        "(docs/collector.md)",
    ),
    Option(
        "intent_ttl",
        "float",
        3600.0,
        "seconds an upload's intent protects its slices after it was made and after the "
        "upload's last slice; then the collector forgets it",
    ),
    Option("collect_rate", "float", 50.0, "at most this many orphan slices freed per second"),
    Option("collect_interval", "float", 60.0, "seconds between passes of the orphan collector"),
    Option(
        "compact_file_redirects",
        "int",
        4,
        "compact a file's chain once it has this many 301 redirects (docs/space.md)",
    ),
    Option(
        "compact_group_redirects",
        "int",
        1024,
        "... or once one of its 301s is in a group holding this many 301 slots",
    ),
    Option(
        "compact_idle",
        "float",
        300.0,
        "seconds a file must have been left unchanged before it is compacted",
    ),
    Option("compact_rate", "float", 20.0, "at most this many files compacted per second"),
    Option(
        "edit_decision_retention",
        "float",
        3600.0,
        "seconds the tracker remembers the decision of an in-place edit (and decision tokens "
        "stay valid); a participant asking about an older prepare gets 'unknown'",
    ),
    *SECRET_OPTIONS,
    *TLS_OPTIONS,
    Option("log_level", "str", "info", "debug, info, warning or error"),
    Option("log_format", "str", "text", "log lines as text or json (one object a line)"),
    Option("max_body_bytes", "int", 1 << 20, "largest request body (JSON), bytes; larger is 413"),
    Option(
        "max_placement_slices",
        "int",
        262_144,
        "most slices one POST /placements may ask for (262144 = a 1 TiB file)",
    ),
    *LIMIT_OPTIONS,
)


@dataclass(frozen=True)
class TrackerConfig:
    listen_host: str
    listen_port: int
    advertise: str
    data_dir: Path
    secret: str
    heartbeat_timeout: float
    max_consecutive: int
    checkpoint_interval: float
    checkpoint_edits: int
    log_level: str
    log_format: str = "text"
    public_prefixes: tuple[str, ...] = ()
    grant_ttl: float = 3600.0
    reclaim_rate: float = 200.0
    reclaim_interval: float = 1.0
    edit_decision_retention: float = 3600.0
    trash_retention: float = 86_400.0
    orphan_grace: float = 3600.0
    intent_ttl: float = 3600.0
    collect_rate: float = 50.0
    collect_interval: float = 60.0
    compact_file_redirects: int = 4
    compact_group_redirects: int = 1024
    compact_idle: float = 300.0
    compact_rate: float = 20.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    max_body_bytes: int = 1 << 20
    max_placement_slices: int = 262_144
    limits: Limits = field(default_factory=Limits)

    @property
    def heartbeat_interval(self) -> float:
        """The interval suggested to storage nodes: a third of the timeout."""
        return round(self.heartbeat_timeout / 3, 3)


def _hostport(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not is_uint_text(port) or not 0 < int(port) < 65536:
        raise ConfigError(f"config key {key}: {value!r} is not host:port")
    return host, int(port)


def from_values(v: dict[str, Any]) -> TrackerConfig:
    """Check the merged values and build the config; a bad key raises a one-line ConfigError."""
    host, port = _hostport(v["listen"], "listen")
    tls_cert, tls_key, tls_ca = tls_paths(v)
    scheme = "http" if tls_cert is None else "https"
    advertise = v["advertise"] or f"{scheme}://{host}:{port}"
    parts = urlsplit(advertise)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"config key advertise: {advertise!r} is not an http(s) URL")
    if tls_cert is not None and not advertise.startswith("https://"):
        raise ConfigError("config key advertise: must be an https:// URL when tls_cert is set")
    if len(v["secret"]) < 16:
        raise ConfigError("config key secret: must be at least 16 characters")
    if not 0.05 <= v["heartbeat_timeout"] <= 3600:
        raise ConfigError("config key heartbeat_timeout: must be between 0.05 and 3600 seconds")
    if not 1 <= v["max_consecutive"] <= 1_000_000:
        raise ConfigError("config key max_consecutive: must be between 1 and 1000000")
    if not v["checkpoint_interval"] > 0:
        raise ConfigError("config key checkpoint_interval: must be > 0")
    if v["checkpoint_edits"] < 1:
        raise ConfigError("config key checkpoint_edits: must be >= 1")
    if not 1 <= v["grant_ttl"] <= 7 * 86400:
        raise ConfigError("config key grant_ttl: must be between 1 and 604800 seconds")
    if not 0.1 <= v["reclaim_rate"] <= 1_000_000:
        raise ConfigError("config key reclaim_rate: must be between 0.1 and 1000000 slices/s")
    if not 0.01 <= v["reclaim_interval"] <= 3600:
        raise ConfigError("config key reclaim_interval: must be between 0.01 and 3600 seconds")
    if not 1 <= v["edit_decision_retention"] <= 7 * 86400:
        raise ConfigError(
            "config key edit_decision_retention: must be between 1 and 604800 seconds"
        )
    if not 0 < v["trash_retention"] < float("inf"):
        raise ConfigError(
            f"config key trash_retention: must be a number of seconds > 0, got "
            f"{v['trash_retention']!r} (to free removed files at once use 'mydfs rm --now' "
            "or 'mydfs trash purge')"
        )
    for key, lo, hi in (
        ("orphan_grace", 1.0, 30 * 86400),
        ("intent_ttl", 1.0, 30 * 86400),
        ("collect_rate", 0.1, 1_000_000),
        ("collect_interval", 0.1, 86400),
        ("compact_file_redirects", 1, 1_000_000),
        ("compact_group_redirects", 1, 1 << 30),
        ("compact_idle", 0.0, 30 * 86400),
        ("compact_rate", 0.1, 1_000_000),
    ):
        if not lo <= v[key] <= hi:
            raise ConfigError(f"config key {key}: must be between {lo:g} and {hi:g}")
    level = v["log_level"].lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            f"config key log_level: {v['log_level']!r} is not debug/info/warning/error"
        )
    if v["log_format"] not in LOG_FORMATS:
        raise ConfigError(f"config key log_format: {v['log_format']!r} is not text or json")
    data_dir = v["data_dir"]
    if not str(data_dir):
        raise ConfigError("config key data_dir: must not be empty")
    prefixes = []
    for prefix in v.get("public_prefixes") or []:
        try:
            check_dir_path(prefix)
        except InvalidArgument as exc:
            raise ConfigError(f"config key public_prefixes: {exc}") from None
        prefixes.append(prefix)
    if not 1024 <= v["max_body_bytes"] <= 1 << 30:
        raise ConfigError("config key max_body_bytes: must be between 1024 and 1073741824")
    if not 1 <= v["max_placement_slices"] <= MAX_SLICES:
        raise ConfigError(f"config key max_placement_slices: must be between 1 and {MAX_SLICES}")
    return TrackerConfig(
        listen_host=host,
        listen_port=port,
        advertise=advertise.rstrip("/"),
        data_dir=Path(data_dir),
        secret=v["secret"],
        heartbeat_timeout=v["heartbeat_timeout"],
        max_consecutive=v["max_consecutive"],
        checkpoint_interval=v["checkpoint_interval"],
        checkpoint_edits=v["checkpoint_edits"],
        log_level=level,
        log_format=v["log_format"],
        public_prefixes=tuple(prefixes),
        grant_ttl=v["grant_ttl"],
        reclaim_rate=v["reclaim_rate"],
        reclaim_interval=v["reclaim_interval"],
        edit_decision_retention=v["edit_decision_retention"],
        trash_retention=v["trash_retention"],
        orphan_grace=v["orphan_grace"],
        intent_ttl=v["intent_ttl"],
        collect_rate=v["collect_rate"],
        collect_interval=v["collect_interval"],
        compact_file_redirects=v["compact_file_redirects"],
        compact_group_redirects=v["compact_group_redirects"],
        compact_idle=v["compact_idle"],
        compact_rate=v["compact_rate"],
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        max_body_bytes=v["max_body_bytes"],
        max_placement_slices=v["max_placement_slices"],
        limits=limits_from_values(v),
    )


def from_args(args: argparse.Namespace) -> TrackerConfig:
    values = load(OPTIONS, args)
    values["secret"] = resolve_secret(values, args)
    return from_values(values)
