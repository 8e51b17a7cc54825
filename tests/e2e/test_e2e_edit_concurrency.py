"""Concurrent edits of one file on a real cluster (issue 9): 16 clients at once for about 20 s,
and the result checked against a bytes model.

* 8 editor threads: random ``write`` at offsets (in place and past the end), ``insert``,
  ``cut``, ``truncate`` and ``append`` (``append_info``, which gives the commit's entry), of
  1 byte to a bit over one slice;
* 4 reader threads: the whole file, or a byte range, each between two ``stat`` calls;
* 4 appender processes (``python -c``) appending unique records, each killed with SIGKILL at a
  random moment.

Every acknowledged edit returns the file's new version. The check replays the acknowledged
edits in version order on a bytes model; a version that no acknowledged edit holds must be
one of the edits whose outcome nobody learned (the killed processes' in-flight records, the
calls that raised ``OutcomeUnknown``), found by a small search. Then: the model's last state
equals the file's content exactly; every whole read is the bytes of one model state between the
versions its two ``stat`` calls saw, every range read the same range of one; every
acknowledged append landed once, at the offset it was given (a lost or duplicated one leaves a
version nobody can fill, or a model that does not match).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from e2e_helpers import SLICE, random_bytes

from mydfs.client import Client, MydfsError
from mydfs.client.local_cluster import LocalCluster
from mydfs.common.errors import OutcomeUnknown

RUN_FOR = 20.0
RECORD = 64
MAX_SIZE = SLICE + 5000  # the largest edit

# An appender: one line per record it tried, "ok K VERSION OFFSET" or "unknown K" or "fail K".
APPENDER = r"""
import sys
from mydfs.client import Client, MydfsError
from mydfs.common.errors import OutcomeUnknown

tracker, path, name, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with Client(tracker) as c:
    for k in range(1000000):
        rec = f"<{name} record {k:06d}>".encode().ljust(size, b".")
        try:
            at, info = c.append_info(path, rec)
        except OutcomeUnknown:
            print("unknown", k, flush=True)
            continue
        except MydfsError:
            print("fail", k, flush=True)
            continue
        print("ok", k, info.version, at, flush=True)
"""

# An edit on the model: (kind, offset, data or length). Kinds: write, insert, cut, truncate,
# append (offset: where it must land; -1 when not known).
Op = tuple[str, int, bytes | int]


def record(name: str, k: int) -> bytes:
    return f"<{name} record {k:06d}>".encode().ljust(RECORD, b".")


def apply(state: bytes, op: Op) -> bytes | None:
    """``op`` on ``state``; None when it could not have been applied to it."""
    kind, off, arg = op
    if kind == "write":
        assert isinstance(arg, bytes)
        padded = state + bytes(max(0, off - len(state)))
        return padded[:off] + arg + padded[off + len(arg) :]
    if kind == "append":
        assert isinstance(arg, bytes)
        return state + arg if off in (-1, len(state)) else None
    if kind == "insert":
        assert isinstance(arg, bytes)
        return state[:off] + arg + state[off:] if off <= len(state) else None
    if kind == "cut":
        assert isinstance(arg, int)
        return state[:off] + state[off + arg :] if off + arg <= len(state) else None
    assert kind == "truncate"
    return state[:off] + bytes(max(0, off - len(state)))


@dataclass
class Read:
    lo: int  # the version stat saw before the read
    hi: int  # ... and after it
    offset: int
    length: int | None  # None: the whole file
    size: int
    digest: bytes
    data: bytes = b""  # a range read's bytes

    def matches(self, state: bytes, digest: Callable[[], bytes]) -> bool:
        if self.length is None:
            return len(state) == self.size and digest() == self.digest
        return state[self.offset : self.offset + self.length] == self.data


@dataclass
class Log:
    """What the clients saw: acknowledged edits by version, edits of unknown outcome, reads."""

    acked: dict[int, list[Op]] = field(default_factory=dict)
    unknown: list[Op] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, version: int, op: Op) -> None:
        with self.lock:
            self.acked.setdefault(version, []).append(op)


def editor(url: str, path: str, n: int, stop: float, log: Log) -> None:
    rng = random.Random(1000 + n)
    with Client(url) as c:
        size = c.stat(path).size
        while time.monotonic() < stop:
            big = rng.random() < 0.15
            count = rng.randint(1, MAX_SIZE) if big else rng.choice([1, rng.randint(1, 9000)])
            kind = rng.choice(["write", "write", "insert", "cut", "truncate", "append", "append"])
            if size > 2 * SLICE and kind in ("write", "insert", "append"):
                kind = "cut"
            data = rng.randbytes(count)
            op: Op
            try:
                if kind == "write":
                    off = rng.randint(0, size + 100)
                    op = ("write", off, data)
                    info = c.write(path, off, data)
                elif kind == "insert":
                    off = rng.randint(0, size)
                    op = ("insert", off, data)
                    info = c.insert(path, off, data)
                elif kind == "cut":
                    if size < 2:
                        continue
                    off = rng.randint(0, size - 1)
                    op = ("cut", off, min(count, size - off))
                    info = c.cut(path, off, min(count, size - off))
                elif kind == "truncate":
                    # Never the current size (a truncate that changes nothing is no edit).
                    to = rng.randint(1, max(1, size - 1)) if size > 2 else size + count
                    op = ("truncate", to, 0)
                    info = c.truncate(path, to)
                else:
                    op = ("append", -1, data)
                    at, info = c.append_info(path, data)
                    op = ("append", at, data)
            except OutcomeUnknown:
                with log.lock:
                    log.unknown.append(op)
                continue
            except MydfsError as exc:
                why = f"{kind}: {type(exc).__name__} {exc}"[:200]
                with log.lock:
                    log.failed[why] = log.failed.get(why, 0) + 1
                continue
            log.ack(info.version, op)
            size = info.size


def reader(url: str, path: str, n: int, stop: float, log: Log) -> None:
    rng = random.Random(2000 + n)
    with Client(url) as c:
        while time.monotonic() < stop:
            try:
                before = c.stat(path)
                if rng.random() < 0.5:
                    off, length = 0, None
                    data = c.read(path)
                else:
                    off = rng.randint(0, before.size)
                    length = rng.randint(1, 200_000)
                    data = c.read(path, off, length)
                after = c.stat(path)
            except MydfsError:
                continue  # a read may fail (the file changed under it); it must never lie
            digest = hashlib.sha256(data).digest()
            got = Read(before.version, after.version, off, length, len(data), digest)
            if length is not None:
                got.data = data
            with log.lock:
                log.reads.append(got)


def appenders_output(name: str, out: str, log: Log) -> None:
    """An appender's acknowledged records into ``log``; its in-flight one (the record after
    its last line) and those of unknown outcome into ``log.unknown``."""
    last = -1
    for line in out.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # cut by the kill: that record counts as in flight
        words = line.split()
        k = int(words[1])
        last = k
        if words[0] == "ok":
            log.ack(int(words[2]), ("append", int(words[3]), record(name, k)))
        elif words[0] == "unknown":
            log.unknown.append(("append", -1, record(name, k)))
    log.unknown.append(("append", -1, record(name, last + 1)))


def replay(start: bytes, first: int, last: int, final: bytes, log: Log) -> tuple[bool, str]:
    """Search an assignment of the edits of unknown outcome to the versions no acknowledged
    edit holds under which the model ends at ``final`` and explains every read."""
    gaps = [v for v in range(first + 1, last + 1) if v not in log.acked]
    if len(gaps) > len(log.unknown):
        return False, f"{len(gaps)} versions nobody acknowledged, {len(log.unknown)} candidates"
    by_version: dict[int, list[int]] = {}
    by_hi: dict[int, list[int]] = {}  # reads that must be explained once version hi is passed
    for i, r in enumerate(log.reads):
        by_hi.setdefault(r.hi, []).append(i)
        for v in range(r.lo, r.hi + 1):
            by_version.setdefault(v, []).append(i)
    best = [f"no assignment of {len(log.unknown)} candidates to versions {gaps} fits"]

    def explained(v: int, state: bytes) -> set[int]:
        memo: list[bytes] = []

        def digest() -> bytes:
            if not memo:
                memo.append(hashlib.sha256(state).digest())
            return memo[0]

        return {i for i in by_version.get(v, ()) if log.reads[i].matches(state, digest)}

    def step(v: int, state: bytes, claims: list[Op]) -> bytes | None:
        """Version ``v``'s state: one claim is the edit, any other a truncate that changed
        nothing (it answers the current version)."""
        for k, op in enumerate(claims):
            new = apply(state, op)
            others = claims[:k] + claims[k + 1 :]
            if new is not None and all(o[0] == "truncate" and o[1] == len(new) for o in others):
                return new
        return None

    def unexplained(v: int, ok: set[int]) -> list[Read]:
        return [log.reads[i] for i in by_hi.get(v, ()) if i not in ok]

    def go(v: int, state: bytes, pool: list[Op], ok: set[int]) -> bool:
        while v < last:
            missing = unexplained(v, ok)  # every version a read may have seen is behind
            if missing:
                shown = [(r.lo, r.hi, r.offset, r.length, r.size) for r in missing[:3]]
                best[0] = f"{len(missing)} reads match no version: {shown}"
                return False
            v += 1
            if v in log.acked:
                new = step(v, state, log.acked[v])
                if new is None:
                    best[0] = f"version {v}: {[o[:2] for o in log.acked[v]]} cannot apply"
                    return False
                state = new
                ok = ok | explained(v, state)
                continue
            for k, cand in enumerate(pool):
                new = apply(state, cand)
                rest = pool[:k] + pool[k + 1 :]
                if new is not None and go(v, new, rest, ok | explained(v, new)):
                    return True
            return False
        if state != final:
            best[0] = f"the model ({len(state)} bytes) differs from the file ({len(final)} bytes)"
            return False
        if len(ok) != len(log.reads):
            missing = [log.reads[i] for i in range(len(log.reads)) if i not in ok]
            shown = [(r.lo, r.hi, r.offset, r.length, r.size) for r in missing[:3]]
            best[0] = f"{len(missing)} reads match no version: {shown}"
            return False
        return True

    return go(first, start, list(log.unknown), explained(first, start)), best[0]


def test_sixteen_clients_edit_one_file_and_the_result_is_one_serial_order(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    began = time.monotonic()
    c = make_cluster(storage_args=["--edit-timeout", "3"])
    path, start = "/concurrency/edited.bin", random_bytes(SLICE + 1000, seed=9)
    with Client(c.tracker_url) as client:
        first = client.put(path, start).version
    log = Log()
    stop = time.monotonic() + RUN_FOR
    env = dict(os.environ, MYDFS_TOKEN=c.token or "")
    names = [f"proc{n}" for n in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, c.tracker_url, path, name, str(RECORD)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for name in names
    ]
    threads = [
        threading.Thread(target=editor, args=(c.tracker_url, path, n, stop, log)) for n in range(8)
    ]
    threads += [
        threading.Thread(target=reader, args=(c.tracker_url, path, n, stop, log)) for n in range(4)
    ]
    for t in threads:
        t.start()
    rng = random.Random(7)
    kills = sorted((rng.uniform(3, RUN_FOR - 3), n) for n in range(4))
    t0 = stop - RUN_FOR
    for at, n in kills:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        os.kill(procs[n].pid, signal.SIGKILL)
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"
    for name, proc in zip(names, procs, strict=True):
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        appenders_output(name, out, log)
    with Client(c.tracker_url) as client:
        info = client.stat(path)
        final = client.read(path)
    assert len(final) == info.size
    versions = sorted(log.acked)
    assert versions and versions[0] > first and versions[-1] <= info.version
    ok, why = replay(start, first, info.version, final, log)
    assert ok, why
    kinds: dict[str, int] = {}
    for ops in log.acked.values():
        for op in ops:
            kinds[op[0]] = kinds.get(op[0], 0) + 1
    print(
        f"edits: {info.version - first} committed, {len(log.acked)} acknowledged {kinds}, "
        f"{len(log.unknown)} of unknown outcome, {log.failed} failed; "
        f"{len(log.reads)} reads; {time.monotonic() - began:.0f} s"
    )


def test_the_check_fills_gaps_and_catches_a_lost_or_extra_edit() -> None:
    """The replay itself (no cluster): an in-flight record fills the version nobody
    acknowledged; a lost acknowledged edit, a read of no version or content that no
    assignment explains fails."""

    def scenario() -> tuple[bytes, Log, bytes]:
        log = Log()
        log.ack(2, ("write", 1, b"XY"))
        log.ack(4, ("cut", 0, 1))
        log.ack(5, ("truncate", 10, 0))  # answers version 5: it changed nothing ...
        log.ack(5, ("append", 8, b"!!"))  # ... after this append
        log.unknown += [("append", -1, b"rec-a"), ("append", -1, b"rec-b")]
        log.reads.append(Read(1, 3, 0, None, 9, hashlib.sha256(b"aXYdrec-b").digest()))
        log.reads.append(Read(4, 5, 1, 2, 2, b"", b"Yd"))
        return b"abcd", log, b"XYdrec-b!!"

    start, log, final = scenario()
    assert apply(b"abc", ("truncate", 5, 0)) == b"abc\0\0"
    ok, why = replay(start, 1, 5, final, log)
    assert ok, why
    start, log, final = scenario()
    ok, why = replay(start, 1, 5, final.replace(b"!!", b""), log)  # the append was lost
    assert not ok and "differs" in why
    start, log, final = scenario()
    log.unknown = [("append", -1, b"rec-a")]  # the version's edit is none of the candidates
    assert not replay(start, 1, 5, final, log)[0]
    start, log, final = scenario()
    log.reads.append(Read(2, 2, 0, None, 4, hashlib.sha256(b"aXYd!").digest()))
    ok, why = replay(start, 1, 5, final, log)
    assert not ok and "reads match no version" in why
