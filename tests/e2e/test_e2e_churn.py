"""Churn on a real cluster (the space issue's guarantee, ``docs/space.md``, ``docs/collector.md``):
3 client threads, each the only writer of its own paths, run random cycles of put, put
--overwrite, write at an offset, append, truncate, insert, cut, rm, rm --now, undelete and purge,
while a killer thread kills with -9, at random points, group 1's leader, then a follower of
group 2, then the tracker, each started again once the cluster is healthy. The collector,
the reclaimer and 301 compaction (of any file left alone 2 s) run all along.

Each path has a byte model, changed only by an acknowledged operation. An operation that fails
in a way that does not say whether it happened (a timeout, ``OutcomeUnknown``, unavailability
during a kill) is resolved by reading the path again (bounded retries): the bytes must equal
either the model's old content or its new one (an absent file: the old or new absence), and the
model continues from what the file is. Anything else fails the test.

A sampler thread asks ``Client.df()`` about once a second and checks, on every complete survey,
for every group and for the cluster, the bound

    live + 301 + pending  <=  files + trash + SLACK

that is, the volumes never hold more than the slots of live files (their data and their 301
slots), the slots of the trash (records within the retention, or purged and waiting for the
reclaimer) and a fixed slack (:data:`SLACK`, justified there).

At the end, with the cluster healthy again: the trash lists only files the model removed and
did not bring back (a purged one never as ``held``); every live path reads back byte-identical
to its model and every other path is ``NotFound``; then, once the collector and the reclaimer
have caught up (bounded wait), every allocated slot is one of a live file (no orphan, no trash
left, ``live + moved + pending == files``: nothing leaked) and every file still reads back
byte-identical. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import os
import random
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from e2e_helpers import SLICE, restart_tracker

from mydfs.bench.edits import parse_counter
from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import Process
from mydfs.common.errors import AlreadyExists, Conflict, InvalidArgument, NotFound

pytestmark = pytest.mark.slow

T = TypeVar("T")

CLIENTS = 3
PATHS = 4
#: Short collector settings: a slice nothing references is an orphan 3 s after its
#: reservation; an upload's intent lives 10 s after its last slice; a pass every second; a
#: file with a 301 left alone 2 s is compacted.
OPTIONS = {
    "orphan_grace": 3,
    "intent_ttl": 10,
    "collect_interval": 1,
    "collect_rate": 50,
    "compact_idle": 2,
}
#: Seconds a removed file stays undeletable: short, so undeletes both succeed and come too late.
RETENTION = 5.0
#: The small files' sizes; path 0 of each client also takes files just over one slice.
SMALL_MAX = 16 * 1024
SMALL_CAP = 64 * 1024
LARGE_CAP = 2 * SLICE - 100_000
#: The most new slots one operation writes: no file is ever larger than 2 slices, so a put
#: writes at most 2 and an edit replaces at most the 2 slices of the file.
OP_SLOTS = 2
#: The slack of the bound: what the slots of files and trash do not cover at a given moment.
#: Each client has one operation in flight (at most OP_SLOTS new slots, unreferenced until its
#: registration or commit; an edit's replaced slots are unreferenced from the decision until the
#: group applies the commit), and an attempt abandoned around a kill leaves its slots as
#: orphans until the collector frees them (orphan_grace + a pass, longer while a group has no
#: leader, during which the client retries). Allowing each client its op in flight and 3
#: abandoned attempts: CLIENTS * OP_SLOTS * 4 = 24 slots. A leak of even one slot per
#: removal or overwrite would pass it within the run (hundreds of operations).
SLACK = CLIENTS * OP_SLOTS * 4
#: Each owner's operations give up after this many seconds (the SDK retries within it): short,
#: so that operations caught by a kill fail and their outcome must be resolved.
OP_DEADLINE = 6.0
#: Seconds between the kills' random points (the killer waits a random time in this range
#: before each kill) and of downtime after each.
GAP = (8.0, 16.0)
DOWN = (0.5, 3.0)
#: The tracker stays down longer than OP_DEADLINE: the operations it catches fail, uploads
#: with their slices written but no file registered among them (orphans for the collector).
TRACKER_DOWN = (OP_DEADLINE + 1, OP_DEADLINE + 3)
#: Bounded waits.
RESOLVE_FOR = 90.0
SETTLE_FOR = 90.0
RUN_AT_MOST = 150.0

#: Errors after which the operation surely did not happen.
REFUSALS = (Conflict, InvalidArgument, AlreadyExists)


def path_of(client: int, k: int) -> str:
    return f"/churn/c{client}/f{k}"


@dataclass
class Trashed:
    """A file the model removed (rm, rm --now, or replaced by an overwrite)."""

    path: str
    content: bytes
    #: "held", "purged", "unknown" (a purge whose outcome is unknown) or "reclaimed" (an
    #: undelete found it gone or being freed).
    state: str


@dataclass
class Model:
    """What the owners know: each path's bytes (None: absent) and file id, the trash."""

    content: dict[str, bytes | None] = field(default_factory=dict)
    file_id: dict[str, str | None] = field(default_factory=dict)
    #: The file ids of the path's rm's (candidates for undelete, oldest first) while they may
    #: be in the trash: an undelete of an old one may come after the retention.
    removed: dict[str, list[str]] = field(default_factory=dict)
    trashed: dict[str, Trashed] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Stats:
    ops: dict[str, int] = field(default_factory=dict)
    unclear: dict[str, int] = field(default_factory=dict)  # "kind: applied" / "not applied"
    max_orphan: int = 0
    kills: list[str] = field(default_factory=list)
    samples: int = 0
    max_used: dict[str, int] = field(default_factory=dict)
    max_over: dict[str, int] = field(default_factory=dict)  # max of used - files - trash
    at_max_over: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str) -> None:
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + 1

    def count_unclear(self, kind: str, applied: bool | None) -> None:
        what = (
            f"{kind}: {'unknown' if applied is None else 'applied' if applied else 'not applied'}"
        )
        with self.lock:
            self.unclear[what] = self.unclear.get(what, 0) + 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def settled(ask: Callable[[], T]) -> T | None:
    """``ask()`` (None: NotFound), asked again until the cluster answers (bounded)."""
    deadline = time.monotonic() + RESOLVE_FOR
    while True:
        try:
            return ask()
        except NotFound:
            return None
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def read_settled(client: Client, path: str) -> bytes | None:
    """The path's bytes (None: NotFound), asked until the cluster answers (bounded)."""
    return settled(lambda: client.read(path))


def stat_settled(client: Client, path: str) -> str | None:
    """The path's file id (None: NotFound), asked until the cluster answers (bounded)."""
    return settled(lambda: str(client.stat(path).file_id))


class Owner:
    """One client thread: the only writer of its paths."""

    def __init__(
        self, n: int, tracker: str, model: Model, stats: Stats, stop: threading.Event, seed: int
    ) -> None:
        self.n = n
        self.tracker = tracker
        self.model = model
        self.stats = stats
        self.stop = stop
        self.rng = random.Random(seed * 10 + n)
        self.paths = [path_of(n, k) for k in range(PATHS)]
        for p in self.paths:
            model.content[p], model.file_id[p], model.removed[p] = None, None, []

    # --- data --------------------------------------------------------------------------------

    def data(self, size: int) -> bytes:
        return self.rng.randbytes(size)

    def new_size(self, path: str) -> int:
        if path.endswith("/f0") and self.rng.random() < 0.5:
            return SLICE + self.rng.randint(1, 50_000)
        return self.rng.randint(1, SMALL_MAX)

    def cap(self, path: str) -> int:
        return LARGE_CAP if path.endswith("/f0") else SMALL_CAP

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            with Client(self.tracker, deadline=OP_DEADLINE) as client:
                while not self.stop.is_set():
                    self.step(client)
        except BaseException as exc:
            self.stats.fail(f"client {self.n}: {exc!r}")
            self.stop.set()

    def step(self, client: Client) -> None:
        rng = self.rng
        m = self.model
        with m.lock:
            held = [f for f, t in m.trashed.items() if t.path in self.paths and t.state == "held"]
        if held and rng.random() < 0.07:
            self.purge(client, rng.choice(held))
            return
        path = rng.choice(self.paths)
        old = m.content[path]
        if old is None:
            if m.removed[path] and rng.random() < 0.3:
                self.undelete(client, path, rng.choice(m.removed[path]))
            else:
                new = self.data(self.new_size(path))
                self.content_op(client, "put", path, old, new, lambda: client.put(path, new))
            return
        size = len(old)
        room = self.cap(path) - size
        kinds = ["overwrite", "write", "truncate", "cut", "rm", "rm_now"]
        weights = [2, 3, 2, 2, 2, 1]
        if room > 0:
            kinds += ["append", "insert"]
            weights += [3, 2]
        if size == 0:
            weights[kinds.index("cut")] = 0
        kind = rng.choices(kinds, weights)[0]
        if kind == "overwrite":
            new = self.data(self.new_size(path))
            self.content_op(
                client, kind, path, old, new, lambda: client.put(path, new, overwrite=True)
            )
        elif kind == "write":
            offset = rng.randint(0, size)
            piece = self.data(rng.randint(1, max(1, min(8192, room + (size - offset)))))
            new = old[:offset] + piece + old[offset + len(piece) :]
            self.content_op(client, kind, path, old, new, lambda: client.write(path, offset, piece))
        elif kind == "append":
            piece = self.data(rng.randint(1, min(8192, room)))
            new = old + piece
            self.content_op(
                client, kind, path, old, new, lambda: client.append_info(path, piece)[1]
            )
        elif kind == "truncate":
            to = rng.randint(0, size)
            new = old[:to]
            self.content_op(client, kind, path, old, new, lambda: client.truncate(path, to))
        elif kind == "insert":
            offset = rng.randint(0, size)
            piece = self.data(rng.randint(1, min(8192, room)))
            new = old[:offset] + piece + old[offset:]
            self.content_op(
                client, kind, path, old, new, lambda: client.insert(path, offset, piece)
            )
        elif kind == "cut":
            offset = rng.randint(0, size - 1)
            length = rng.randint(1, size - offset)
            new = old[:offset] + old[offset + length :]
            self.content_op(client, kind, path, old, new, lambda: client.cut(path, offset, length))
        else:
            self.remove(client, path, now=kind == "rm_now")

    # --- operations --------------------------------------------------------------------------

    def content_op(
        self,
        client: Client,
        kind: str,
        path: str,
        old: bytes | None,
        new: bytes,
        call: Callable[[], Any],
    ) -> None:
        """A put, an overwrite or an edit: ``old`` becomes ``new`` if it is applied."""
        m = self.model
        old_id = m.file_id[path]
        try:
            info = call()
        except Exception as exc:
            refused = isinstance(exc, REFUSALS)
            if refused:
                self.refused(kind)
            got = read_settled(client, path)
            if not refused and got in (old, new):
                self.stats.count_unclear(kind, got == new)
            if got == new and refused:
                self.stats.fail(f"{kind} {path} was refused ({exc!r}) but applied")
                self.stop.set()
            elif got == new:
                self.applied(kind, path, old_id, new, stat_settled(client, path))
            elif got != old:
                self.stats.fail(
                    f"{kind} {path} failed unclearly and the file holds neither the old "
                    f"({None if old is None else len(old)} B) nor the new ({len(new)} B) "
                    f"content: {None if got is None else len(got)} B"
                )
                self.stop.set()
            return
        self.applied(kind, path, old_id, new, str(info.file_id))

    def applied(
        self, kind: str, path: str, old_id: str | None, new: bytes, file_id: str | None
    ) -> None:
        m = self.model
        with m.lock:
            if kind == "overwrite" and old_id is not None:
                old = m.content[path]
                assert old is not None
                m.trashed[old_id] = Trashed(path, old, "held")
            m.content[path] = new
            m.file_id[path] = file_id
        self.stats.count(kind)

    def refused(self, kind: str) -> None:
        """A clean refusal: it must have changed nothing (the final reads check it)."""
        self.stats.count(f"{kind} refused")

    def remove(self, client: Client, path: str, *, now: bool) -> None:
        m = self.model
        old = m.content[path]
        assert old is not None
        old_id = m.file_id[path]
        kind = "rm_now" if now else "rm"
        try:
            info = client.delete(path, now=now)
            fid: str | None = str(info.file_id)
        except Exception as exc:
            refused = isinstance(exc, REFUSALS)
            if refused:
                self.refused(kind)
            got = read_settled(client, path)
            if not refused:
                self.stats.count_unclear(kind, got is None)
            if got is None and refused:
                self.stats.fail(f"{kind} {path} was refused ({exc!r}) but applied")
                self.stop.set()
                return
            if got is not None:
                if got != old:
                    self.stats.fail(f"{kind} {path} failed unclearly and changed the bytes")
                    self.stop.set()
                return
            fid = old_id
        with m.lock:
            m.content[path], m.file_id[path] = None, None
            if fid is not None:
                m.trashed[fid] = Trashed(path, old, "purged" if now else "held")
            if fid is not None and not now:
                m.removed[path].append(fid)
        self.stats.count(kind)

    def undelete(self, client: Client, path: str, fid: str) -> None:
        m = self.model
        content = m.trashed[fid].content
        try:
            info = client.undelete(path, file_id=fid)
        except (NotFound, Conflict):
            # Reclaimed (or being reclaimed) after the retention: never back.
            with m.lock:
                m.removed[path].remove(fid)
                m.trashed[fid].state = "reclaimed"
            self.stats.count("undelete too late")
            return
        except Exception:
            got = read_settled(client, path)
            self.stats.count_unclear("undelete", got is not None)
            if got is None:
                return
            if got != content:
                self.stats.fail(f"undelete {path} failed unclearly; other bytes came back")
                self.stop.set()
                return
        else:
            if str(info.file_id) != fid:
                self.stats.fail(f"undelete {path} --id {fid} restored {info.file_id}")
        with m.lock:
            m.content[path], m.file_id[path] = content, fid
            m.removed[path].remove(fid)
            del m.trashed[fid]
        self.stats.count("undelete")

    def purge(self, client: Client, fid: str) -> None:
        m = self.model
        t = m.trashed[fid]
        try:
            client.purge(file_id=fid)
            state = "purged"
        except NotFound:
            state = "purged"  # reclaimed already: the same for the model
        except Exception:
            self.stats.count_unclear("purge", None)
            state = "unknown"
        with m.lock:
            t.state = state
            if fid in m.removed[t.path]:
                m.removed[t.path].remove(fid)
        self.stats.count("purge")


def sample(client: Client, stats: Stats) -> None:
    """One ``df``: the bound on every complete survey, for every group and the cluster."""
    try:
        space = client.df()
    except Exception:
        return  # the tracker is down or slow: no figure this time
    if not space["complete"]:
        return
    rows = {f"group {g['group']}": g for g in space["groups"] if g.get("report")}
    rows["cluster"] = space["cluster"]
    with stats.lock:
        stats.samples += 1
        for name, row in rows.items():
            used = row["live"]["slots"] + row["moved"]["slots"] + row["pending"]["slots"]
            over = unaccounted(row)
            stats.max_used[name] = max(stats.max_used.get(name, 0), used)
            if name == "cluster":
                stats.max_orphan = max(stats.max_orphan, row["orphan"]["slots"])
            if over > stats.max_over.get(name, -(10**9)):
                stats.max_over[name] = over
                stats.at_max_over[name] = {
                    "used": used,
                    "files": row["files"]["slots"],
                    "trash": row["trash"]["slots"],
                    "orphan": row["orphan"]["slots"],
                }
            if over > SLACK:
                stats.errors.append(
                    f"{name}: {used} slots in use > files {row['files']['slots']} + trash "
                    f"{row['trash']['slots']} + slack {SLACK}"
                )


def sampler(tracker: str, stats: Stats, stop: threading.Event) -> None:
    with Client(tracker, deadline=10.0) as client:
        while not stop.is_set():
            sample(client, stats)
            stop.wait(1.0)


def killer(c: LocalCluster, stats: Stats, abort: threading.Event, rng: random.Random) -> None:
    """kill -9 group 1's leader, then a follower of group 2, then the tracker, each at a random
    point and started again after a random downtime (waiting until the cluster is healthy)."""
    try:
        for what in ("group 1 leader", "group 2 follower", "tracker"):
            if abort.wait(rng.uniform(*GAP)):
                return
            proc: Process | None
            if what == "tracker":
                tracker = c.tracker_process
                assert tracker is not None
                tracker.kill()  # SIGKILL
                proc, name = None, "tracker"
            else:
                group = 1 if what.startswith("group 1") else 2
                leader = c.wait_leader(group, timeout=60)
                if what.endswith("leader"):
                    victim = leader
                else:
                    victim = rng.choice([n for n in c.nodes(group) if n is not leader])
                victim.kill()  # SIGKILL
                proc, name = victim, victim.name
            stats.kills.append(f"{what} ({name})")
            # The downtime (cut short if the test failed).
            abort.wait(rng.uniform(*(TRACKER_DOWN if what == "tracker" else DOWN)))
            if proc is None:
                restart_tracker(c)
            else:
                c.start([proc], timeout=90.0)
    except BaseException as exc:
        stats.fail(f"killer: {exc!r}")
        abort.set()


def unaccounted(cluster: dict[str, Any]) -> int:
    """Allocated slots that neither a live file nor a trash record reaches (as the nemesis)."""
    used = sum(cluster[k]["slots"] for k in ("live", "moved", "pending"))
    return int(used - cluster["files"]["slots"] - cluster["trash"]["slots"])


def test_churn_with_kills_leaks_nothing_and_stays_bounded(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    # The operations and the kills' points are random; MYDFS_CHURN_SEED replays a run's draws
    # (the interleaving of the threads and processes still differs).
    seed = int(os.environ.get("MYDFS_CHURN_SEED") or random.randrange(1 << 30))
    print(f"\nchurn seed {seed}")
    c = make_cluster(groups=2, tracker_options=OPTIONS, trash_retention=RETENTION)
    model, stats = Model(), Stats()
    stop, abort = threading.Event(), threading.Event()
    owners = [Owner(n, c.tracker_url, model, stats, abort, seed) for n in range(CLIENTS)]
    started = time.monotonic()
    threads = [threading.Thread(target=o.run, name=f"owner{o.n}", daemon=True) for o in owners]
    watch = threading.Thread(target=sampler, args=(c.tracker_url, stats, stop), daemon=True)
    kill = threading.Thread(
        target=killer, args=(c, stats, abort, random.Random(seed)), name="killer", daemon=True
    )
    try:
        for t in [*threads, watch, kill]:
            t.start()
        kill.join(RUN_AT_MOST)
        assert not kill.is_alive(), "the killer did not finish in time"
        # A few more seconds of churn on the healthy cluster, then stop the owners.
        abort.wait(10.0)
    finally:
        abort.set()  # the owners stop after their current operation, the killer's wait ends
        kill.join(RUN_AT_MOST)  # a restart in progress finishes before the cluster is stopped
        for t in threads:
            t.join(RESOLVE_FOR + 60)
        stop.set()
        watch.join(30)
    assert not any(t.is_alive() for t in threads), "an owner did not stop"
    assert not stats.errors, stats.errors
    assert len(stats.kills) == 3, stats.kills
    run_seconds = time.monotonic() - started

    for g in (1, 2):
        c.wait_leader(g, timeout=60)
    c.wait_tracker(timeout=60)
    with Client(c.tracker_url, deadline=60.0) as client:
        # The trash: only files the model removed and did not bring back.
        live_ids = {fid for fid in model.file_id.values() if fid is not None}
        for rec in client.trash():
            fid = str(rec["file_id"])
            assert fid in model.trashed, f"a trash record the model never made: {rec}"
            assert fid not in live_ids, f"a live file also in the trash: {rec}"
            gone = model.trashed[fid]
            assert rec["path"] == gone.path, (rec, gone.path)
            if gone.state == "purged":
                assert rec["state"] in ("purged", "reclaiming"), rec
            if gone.state == "reclaimed":
                assert rec["state"] == "reclaiming", rec
        # Every path byte-identical to its model.
        for path, want in model.content.items():
            got = read_settled(client, path)
            assert got == want, f"{path}: {None if got is None else len(got)} B, expected " + (
                "NotFound" if want is None else f"{len(want)} B"
            )

        # No leak: once the collector and the reclaimer caught up, every allocated slot is a
        # live file's (the trash is empty after the retention).
        deadline = time.monotonic() + SETTLE_FOR
        last: dict[str, Any] | None = None
        while True:
            try:
                last = client.df()
            except Exception:
                last = None
            if last is not None and last["complete"]:
                cl = last["cluster"]
                if (
                    unaccounted(cl) == 0
                    and cl["orphan"]["slots"] == 0
                    and cl["trash"]["slots"] == 0
                ):
                    break
            assert time.monotonic() < deadline, f"the cluster did not catch up: {last}"
            time.sleep(0.5)
        settled = time.monotonic() - started - run_seconds
        assert last is not None
        cl = last["cluster"]
        used = cl["live"]["slots"] + cl["moved"]["slots"] + cl["pending"]["slots"]
        assert used == cl["files"]["slots"], cl
        # The collector freed nothing referenced: every file still reads back identical.
        for path, want in model.content.items():
            assert read_settled(client, path) == want, path
        with urllib.request.urlopen(c.tracker_url + "/metrics", timeout=10) as resp:
            released = parse_counter(resp.read().decode(), "mydfs_tracker_redirects_released_total")

    ops = sum(v for k, v in stats.ops.items() if not k.endswith("refused"))
    print(
        f"\nchurn: {ops} operations in {run_seconds:.0f} s ({dict(sorted(stats.ops.items()))}), "
        f"unclear outcomes resolved: {stats.unclear}, kills: {stats.kills}; "
        f"{stats.samples} complete df samples; max slots in use {stats.max_used}, "
        f"max orphans {stats.max_orphan}; "
        f"max (in use - files - trash) {stats.max_over} (bound: <= {SLACK}) at "
        f"{stats.at_max_over}; settled in {settled:.0f} s: {used} slots in use, "
        f"files {cl['files']['slots']}, leaked {unaccounted(cl)}; "
        f"301s released by compaction (since the tracker's last start) {released:.0f}"
    )
