"""Writes route around a paused process (a fresh cluster of one group per test).

A SIGSTOPped leader still completes TCP connects (the kernel's backlog) but never answers: the
SDK notices within about two seconds (a silent request, then a failed health probe), asks the
group's other nodes who leads now, and writes go on at the successor. A SIGSTOPped tracker makes
the SDK's calls fail fast and retry; writes resume soon after it continues. The measured outages
are printed; the bounds asserted are generous (the machine is shared)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from e2e_helpers import SLICE, random_bytes, sha256
from helpers import wait_for

from mydfs.client import Client, MydfsError
from mydfs.client.local_cluster import LocalCluster


@dataclass
class WriteLoop:
    """Writers putting files in a loop; every put's (start, end, ok) is kept."""

    client: Client
    prefix: str
    writers: int = 3
    done: list[tuple[float, float, bool]] = field(default_factory=list)
    acked: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _n: int = 0

    def _next(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def _run(self) -> None:
        while not self._stop.is_set():
            i = self._next()
            path = f"{self.prefix}/f{i:05d}.bin"
            # Mostly one-slice files (reserve and write in one request); every 6th one has two
            # slices (reserve, then fill, as large files do).
            size = SLICE + 5000 if i % 6 == 0 else 20_000 + i % 7 * 1000
            data = random_bytes(size, seed=i)
            start = time.monotonic()
            try:
                self.client.put(path, data)
            except MydfsError as exc:
                with self._lock:
                    self.done.append((start, time.monotonic(), False))
                    self.errors.append(f"{path}: {exc}")
                continue
            with self._lock:
                self.done.append((start, time.monotonic(), True))
                self.acked[path] = sha256(data)

    def successes(self) -> int:
        with self._lock:
            return sum(1 for _, _, ok in self.done if ok)

    def first_success_started_after(self, t: float) -> float | None:
        """When the first put that started at or after ``t`` succeeded."""
        with self._lock:
            ends = [end for start, end, ok in self.done if ok and start >= t]
        return min(ends) if ends else None

    def first_success_ended_after(self, t: float) -> float | None:
        with self._lock:
            ends = [end for _, end, ok in self.done if ok and end > t]
        return min(ends) if ends else None

    @contextmanager
    def running(self) -> Iterator[WriteLoop]:
        threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.writers)]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            self._stop.set()
            for t in threads:
                t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a writer hung"


def _check_acked(c: LocalCluster, loop: WriteLoop) -> None:
    with Client(c.tracker_url, deadline=60.0) as fresh:
        for path, digest in sorted(loop.acked.items()):
            assert sha256(fresh.read(path)) == digest, path


def test_writes_go_to_the_successor_of_a_paused_leader_within_seconds(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(groups=1)
    with Client(c.tracker_url, deadline=60.0) as client:
        loop = WriteLoop(client, "/paused-leader")
        with loop.running():
            wait_for(lambda: loop.successes() >= 10, timeout=60, what="writes before the pause")
            victim = c.wait_leader(1)
            paused_at = time.monotonic()
            victim.kill(signal.SIGSTOP)
            try:
                ended = wait_for(
                    lambda: loop.first_success_started_after(paused_at),
                    timeout=60,
                    what="a write after the leader was paused",
                )
                outage = ended - paused_at
                successor = c.wait_leader(1, timeout=30)
                assert successor is not victim
                before = loop.successes()
                wait_for(
                    lambda: loop.successes() >= before + 10,
                    timeout=60,
                    what="writes going on at the successor",
                )
            finally:
                victim.kill(signal.SIGCONT)
            wait_for(victim.health, timeout=60, what=f"{victim.name} answering again")
            before = loop.successes()
            wait_for(
                lambda: loop.successes() >= before + 5, timeout=60, what="writes after SIGCONT"
            )
    print(
        f"paused {victim.name}: first write after {outage:.2f}s at {successor.name}; "
        f"{loop.successes()} writes, {len(loop.errors)} failed"
    )
    assert outage <= 6.0, f"writes stalled {outage:.1f}s after the leader was paused"
    assert not loop.errors, loop.errors[:5]
    _check_acked(c, loop)


def test_writes_resume_soon_after_a_paused_tracker_continues(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    c = make_cluster(groups=1)
    tracker = c.tracker_process
    assert tracker is not None
    with Client(c.tracker_url, deadline=60.0) as client:
        loop = WriteLoop(client, "/paused-tracker")
        with loop.running():
            wait_for(lambda: loop.successes() >= 10, timeout=60, what="writes before the pause")
            tracker.kill(signal.SIGSTOP)
            try:
                # A call with a short deadline fails fast rather than hanging on the tracker.
                with Client(c.tracker_url, deadline=2.0) as impatient:
                    start = time.monotonic()
                    try:
                        impatient.stat("/paused-tracker/f00001.bin")
                        raise AssertionError("the tracker answered while stopped")
                    except MydfsError as exc:
                        failed_after = time.monotonic() - start
                        assert "did not succeed" in str(exc) or "not answer" in str(exc), exc
                time.sleep(max(0.0, 4.0 - failed_after))  # the fault lasts a few seconds
            finally:
                tracker.kill(signal.SIGCONT)
            resumed_at = time.monotonic()
            ended = wait_for(
                lambda: loop.first_success_ended_after(resumed_at),
                timeout=60,
                what="a write after the tracker continued",
            )
            resume = ended - resumed_at
            before = loop.successes()
            wait_for(lambda: loop.successes() >= before + 10, timeout=60, what="writes going on")
    print(
        f"stopped tracker: a 2 s-deadline call failed after {failed_after:.2f}s; "
        f"writes resumed {resume:.2f}s after SIGCONT; {len(loop.errors)} failed"
    )
    assert failed_after < 5.0
    assert resume <= 5.0, f"writes resumed only {resume:.1f}s after the tracker continued"
    assert not loop.errors, loop.errors[:5]
    _check_acked(c, loop)
