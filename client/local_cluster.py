"""Start and stop a mydfs cluster of real processes on loopback (the embedded default).

Used by ``mydfs cluster up``, the benchmarks, the end-to-end and the integration tests. A
cluster is a tracker and N groups of three ``mydfs-storage`` processes
(:mod:`mydfs.client.process`), each with its own data folder under the cluster's folder. The
layout (ports, secret, TLS folder) is saved in ``cluster.json`` (0600) there, so starting
again on the same folder brings back the same cluster with every file.

Ports, from a base B: the tracker listens on B; node i (1..3) of group g listens for HTTP on
B + 10g + i and for Raft on B + 10g + 3 + i.

The tracker makes an admin API key the first time it starts (``tracker/admin.token``); once the
tracker answers, the cluster keeps that token as :attr:`LocalCluster.token` and saves it in the
user's credentials file (:mod:`mydfs.client.credentials`) for its URL, also as the default
tracker, so the SDK and the CLI find it with no flag.

A node counts as up only once it answers a call signed with the cluster's secret under its own
node id, so a stranger on a reused port is never taken for it; a group's leader is the one node
that says it leads with a quorum and is ready, named by every other node that answers.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mydfs.client import credentials
from mydfs.client.process import (
    Process,
    StorageProcess,
    TrackerProcess,
    free_base,
    http_json,
    wait_for,
)
from mydfs.client.tlsgen import TlsFiles
from mydfs.client.tlsgen import ensure as tls_ensure
from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.errors import InvalidArgument, Unavailable
from mydfs.common.fsio import atomic_write

LAYOUT_FILE = "cluster.json"
#: A signed call that names the node answering it (``{"node": ...}``).
_IDENTITY_PATH = "/internal/holds/0?gen=1"


class LocalCluster:
    """A tracker and ``groups`` storage groups of 3 nodes on loopback, under ``root``.

    ``storage_args`` go to every storage node, ``env`` to every process; ``log_dir`` (default
    ``root``) holds one ``NAME.log`` per process; with ``die_with_parent`` every process is
    SIGKILLed by the kernel when the process that started it dies. With ``tls_dir`` every
    process serves HTTPS with that folder's certificate (:mod:`mydfs.client.tlsgen` makes a
    throwaway CA there if it has none) and trusts its CA; ``ca`` is then the file clients pass
    as ``ca=`` / ``--ca``. The secret reaches the processes in their environment, never on a
    command line. ``trash_retention`` is the tracker's (seconds a removed file stays
    undeletable; short by default so tests see space freed soon; ``mydfs cluster up`` uses 60 s);
    ``tracker_options`` (config keys) go to the tracker, over :data:`LOCAL_TRACKER_OPTIONS` (a
    short orphan collector's grace, ``docs/collector.md``), e.g. ``{"reclaim_rate": 2}``."""

    def __init__(
        self,
        root: Path,
        *,
        groups: int = 2,
        base_port: int | None = None,
        secret: str | None = None,
        tracker: bool = True,
        storage_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        die_with_parent: bool = False,
        tls_dir: Path | None = None,
        trash_retention: float = 1.0,
        tracker_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)  # the layout holds the secret; each node's data is inside
        layout_path = self.root / LAYOUT_FILE
        layout: dict[str, Any] = {}
        if layout_path.exists():
            layout = json.loads(layout_path.read_text())
        self.groups = max(groups, int(layout.get("groups", 0)))  # never forget a group's data
        self.base_port: int = base_port or layout.get("base_port") or free_base(self.groups)
        self.secret: str = secret or layout.get("secret") or secrets.token_hex(16)
        if not 1024 <= self.base_port <= 65000 - 10 * (self.groups + 1):
            raise InvalidArgument(
                f"base port {self.base_port} leaves no room for the cluster", port=self.base_port
            )
        tls_dir = tls_dir or layout.get("tls_dir")  # a TLS cluster stays one on restart
        saved = {"base_port": self.base_port, "secret": self.secret, "groups": self.groups}
        if tls_dir:
            saved["tls_dir"] = os.fspath(tls_dir)
        atomic_write(layout_path, json.dumps(saved).encode(), mode=0o600)  # never world-readable
        self.log_dir = log_dir or self.root
        self._env = dict(env or {})
        # TLS (optional): every process serves HTTPS with tls_dir's certificate and trusts its
        # CA for outgoing calls; ``self.ca`` is what clients pass as ``ca=`` / ``--ca``.
        self.tls: TlsFiles | None = None if tls_dir is None else tls_ensure(Path(tls_dir))
        self.ca: Path | None = None if self.tls is None else self.tls.ca
        self.scheme = "http" if self.tls is None else "https"
        tls_args: list[str] = []
        if self.tls is not None:
            tls_args = ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
            tls_args += ["--tls-ca", str(self.tls.ca)]
            storage_args = [*storage_args, *tls_args]
        self._die_with_parent = die_with_parent
        self.tracker_process: TrackerProcess | None = None
        #: The tracker's admin API key, once the tracker has answered (None without a tracker).
        self.token: str | None = None
        if tracker:
            self.tracker_process = TrackerProcess(
                name="tracker",
                http_port=self.base_port,
                log_path=self.log_dir / "tracker.log",
                env=dict(self._env),
                die_with_parent=die_with_parent,
                data_dir=self.root / "tracker",
                secret=self.secret,
                options={
                    **LOCAL_TRACKER_OPTIONS,
                    "trash_retention": trash_retention,
                    **(tracker_options or {}),
                    **_flags_to_options(tls_args),
                },
                scheme=self.scheme,
                ca=self.ca,
            )
        self._nodes: list[StorageProcess] = []
        for g in range(1, self.groups + 1):
            self._nodes += self._group(g, list(storage_args))

    @property
    def tracker_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.base_port}"

    @property
    def credentials_path(self) -> Path:
        """The credentials file the admin key is saved in."""
        return credentials.path()

    def auth_headers(self) -> dict[str, str]:
        """``Authorization: Bearer <admin token>`` for raw calls to the tracker."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def load_token(self) -> str | None:
        """Read the tracker's admin key (``tracker/admin.token``, else the credentials file's
        for this tracker), keep it as :attr:`token` and save it in the credentials file."""
        if self.tracker_process is None:
            return None
        try:
            token: str | None = (self.tracker_process.data_dir / "admin.token").read_text().strip()
        except OSError:
            token = credentials.lookup(self.tracker_url).get("token")
        if token:
            self.token = token
            ca = None if self.ca is None else os.fspath(self.ca)
            credentials.save(self.tracker_url, token=token, ca=ca, make_default=True)
        return self.token

    def _group(self, g: int, storage_args: list[str]) -> list[StorageProcess]:
        members = []
        for i in (1, 2, 3):
            node_id = f"g{g}n{i}"
            members.append(
                StorageProcess(
                    name=node_id,
                    http_port=self.base_port + 10 * g + i,
                    log_path=self.log_dir / f"{node_id}.log",
                    env=dict(self._env),
                    group_id=g,
                    die_with_parent=self._die_with_parent,
                    index=i,
                    raft_port=self.base_port + 10 * g + 3 + i,
                    data_dir=self.root / node_id,
                    secret=self.secret,
                    tracker_url=self.tracker_url if self.tracker_process else None,
                    extra_args=["--edit-timeout", "3", *storage_args],
                    scheme=self.scheme,
                    ca=self.ca,
                )
            )
        for node in members:
            node.peers = [p for p in members if p is not node]
        return members

    # -- lookup ------------------------------------------------------------------------------------

    def nodes(self, group_id: int | None = None) -> list[StorageProcess]:
        """The storage nodes (of one group)."""
        return [n for n in self._nodes if group_id is None or n.group_id == group_id]

    def group(self, group_id: int) -> list[StorageProcess]:
        return self.nodes(group_id)

    def node(self, node_id: str) -> StorageProcess:
        return next(n for n in self._nodes if n.node_id == node_id)

    def by_url(self, url: str) -> StorageProcess:
        return next(n for n in self._nodes if n.url == url.rstrip("/"))

    def others(self, node: StorageProcess) -> list[StorageProcess]:
        return [n for n in self.nodes(node.group_id) if n is not node]

    def processes(self) -> list[Process]:
        """The tracker (if any), then every storage node."""
        return [*([self.tracker_process] if self.tracker_process else []), *self._nodes]

    # -- life cycle -------------------------------------------------------------------------------

    def start(
        self,
        nodes: Iterable[Process] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        wait_leader: bool = True,
    ) -> None:
        """Start ``nodes`` (default: every process not running), wait until each answers as
        itself, then (with ``wait_leader``) until their groups have a leader and the tracker
        sees every group writable."""
        chosen = [p for p in (self.processes() if nodes is None else nodes) if not p.running]
        for proc in chosen:
            proc.start(env)
        deadline = time.monotonic() + timeout
        problem = self.wait_answering(chosen, deadline - time.monotonic())
        if problem is not None:
            raise Unavailable(problem)
        if self.tracker_process is not None and self.tracker_process.running:
            self.load_token()
        if wait_leader:
            self.wait_ready(chosen, deadline)

    def wait_ready(self, started: Iterable[Process], deadline: float) -> None:
        """Wait until the groups of ``started`` have a leader and, if the tracker is among
        them or runs, until it sees every group writable."""
        started = list(started)
        for gid in sorted({p.group_id for p in started if isinstance(p, StorageProcess)}):
            self.wait_leader(gid, timeout=max(1.0, deadline - time.monotonic()))
        if self.tracker_process is not None and self.tracker_process.running:
            self.wait_tracker(timeout=max(1.0, deadline - time.monotonic()))

    def wait_answering(
        self, procs: Sequence[Process], timeout: float, grace: float | None = None
    ) -> str | None:
        """None once every process of ``procs`` answers as itself; else what went wrong (one
        exited, or not all answered within ``grace``, default ``timeout``)."""
        limit = min(timeout, timeout if grace is None else grace)
        end = time.monotonic() + limit
        waiting = list(procs)
        while waiting:
            for proc in list(waiting):
                if not proc.running:
                    return (
                        f"{proc.name} exited with code {proc.returncode} during start-up:\n"
                        + proc.log_tail(30)
                    )
                if self.identity_ok(proc):
                    waiting.remove(proc)
            if waiting and time.monotonic() >= end:
                names = ", ".join(p.name for p in waiting)
                return f"{names} did not answer within {limit:.0f}s"
            if waiting:
                time.sleep(0.05)
        return None

    def identity_ok(self, proc: Process) -> bool:
        """Does ``proc``'s port answer as that process of this cluster? A storage node must
        answer a signed call (only this cluster's secret passes it) naming itself; the tracker
        must answer ``/health``."""
        if not proc.running or proc.paused:
            return False
        if not isinstance(proc, StorageProcess):
            return proc.health() is not None
        headers = {AUTH_HEADER: sign(self.secret, "GET", _IDENTITY_PATH)}
        try:
            status, body = http_json(
                proc.url + _IDENTITY_PATH, timeout=1.0, headers=headers, ca=self.ca
            )
        except OSError:
            return False
        return status == 200 and isinstance(body, dict) and body.get("node") == proc.node_id

    def wait_tracker(self, timeout: float = 30.0) -> None:
        """Wait until the tracker sees every group writable."""
        if self.token is None:
            self.load_token()

        def all_writable() -> bool:
            try:
                status, cluster = http_json(
                    self.tracker_url + "/cluster",
                    timeout=2.0,
                    headers=self.auth_headers(),
                    ca=self.ca,
                )
            except OSError:
                return False
            if status != 200 or not isinstance(cluster, dict):
                return False
            writable = {int(g["group_id"]) for g in cluster.get("groups", []) if g.get("writable")}
            return writable >= set(range(1, self.groups + 1))

        wait_for(
            all_writable, timeout=timeout, what=f"the tracker to see {self.groups} groups writable"
        )

    def stop(self) -> dict[str, int | None]:
        """Stop every process cleanly (SIGTERM, storage nodes first); name → exit code."""
        return {p.name: p.terminate() for p in reversed(self.processes()) if p.proc is not None}

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- status and leadership -----------------------------------------------------------------

    def node_status(self, node: Process, timeout: float = 1.5) -> dict[str, Any] | None:
        """``GET /status`` of ``node``; None if it is down, paused or does not answer in time."""
        status, body = node.get_json("/status", timeout) or (0, None)
        return body if status == 200 and isinstance(body, dict) else None

    def leader_now(self, group_id: int) -> StorageProcess | None:
        """The group's leader if one is established right now: exactly one running node says
        it leads with a quorum and is ready, and every other answering node names it."""
        members = [n for n in self.nodes(group_id) if n.running and not n.paused]
        answers = {n: self.node_status(n) for n in members}
        leaders = [
            n
            for n, st in answers.items()
            if st is not None
            and st.get("role") == "leader"
            and (st.get("raft") or {}).get("has_quorum")
            and (st.get("raft") or {}).get("ready")
        ]
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        agree = 0
        for n, st in answers.items():
            if st is None or n is leader:
                continue
            if st.get("leader") != leader.url:
                return None
            agree += 1
        return leader if agree >= 1 else None

    def wait_leader(self, group_id: int, timeout: float = 30.0) -> StorageProcess:
        """Wait (bounded) for the group's established leader and return it."""
        return wait_for(
            lambda: self.leader_now(group_id),
            timeout=timeout,
            what=f"a leader of group {group_id}",
            interval=0.1,
        )


#: A local cluster's collector (docs/collector.md): an interrupted upload's orphans are freed
#: within about a minute of its last slice, not an hour, and an edited file's 301s are
#: compacted about 30 s after its last change (docs/space.md; ``tracker_options`` override
#: these).
LOCAL_TRACKER_OPTIONS: dict[str, Any] = {
    "orphan_grace": 30,
    "intent_ttl": 30,
    "collect_interval": 5,
    "compact_file_redirects": 1,
    "compact_idle": 30,
}


def _flags_to_options(args: Sequence[str]) -> dict[str, Any]:
    """``["--tls-cert", "x"]`` -> ``{"tls_cert": "x"}`` (TrackerProcess.options)."""
    return {args[i][2:].replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)}
