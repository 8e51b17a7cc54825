"""A private test network: one network namespace per process, joined by a bridge.

:class:`TestNet` creates a hub namespace holding a bridge and one namespace per host, each with
an ``eth0`` on 10.77.0.x/24 (see ``shared/notes/sandbox-abilities.md``). While it exists, the
root namespace carries the guard route ``unreachable 10.77.0.0/16``, so a stray connection
from the root namespace to a test address fails at once instead of leaving the machine.
:meth:`TestNet.destroy` kills every process still inside the namespaces (``ip netns pids``),
deletes them and removes the guard; it is idempotent and runs on failure too.

Nothing here touches anything but the namespaces it made itself (names carry a per-run
prefix) and the guard route. Processes are started inside with :meth:`TestNet.wrap`
(``ip netns exec NS``, which execs the command, so its pid is the server's); the test itself
talks to the hosts from a thread that entered the client namespace (:class:`NetnsExecutor`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

SUBNET = "10.77.0.0/16"
#: Namespace names start with this and the pid of the process that made them.
PREFIX = "nm"
GUARD = ["unreachable", SUBNET]
_CLONE_NEWNET = 0x40000000


def run(*args: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run one command (``ip``, ``iptables`` ...), bounded; raise with its stderr on failure."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def unavailable_reason() -> str | None:
    """None when this machine can run the network tests, else why not (for a skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y iproute2 iptables)"
    probe = f"nmprobe{os.getpid()}"
    try:
        made = run("ip", "netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"ip netns add failed: {made.stderr.strip()}"
        rules = run("ip", "netns", "exec", probe, "iptables", "-S", "INPUT", check=False)
        if rules.returncode != 0:
            return f"iptables does not work inside a namespace: {rules.stderr.strip()}"
    finally:
        run("ip", "netns", "del", probe, check=False)
    return None


def kill_inside(ns: str) -> None:
    """SIGCONT + SIGKILL every process in namespace ``ns``."""
    for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGCONT)
            os.kill(int(pid), signal.SIGKILL)


def sweep_leftovers() -> int:
    """Delete the namespaces of test nets whose maker is dead (a run killed hard); the number
    of live runs' nets left alone."""
    live = set()
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        owner = name[len(PREFIX) :].split("-", 1)[0]
        if not (name.startswith(PREFIX) and "-" in name and owner.isdigit()):
            continue
        try:
            os.kill(int(owner), 0)
            live.add(owner)
        except ProcessLookupError:
            kill_inside(name)
            run("ip", "netns", "del", name, check=False)
        except PermissionError:
            live.add(owner)
    return len(live)


class TestNet:
    """A hub bridge and one namespace per host; ``hosts`` maps a host name to its last octet."""

    __test__ = False  # not a pytest class

    def __init__(self, hosts: dict[str, int], prefix: str | None = None) -> None:
        self.prefix = prefix or f"{PREFIX}{os.getpid()}"
        self.hub = f"{self.prefix}-hub"
        self.hosts = dict(hosts)
        self.made: list[str] = []
        self.guard_added = False
        self.destroyed = False

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def ip(self, host: str) -> str:
        return f"10.77.0.{self.hosts[host]}"

    def wrap(self, host: str) -> list[str]:
        """The command prefix that runs a program inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host)]

    def create(self) -> None:
        """Make the guard route, the hub and every host; on failure undo what was made."""
        try:
            others = sweep_leftovers()
            if not run("ip", "route", "show", *GUARD[1:], check=False).stdout.strip():
                run("ip", "route", "add", *GUARD)
                self.guard_added = True
            elif not others:  # a leftover of a killed run: ours to remove at the end
                self.guard_added = True
            self._add_ns(self.hub)
            run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            run("ip", "-n", self.hub, "link", "set", "br0", "up")
            for i, host in enumerate(self.hosts, start=1):
                ns = self.ns(host)
                self._add_ns(ns)
                port = f"p{i}"
                run("ip", "link", "add", "eth0", "netns", ns, "type", "veth",
                    "peer", "name", port, "netns", self.hub)  # fmt: skip
                run("ip", "-n", self.hub, "link", "set", port, "master", "br0")
                run("ip", "-n", self.hub, "link", "set", port, "up")
                run("ip", "-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0")
                run("ip", "-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.destroy()
            raise

    def _add_ns(self, ns: str) -> None:
        run("ip", "netns", "del", ns, check=False)  # a leftover of a crashed run of this pid
        run("ip", "netns", "add", ns)
        self.made.append(ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")

    def iptables(self, host: str, *args: str) -> None:
        run("ip", "netns", "exec", self.ns(host), "iptables", "-w", "5", *args)

    def flush(self, host: str) -> None:
        """Remove every filter rule of ``host`` (heals partitions and loss)."""
        self.iptables(host, "-F", "INPUT")
        self.iptables(host, "-F", "OUTPUT")

    def destroy(self) -> list[str]:
        """Kill what runs inside, delete the namespaces, remove the guard; the problems met."""
        problems: list[str] = []
        for ns in reversed(self.made):
            kill_inside(ns)
            done = run("ip", "netns", "del", ns, check=False)
            if done.returncode != 0:
                problems.append(f"ip netns del {ns}: {done.stderr.strip()}")
        self.made.clear()
        if self.guard_added:
            done = run("ip", "route", "del", *GUARD, check=False)
            if done.returncode != 0:
                problems.append(f"ip route del {' '.join(GUARD)}: {done.stderr.strip()}")
            self.guard_added = False
        self.destroyed = True
        return problems


class NetnsExecutor:
    """Worker threads that entered a namespace: what they run connects from inside it.

    ``setns`` moves only the calling thread, so the test's own threads stay in the root
    namespace; each worker enters ``ns`` once, when it starts."""

    def __init__(self, ns: str, workers: int = 4) -> None:
        self.ns = ns
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            workers, thread_name_prefix=f"in-{ns}", initializer=self._enter
        )

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{self.ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                with self._lock:
                    self._error = OSError(err, f"setns into {self.ns}: {os.strerror(err)}")
        finally:
            os.close(fd)

    def call(self, fn: Callable[..., T], *args: object, timeout: float = 120.0) -> T:
        """Run ``fn(*args)`` inside the namespace and return its result."""
        future = self._pool.submit(self._guarded, fn, *args)
        return future.result(timeout=timeout)

    def _guarded(self, fn: Callable[..., T], *args: object) -> T:
        if self._error is not None:
            raise self._error
        return fn(*args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
