"""What a storage node counts about its traffic (pure: the time is passed in).

* requests by kind (:func:`op_kind`: read, write, replicate, edit, other), payload bytes in and
  out, and the requests in flight;
* per-slice reads, keyed by the slice's file id and index (the slot record knows both): since
  this process started, and in total across restarts (the totals of earlier runs are loaded from
  and flushed to a small file by :mod:`mydfs.storage.monitoring`);
* the hot slices: the top ``k`` by reads within a sliding window of a minute or so.

Cheap on the hot path: a read is a few dict operations, no lock (the event loop is the only
writer) and no disk write. Per-slice figures leave the node only as a top-k, never as one
Prometheus label per slice.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import orjson

#: The kinds of requests counted, in report order.
OPS = ("read", "write", "replicate", "edit", "other")
#: Seconds covered by the "recent reads" window of the hot-slice ranking.
WINDOW_SECONDS = 60.0
#: Buckets the window is cut into (it slides by one bucket at a time).
WINDOW_BUCKETS = 12
#: Version tag of the persisted totals file.
TOTALS_VERSION = 1


def op_kind(method: str, path: str) -> str:
    """The kind of a storage node request, from its method and path alone."""
    if path.startswith("/internal/slices/"):
        if method == "PUT":
            return "replicate"
        if method == "DELETE":
            return "edit"  # the tracker's reclaimer freeing a slice
    if path.startswith("/internal/"):
        return "other"
    if path.startswith(("/slices", "/files/", "/chain/")):
        if method in ("GET", "HEAD"):
            return "other" if path.endswith("/meta") else "read"
        if method == "PUT":
            return "write"
        if method == "DELETE" or path.endswith("/relink"):
            return "edit"
    return "other"


SliceKey = tuple[str, int]  # (file id in hex, slice index)


@dataclass(slots=True)
class _Slice:
    slot: int
    since_start: int = 0


def encode_totals(earlier: dict[SliceKey, int], since_start: dict[SliceKey, int]) -> bytes:
    """The totals file's bytes: every slice's reads of earlier runs plus this one."""
    totals = dict(earlier)
    for key, count in since_start.items():
        totals[key] = totals.get(key, 0) + count
    rows = [[f, i, n] for (f, i), n in totals.items()]
    return orjson.dumps({"version": TOTALS_VERSION, "slices": rows})


class AccessStats:
    """Counters of one storage node. All methods run on the event loop thread."""

    def __init__(
        self,
        now: float,
        *,
        window: float = WINDOW_SECONDS,
        buckets: int = WINDOW_BUCKETS,
    ) -> None:
        self.ops: dict[str, int] = dict.fromkeys(OPS, 0)
        self.bytes_in = 0
        self.bytes_out = 0
        self.inflight = 0
        self.started = now
        self._slices: dict[SliceKey, _Slice] = {}
        self._earlier: dict[SliceKey, int] = {}  # totals of earlier runs (loaded)
        self._earlier_sum = 0
        self._reads = 0  # slice reads since start
        self._current: Counter[SliceKey] = Counter()  # reads in the open bucket
        self._window: deque[Counter[SliceKey]] = deque(maxlen=max(1, buckets - 1))
        self._bucket = window / max(1, buckets)
        self._bucket_start = now
        self._mark: tuple[float, dict[str, int], int, int] = (now, dict(self.ops), 0, 0)
        self.dirty = False

    # --- the hot path --------------------------------------------------------------------------

    def begin(self, method: str, path: str, length: int | None) -> None:
        """A request arrived (call :meth:`end` when it is answered)."""
        self.ops[op_kind(method, path)] += 1
        if length:
            self.bytes_in += length
        self.inflight += 1

    def end(self) -> None:
        self.inflight -= 1

    def slice_read(self, file_id: str, index: int, slot: int, nbytes: int) -> None:
        """One read (whole or a range) of a slice was served from this node."""
        key = (file_id, index)
        entry = self._slices.get(key)
        if entry is None:
            entry = self._slices[key] = _Slice(slot)
        entry.slot = slot
        entry.since_start += 1
        self._reads += 1
        self._current[key] += 1
        self.bytes_out += nbytes
        self.dirty = True

    # --- readings --------------------------------------------------------------------------------

    def rates(self, now: float) -> dict[str, float]:
        """Requests per second by kind and bytes per second since the previous call."""
        then, ops, bytes_in, bytes_out = self._mark
        span = max(1e-3, now - then)
        out = {f"{op}_per_s": (self.ops[op] - ops[op]) / span for op in OPS}
        out["bytes_in_per_s"] = (self.bytes_in - bytes_in) / span
        out["bytes_out_per_s"] = (self.bytes_out - bytes_out) / span
        self._mark = (now, dict(self.ops), self.bytes_in, self.bytes_out)
        return {k: round(v, 2) for k, v in out.items()}

    def _slide(self, now: float) -> None:
        if now - self._bucket_start < self._bucket:
            return
        skipped = int((now - self._bucket_start) // self._bucket)
        self._window.append(self._current)
        for _ in range(min(skipped - 1, self._window.maxlen or 0)):
            self._window.append(Counter())
        self._current = Counter()
        self._bucket_start += skipped * self._bucket

    def recent(self, now: float) -> Counter[SliceKey]:
        """Reads per slice within the sliding window."""
        self._slide(now)
        total: Counter[SliceKey] = Counter(self._current)
        for bucket in self._window:
            total.update(bucket)
        return total

    def total(self, key: SliceKey) -> int:
        entry = self._slices.get(key)
        return self._earlier.get(key, 0) + (entry.since_start if entry else 0)

    def hot(self, k: int, now: float) -> list[dict[str, Any]]:
        """The ``k`` slices read most within the window (ties: most reads since start). Costs
        in proportion to the slices read within the window, not to every slice ever read."""
        recent = self.recent(now)

        def rank(key: SliceKey) -> tuple[int, int]:
            return recent[key], self._slices[key].since_start

        keys = sorted(heapq.nlargest(k, recent, key=rank), key=lambda key: (*rank(key), key))
        keys.reverse()
        return [
            {
                "file_id": key[0],
                "index": key[1],
                "slot": self._slices[key].slot,
                "recent": recent[key],
                "since_start": self._slices[key].since_start,
                "total": self.total(key),
            }
            for key in keys
        ]

    def reads_since_start(self) -> int:
        return self._reads

    def reads_total(self) -> int:
        return self._earlier_sum + self._reads

    # --- persistence (the bytes only; the file is the shell's) -----------------------------------

    def totals_snapshot(self) -> tuple[dict[SliceKey, int], dict[SliceKey, int]]:
        """(totals of earlier runs, reads since start) per slice, for :func:`encode_totals`
        (which may run on another thread: these dicts are not changed afterwards); clears
        :attr:`dirty`."""
        self.dirty = False
        return self._earlier, {key: entry.since_start for key, entry in self._slices.items()}

    def totals_blob(self) -> bytes:
        return encode_totals(*self.totals_snapshot())

    def load_totals(self, blob: bytes) -> int:
        """Take the totals of earlier runs from a totals file's bytes; returns how many slices.
        Raises ValueError for a file that is not one."""
        doc = orjson.loads(blob)
        if not isinstance(doc, dict) or doc.get("version") != TOTALS_VERSION:
            raise ValueError("not an access totals file (version mismatch)")
        earlier: dict[SliceKey, int] = {}
        for row in doc.get("slices") or []:
            if (
                not isinstance(row, list)
                or len(row) != 3
                or not isinstance(row[0], str)
                or not all(isinstance(x, int) and x >= 0 for x in row[1:])
            ):
                raise ValueError(f"bad row in the access totals file: {row!r}")
            earlier[(row[0], row[1])] = row[2]
        self._earlier = earlier
        self._earlier_sum = sum(earlier.values())
        return len(earlier)
