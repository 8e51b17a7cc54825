"""``RaftNode``: one replica of a storage group's Raft, driven from asyncio.

Threads: pysyncobj runs every Raft step, every ``apply`` and every completion callback on its
own *tick thread*. That thread exits when the thread that constructed the SyncObj exits
(note §1), so :meth:`RaftNode.start` must be awaited on the event loop of the main thread (the
aiohttp loop). Nothing here blocks the loop: a submit is a pickle + deque append, completions
come back through ``loop.call_soon_threadsafe``.

Reading the machine from the loop thread races with ``apply`` on the tick thread: use
:meth:`RaftNode.read` (runs a function on the tick thread) or only GIL-atomic operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from pysyncobj import FAIL_REASON

from mydfs.common.errors import (
    InvalidArgument,
    NoQuorum,
    NotLeader,
    OutcomeUnknown,
    Timeout,
    Unavailable,
)

from .bridge import error_for_fail_reason, fail_reason_name, unwrap_result
from .host import LEADER_STATE, ROLE_NAMES, RaftHost
from .machine import NOOP_PAYLOAD, StateMachine, encode_command
from .settings import RaftSettings
from .snapshot import SnapshotStore, read_snapshot_file

log = logging.getLogger(__name__)

M = TypeVar("M", bound=StateMachine)
T = TypeVar("T")

LeadershipHook = Callable[[], None]
FatalHook = Callable[[BaseException], None]

DEFAULT_TIMEOUT = 5.0


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _settle_error(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class RaftNode(Generic[M]):
    """One group member: submit commands, observe leadership, read state, shut down.

    ``on_become_leader`` / ``on_lose_leadership`` run on the event loop (plain callables; start
    or cancel tasks there). Leadership is not a lease: a deposed leader may believe it leads for
    up to ``leader_fallback_timeout``; only a committed command proves anything.
    ``on_fatal(exc)`` runs on the loop when the node had to stop (journal fsync failure, an
    unloadable snapshot, a crashing ``apply``): the process should log and exit.
    """

    def __init__(
        self,
        settings: RaftSettings,
        machine: M,
        *,
        on_become_leader: LeadershipHook | None = None,
        on_lose_leadership: LeadershipHook | None = None,
        on_fatal: FatalHook | None = None,
    ) -> None:
        settings.validate()
        if not isinstance(machine, StateMachine):
            raise InvalidArgument("machine must implement apply/snapshot/restore")
        self._settings = settings
        self._machine = machine
        self._on_become_leader = on_become_leader
        self._on_lose_leadership = on_lose_leadership
        self._on_fatal = on_fatal
        self._host: RaftHost | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._led: set[asyncio.Future[Any]] = set()  # submitted while this node led
        self._closed = False
        self._fatal: BaseException | None = None
        self._leading = False
        self._ready_event: asyncio.Event | None = None
        # loop-side metrics
        self._submitted = 0
        self._succeeded = 0
        self._errors: dict[str, int] = {}
        self._latency_sum = 0.0
        self._latency_count = 0

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the journal and snapshot, bind the Raft port and start the tick thread."""
        if self._host is not None or self._closed:
            raise InvalidArgument("a RaftNode can be started once")
        loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            log.warning(
                "RaftNode started outside the main thread: pysyncobj's tick thread stops "
                "when this thread exits"
            )
        settings = self._settings
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if settings.snapshot_file.exists():
            # Refuse a corrupt snapshot before pysyncobj would only log it (raises Corrupt).
            await loop.run_in_executor(None, read_snapshot_file, settings.snapshot_file)
        self._loop = loop
        self._ready_event = asyncio.Event()
        snapshots = SnapshotStore(settings.snapshot_file, self._machine, self._fatal_from_thread)
        # Constructed here, on the loop's thread (note §1): ~0.1 s for the password KDF and
        # the journal load, once at start-up.
        self._host = RaftHost(
            settings,
            self._machine,
            snapshots,
            on_state_changed=self._state_changed_from_thread,
            on_ready=self._ready_from_thread,
            on_fatal=self._fatal_from_thread,
        )

    async def close(self, *, timeout: float = 5.0) -> None:
        """Stop Raft (``destroy``), wait for the tick thread, fail in-flight submits."""
        if self._closed:
            return
        self._closed = True
        host = self._host
        if host is not None:
            host.destroy()
            deadline = time.monotonic() + timeout
            while host.tick_thread_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if host.tick_thread_alive():
                log.warning("raft tick thread still alive %.1fs after destroy()", timeout)
        for fut in list(self._pending):
            _settle_error(
                fut,
                OutcomeUnknown(
                    "raft node stopped; the command may still commit", node=self.address
                ),
            )
        self._pending.clear()
        self._set_leading(False)

    async def __aenter__(self) -> RaftNode[M]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- identity and leadership ----------------------------------------------------------
    @property
    def address(self) -> str:
        return self._settings.self_address

    @property
    def url(self) -> str:
        return self._settings.http_urls[self._settings.self_address]

    @property
    def settings(self) -> RaftSettings:
        return self._settings

    @property
    def machine(self) -> M:
        return self._machine

    def _live_host(self) -> RaftHost | None:
        if self._closed or self._fatal is not None:
            return None
        return self._host

    def is_leader(self) -> bool:
        host = self._live_host()
        return host is not None and host.rx_role() == LEADER_STATE

    def leader_address(self) -> str | None:
        """Raft address of the last known leader (may be stale; None if unknown)."""
        host = self._live_host()
        if host is None:
            return None
        if host.rx_role() == LEADER_STATE:
            return self.address
        return host.rx_leader_address()

    def leader_url(self) -> str | None:
        """Advertised HTTP URL of the last known leader, for redirects (None if unknown)."""
        return self._settings.url_of(self.leader_address())

    @property
    def role(self) -> str:
        """``leader`` / ``follower`` / ``candidate``, or ``stopped`` / ``new``."""
        if self._host is None:
            return "stopped" if self._closed else "new"
        if self._closed or self._fatal is not None:
            return "stopped"
        return ROLE_NAMES.get(self._host.rx_role(), "unknown")

    @property
    def term(self) -> int:
        return 0 if self._host is None else int(self._host.raftCurrentTerm)

    @property
    def commit_index(self) -> int:
        return 0 if self._host is None else int(self._host.raftCommitIndex)

    @property
    def last_applied(self) -> int:
        return 0 if self._host is None else int(self._host.raftLastApplied)

    @property
    def has_quorum(self) -> bool:
        """Connected to a majority (as of the last status snapshot, <= status_interval old)."""
        host = self._live_host()
        return host is not None and bool(host.rx_status().get("has_quorum", False))

    def is_ready(self) -> bool:
        """True once this node has applied up to the leader's commit index after start."""
        host = self._live_host()
        return host is not None and bool(host.isReady())

    def status(self) -> dict[str, Any]:
        """A fresh dict for metrics / ``/raft/status`` (safe on the loop thread)."""
        host = self._host
        base: dict[str, Any] = dict(host.rx_status()) if host is not None else {}
        base.update(
            node=self.address,
            url=self.url,
            role=self.role,
            term=self.term,
            commit_index=self.commit_index,
            last_applied=self.last_applied,
            is_leader=self.is_leader(),
            leader=self.leader_address(),
            leader_url=self.leader_url(),
            ready=self.is_ready(),
            fatal=None if self._fatal is None else repr(self._fatal),
            commands_submitted=self._submitted,
            commands_succeeded=self._succeeded,
            command_errors=dict(self._errors),
            command_seconds_sum=self._latency_sum,
            command_seconds_count=self._latency_count,
            commands_in_flight=len(self._pending),
        )
        return base

    async def wait_for_leader(self, *, timeout: float = 10.0) -> str:
        """Wait until some leader is known; returns its URL. Raises NoQuorum on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            url = self.leader_url()
            if url is not None:
                return url
            if time.monotonic() >= deadline:
                raise NoQuorum("no Raft leader within the deadline", node=self.address)
            await asyncio.sleep(0.02)

    async def wait_ready(self, *, timeout: float = 10.0) -> None:
        """Wait until :meth:`is_ready`. Raises Timeout."""
        self._require_running()
        assert self._ready_event is not None
        try:
            async with asyncio.timeout(timeout):
                await self._ready_event.wait()
        except TimeoutError:
            raise Timeout("raft node not ready within the deadline", node=self.address) from None

    # -- commands -------------------------------------------------------------------------
    async def submit(
        self,
        command: Mapping[str, Any],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        leader_only: bool = False,
    ) -> dict[str, Any]:
        """Replicate ``command`` and return the machine's result for it.

        From a follower the command is forwarded to the leader by pysyncobj unless
        ``leader_only`` is set, in which case :class:`NotLeader` (with the leader's URL) is
        raised at once. Raises :class:`OutcomeUnknown` when no answer came within ``timeout``
        (the command may still commit), a typed :class:`Unavailable` subclass when it
        definitely did not apply, or the error the machine raised to reject it.
        """
        payload = encode_command(command, self._settings.max_command_bytes)
        host = self._require_running()
        if leader_only and host.rx_role() != LEADER_STATE:
            raise NotLeader(
                "this node is not the Raft leader", leader=self.leader_url(), node=self.address
            )
        return unwrap_result(await self._submit_payload(host, payload, timeout))

    async def submit_if_leader(
        self, command: Mapping[str, Any], *, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """:meth:`submit` with ``leader_only=True``: fail fast with NotLeader(leader=url)."""
        return await self.submit(command, timeout=timeout, leader_only=True)

    async def barrier(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Commit a no-op through the log: afterwards this node has applied everything that
        was committed before the call (a read barrier). The machine never sees it."""
        host = self._require_running()
        await self._submit_payload(host, NOOP_PAYLOAD, timeout)

    async def _submit_payload(self, host: RaftHost, payload: str, timeout: float) -> Any:
        if not timeout > 0:
            raise InvalidArgument("timeout must be positive", timeout=timeout)
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[tuple[Any, int]] = loop.create_future()

        def callback(result: Any, fail_reason: int) -> None:
            # Tick thread (or this thread, synchronously, on QUEUE_FULL). RuntimeError: the
            # loop is closed and nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, fut, (result, fail_reason))

        self._pending.add(fut)
        if self._leading:
            self._led.add(fut)
        self._submitted += 1
        started = time.monotonic()
        try:
            host.rx_submit(payload, callback)
            try:
                async with asyncio.timeout(timeout):
                    result, reason = await fut
            except TimeoutError:
                self._count_error("timeout")
                raise OutcomeUnknown(
                    "no answer from Raft within the timeout; the command may still commit",
                    node=self.address,
                    timeout=timeout,
                ) from None
        finally:
            self._pending.discard(fut)
            self._led.discard(fut)
        if reason != FAIL_REASON.SUCCESS:
            self._count_error(fail_reason_name(reason))
            raise error_for_fail_reason(
                reason,
                node=self.address,
                leader_url=self.leader_url(),
                has_quorum=self.has_quorum,
            )
        self._succeeded += 1
        self._latency_sum += time.monotonic() - started
        self._latency_count += 1
        return result

    def _count_error(self, reason: str) -> None:
        self._errors[reason] = self._errors.get(reason, 0) + 1

    # -- reads and admin ------------------------------------------------------------------
    async def read(self, fn: Callable[[M], T], *, timeout: float = DEFAULT_TIMEOUT) -> T:
        """Run ``fn(machine)`` on the tick thread (no apply runs concurrently) and return its
        result. Keep ``fn`` short and return copies, not live references."""
        host = self._require_running()
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[T] = loop.create_future()
        machine = self._machine

        def task() -> None:
            try:
                value = fn(machine)
            except BaseException as exc:
                self._post(_settle_error, fut, exc)
            else:
                self._post(_settle, fut, value)

        host.rx_run_on_tick(task)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise Timeout(
                "raft tick thread did not run the read in time", node=self.address
            ) from None

    def force_log_compaction(self) -> None:
        """Ask for a snapshot + journal truncation at the next opportunity (with
        ``log_compaction_split`` on, it still waits for this node's time window)."""
        self._require_running().forceLogCompaction()

    async def transfer_leadership(self, *, timeout: float = 2.0) -> bool:
        """On the leader, ask a caught-up follower to take over (before a planned restart).
        Returns True if the request was sent; poll :meth:`leader_address` to confirm."""
        host = self._require_running()
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[int] = loop.create_future()

        def callback(_result: Any, fail_reason: int) -> None:
            self._post(_settle, fut, fail_reason)

        host.rx_run_on_tick(lambda: host.transferLeadership(callback=callback))
        try:
            async with asyncio.timeout(timeout):
                return bool(await fut == FAIL_REASON.SUCCESS)
        except TimeoutError:
            return False

    def _require_running(self) -> RaftHost:
        if self._fatal is not None:
            raise Unavailable("raft node stopped after a fatal error", node=self.address)
        if self._closed:
            raise Unavailable("raft node is closed", node=self.address)
        if self._host is None:
            raise Unavailable("raft node not started", node=self.address)
        return self._host

    # -- tick thread -> loop ----------------------------------------------------------------
    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(fn, *args)

    def _state_changed_from_thread(self, old: int, new: int) -> None:
        self._post(self._state_changed, old, new)

    def _ready_from_thread(self) -> None:
        self._post(self._became_ready)

    def _fatal_from_thread(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._post(self._fatal_on_loop, exc)

    # -- loop-side handlers ---------------------------------------------------------------
    def _became_ready(self) -> None:
        if self._ready_event is not None:
            self._ready_event.set()

    def _state_changed(self, old: int, new: int) -> None:
        if self._closed or self._fatal is not None:
            return
        log.info(
            "raft %s: %s -> %s (term %d)",
            self.address,
            ROLE_NAMES.get(old, old),
            ROLE_NAMES.get(new, new),
            self.term,
        )
        self._set_leading(new == LEADER_STATE)

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if not leading:
            # Commands appended while this node led may or may not commit under the next
            # leader: say so now instead of letting callers wait out their timeout.
            for fut in list(self._led):
                _settle_error(
                    fut,
                    OutcomeUnknown(
                        "leadership was lost before the command committed; it may still commit",
                        node=self.address,
                    ),
                )
            self._led.clear()
        hook = self._on_become_leader if leading else self._on_lose_leadership
        if hook is None:
            return
        try:
            hook()
        except Exception:
            log.exception("raft leadership hook failed")

    def _fatal_on_loop(self, exc: BaseException) -> None:
        if self._host is not None and not self._closed:
            log.critical("raft node %s stops: %r", self.address, exc)
            self._host.destroy()
        self._set_leading(False)
        for fut in list(self._pending):
            _settle_error(
                fut, OutcomeUnknown("raft node stopped after a fatal error", node=self.address)
            )
        if self._on_fatal is not None:
            try:
                self._on_fatal(exc)
            except Exception:
                log.exception("raft on_fatal hook failed")


__all__ = ["DEFAULT_TIMEOUT", "FatalHook", "LeadershipHook", "RaftNode"]
