"""One managed child process of a local cluster, and the small helpers around it.

:class:`Process` is one server process: its command line, environment, log file and signals.
:class:`StorageProcess` builds the ``mydfs-storage`` command line of one node of a group,
:class:`TrackerProcess` the ``mydfs-tracker`` one. :mod:`mydfs.client.local_cluster` puts them
together into a cluster; the tests layer their faults (SIGSTOP, tmpfs, offline volume tools) on
top of the same classes.

The helpers: :func:`free_ports` and :func:`free_base` pick loopback ports below the kernel's
ephemeral range (so an outgoing connection cannot take a port while its process is down for a
restart), :func:`http_json` is a blocking JSON GET, :func:`wait_for` a poll with a deadline.
Nothing here needs more than the standard library and :mod:`mydfs.common`.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGCONT, SIGINT, SIGKILL, SIGSTOP, SIGTERM
from typing import Any, TypeVar

from mydfs.common.errors import Timeout, Unavailable
from mydfs.common.secretfile import SECRET_ENV

T = TypeVar("T")

#: Lowest port of the range :func:`free_ports` and :func:`free_base` pick from.
LOWEST_PORT = 20000
#: Proxies never apply to the loopback servers of a local cluster.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- ports, HTTP, waits --------------------------------------------------------------------------


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now, below the ephemeral range,
    checked by binding them all at once."""
    low, high = LOWEST_PORT, ephemeral_low() - 1
    rng = random.Random()
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        attempts = 0
        while len(ports) < count:
            attempts += 1
            if attempts > 50 * count:
                raise Unavailable(f"could not find {count} free loopback ports")
            port = rng.randint(low, high) if high - low > 1000 else 0
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            if s.getsockname()[1] in ports:
                s.close()
                continue
            socks.append(s)
            ports.append(s.getsockname()[1])
        return ports
    finally:
        for s in socks:
            s.close()


def free_base(groups: int) -> int:
    """A port base B for a local cluster of ``groups`` groups: B .. B + 10 * (groups + 1) all
    free, below the ephemeral range."""
    span = 10 * (groups + 1)
    low, high = LOWEST_PORT, ephemeral_low() - span - 1
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high) if high > low + 1000 else rng.randrange(40000, 60000)
        if all(_bindable(p) for p in range(base, base + span)):
            return base
    raise Unavailable("could not find a free range of loopback ports")


def _opener(ca: Path | None) -> urllib.request.OpenerDirector:
    if ca is None:
        return _OPENER
    context = ssl.create_default_context(cafile=os.fspath(ca))
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )


def http_json(
    url: str,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
    ca: Path | None = None,
) -> tuple[int, Any]:
    """A blocking GET (redirects followed): (status, parsed JSON or None). ``ca``: the PEM
    bundle trusted for an https:// URL (a TLS cluster's own CA).

    Raises :class:`OSError` when the server cannot be reached or breaks off its answer."""
    req = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - loopback
    try:
        with _opener(ca).open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except http.client.HTTPException as exc:
        raise ConnectionError(f"GET {url}: {exc!r}") from exc
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


class Deadline:
    """The moment a wait for ``what`` gives up, ``timeout`` seconds from now."""

    def __init__(self, timeout: float, what: str) -> None:
        self.timeout = timeout
        self.what = what
        self.end = time.monotonic() + timeout

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def check(self) -> None:
        """Raise :class:`~mydfs.common.errors.Timeout` once the deadline has passed."""
        if time.monotonic() >= self.end:
            raise Timeout(f"timed out after {self.timeout:.0f}s waiting for {self.what}")


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; raise
    :class:`~mydfs.common.errors.Timeout` naming ``what`` at the deadline."""
    deadline = Deadline(timeout, what)
    while not (value := predicate()):
        deadline.check()
        time.sleep(interval)
    return value


def entry_point(name: str) -> str:
    """The path of the console script ``name`` (``mydfs-storage``...) of this environment."""
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        raise Unavailable(f"{name} is not installed in this environment")
    return found


# --- processes -----------------------------------------------------------------------------------


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)  # logs name files and paths: owner-only


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, SIGKILL)  # PR_SET_PDEATHSIG


@dataclass(eq=False)
class Process:
    """One server process: command line, environment, log file, signals.

    With ``die_with_parent`` a process started from the main thread gets
    ``PR_SET_PDEATHSIG`` = SIGKILL, so even a hard-killed parent leaves it not behind.
    ``host`` is the address it listens on and is reached at; ``wrap`` is put in front of its
    command line (e.g. ``["ip", "netns", "exec", "NS"]``; it must exec the command, so the
    pid and the signals stay the server's)."""

    name: str
    http_port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    group_id: int = 0
    die_with_parent: bool = False
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    host: str = "127.0.0.1"
    wrap: list[str] = field(default_factory=list)
    #: With TLS: the ``https`` scheme and the CA the cluster's certificates chain to.
    scheme: str = "http"
    ca: Path | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.http_port}"

    @property
    def node_id(self) -> str:
        return self.name

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def alive(self) -> bool:
        return self.running

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def command(self) -> list[str]:
        raise NotImplementedError

    def private_env(self) -> dict[str, str]:
        """Environment for the child that is never logged (the cluster secret)."""
        return {}

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Start the process (no waiting). ``env`` adds to this start's environment; a
        ``MYDFS_FAULTS`` or ``MYDFS_TOKEN`` of the parent's environment is not passed on."""
        if self.running:
            raise Unavailable(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        run_env = dict(os.environ, PYTHONUNBUFFERED="1")
        run_env.pop("MYDFS_FAULTS", None)
        run_env.pop("MYDFS_TOKEN", None)  # a client's API key: no server needs it
        run_env.update(self.env)
        run_env.update(env or {})
        self.starts += 1
        extra = {
            k: "***" if "TOKEN" in k or "SECRET" in k else v  # never a secret in a log
            for k, v in run_env.items()
            if k.startswith("MYDFS_") and k != SECRET_ENV
        }
        run_env.update(self.private_env())
        with open(self.log_path, "ab", opener=_private_opener) as log:
            log.write(f"=== start #{self.starts} of {self.name} {extra} ===\n".encode())
            log.flush()
            main = threading.current_thread() is threading.main_thread()
            self.proc = subprocess.Popen(
                [*self.wrap, *self.command()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=run_env,
                preexec_fn=_die_with_parent if self.die_with_parent and main else None,
            )
        self.paused = False

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self, sig: int = SIGKILL, timeout: float = 30.0) -> int | None:
        """Send ``sig`` (default SIGKILL). For a signal that ends the process (SIGKILL,
        SIGTERM, SIGINT) wait until it exits, SIGKILL it after ``timeout``, and return the
        exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self.paused and sig != SIGKILL:
                self.proc.send_signal(SIGCONT)
            self.proc.send_signal(sig)
        if sig not in (SIGKILL, SIGTERM, SIGINT):
            return None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.paused = False
        return self.proc.returncode

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a clean shutdown) and reap; SIGKILL if it does not exit in ``timeout``."""
        return self.kill(SIGTERM, timeout)

    def pause(self) -> None:
        """SIGSTOP: the process freezes; new TCP connects still succeed, requests hang."""
        if not self.running:
            raise Unavailable(f"{self.name} is not running")
        self.signal(SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        self.signal(SIGCONT)
        self.paused = False

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def get_json(self, path: str, timeout: float = 1.0) -> tuple[int, Any] | None:
        """(status, JSON body or None) of ``GET path`` on the process; None when it is down,
        paused or does not answer in time."""
        if not self.running or self.paused:
            return None
        try:
            return http_json(self.url + path, timeout=timeout, ca=self.ca)
        except OSError:
            return None

    def health(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The process's ``GET /health`` answer, or None when it does not answer."""
        _, body = self.get_json("/health", timeout) or (0, None)
        return body if isinstance(body, dict) else None


@dataclass(eq=False)
class StorageProcess(Process):
    """One ``mydfs-storage`` node of a group; its peers are the other members' processes."""

    index: int = 0
    raft_port: int = 0
    data_dir: Path = Path()
    volume_path: Path | None = None
    secret: str = ""
    tracker_url: str | None = None
    peers: list[StorageProcess] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)

    @property
    def raft_address(self) -> str:
        return f"{self.host}:{self.raft_port}"

    @property
    def volume_file(self) -> Path:
        return self.volume_path or self.data_dir / "volume.dat"

    def command(self) -> list[str]:
        args = [
            entry_point("mydfs-storage"),
            "--node-id", self.node_id,
            "--group-id", str(self.group_id),
            "--data-dir", str(self.data_dir),
            "--listen", f"{self.host}:{self.http_port}",
            "--raft", self.raft_address,
        ]  # fmt: skip
        if self.volume_path is not None:
            args += ["--volume-path", str(self.volume_path)]
        for peer in self.peers:
            args += ["--peers", f"{peer.node_id},{peer.raft_address},{peer.url}"]
        if self.tracker_url is not None:
            args += ["--tracker", self.tracker_url]
        return args + list(self.extra_args)

    def private_env(self) -> dict[str, str]:
        return {SECRET_ENV: self.secret} if self.secret else {}

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("up" if self.running else "down")
        return f"<{self.node_id} {self.url} {state}>"


@dataclass(eq=False)
class TrackerProcess(Process):
    """One ``mydfs-tracker``; ``options`` become flags (``heartbeat_timeout`` →
    ``--heartbeat-timeout``)."""

    data_dir: Path = Path()
    secret: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def command(self) -> list[str]:
        args = [
            entry_point("mydfs-tracker"),
            "--listen", f"{self.host}:{self.http_port}",
            "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        for key, value in self.options.items():
            args += ["--" + key.replace("_", "-"), str(value)]
        return args

    def private_env(self) -> dict[str, str]:
        return {SECRET_ENV: self.secret} if self.secret else {}
