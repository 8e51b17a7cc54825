"""What a benchmark run produces: samples, per-system results, limits and figures.

A *sample* is one timed repetition of one operation on one system. A *result* is the summary of
a system's samples for one figure: median with min-max, plus the median p50/p99 latency. A
*figure* sets mydfs beside the peer (SeaweedFS) and the machine's limit for one operation at one
client count, and records what each side measured (bytes, copies, fsync), so that unlike things
are flagged instead of silently compared.

Ratios are always "mydfs relative to the other", oriented so that **> 1 means mydfs is better**:
for throughput it is ``mydfs / other``; for figures where lower is better (seconds to recover)
it is ``other / mydfs``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

#: The keys of :attr:`Result.measured` that must agree for two results to be compared plainly.
COMPARED_KEYS = ("bytes_per_op", "copies", "fsync")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


@dataclass
class Sample:
    """One timed repetition: its headline value and what went into it."""

    value: float | None
    ops: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    first_error: str = ""


@dataclass
class Result:
    """One system's summary for one figure."""

    system: str
    median: float | None
    min: float | None
    max: float | None
    samples: list[float | None]
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    measured: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @classmethod
    def of(
        cls, system: str, samples: list[Sample], measured: dict[str, Any], note: str = ""
    ) -> Result:
        values = [s.value for s in samples if s.value is not None]
        p50 = [s.p50_ms for s in samples if s.p50_ms is not None]
        p99 = [s.p99_ms for s in samples if s.p99_ms is not None]
        errors = sum(s.errors for s in samples)
        first = next((s.first_error for s in samples if s.first_error), "")
        if first and not note:
            note = f"{errors} failed ops; first: {first}"
        return cls(
            system=system,
            median=statistics.median(values) if values else None,
            min=min(values) if values else None,
            max=max(values) if values else None,
            samples=[s.value for s in samples],
            p50_ms=statistics.median(p50) if p50 else None,
            p99_ms=statistics.median(p99) if p99 else None,
            errors=errors,
            measured=dict(measured),
            note=note,
        )


@dataclass
class Limit:
    """The machine's bound for a figure, and how it was obtained."""

    value: float
    what: str
    min: float | None = None
    max: float | None = None
    measured: dict[str, Any] = field(default_factory=dict)
    #: A few words for tables and charts, e.g. "disk/3" or "null HTTP".
    label: str = ""


@dataclass
class Figure:
    """mydfs beside the peer and the limit, for one operation at one client count."""

    workload: str
    op: str
    clients: int
    unit: str
    higher_is_better: bool
    mydfs: Result | None
    peer: Result | None
    limit: Limit | None
    notes: list[str] = field(default_factory=list)
    #: Why there is no peer figure, when the peer has no equivalent operation ('' otherwise).
    peer_absent: str = ""

    @property
    def key(self) -> str:
        return f"{self.workload}/{self.op}/N={self.clients}"

    def _ratio(self, other: float | None) -> float | None:
        mine = self.mydfs.median if self.mydfs else None
        if mine is None or other is None or mine <= 0 or other <= 0:
            return None
        return mine / other if self.higher_is_better else other / mine

    @property
    def ratio_peer(self) -> float | None:
        return self._ratio(self.peer.median if self.peer else None)

    @property
    def ratio_limit(self) -> float | None:
        return self._ratio(self.limit.value if self.limit else None)

    def unlike(self) -> list[str]:
        """How what the peer measured differs from what mydfs measured (empty if alike)."""
        if self.mydfs is None or self.peer is None:
            return []
        out = []
        for key in COMPARED_KEYS:
            a, b = self.mydfs.measured.get(key), self.peer.measured.get(key)
            if a is not None and b is not None and a != b:
                out.append(f"{key}: mydfs {a}, SeaweedFS {b}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = self.key
        d["ratio_to_peer"] = self.ratio_peer
        d["ratio_to_limit"] = self.ratio_limit
        d["unlike"] = self.unlike()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Figure:
        def result(r: dict[str, Any] | None) -> Result | None:
            return None if r is None else Result(**r)

        lim = d.get("limit")
        return cls(
            workload=d["workload"],
            op=d["op"],
            clients=int(d["clients"]),
            unit=d["unit"],
            higher_is_better=bool(d["higher_is_better"]),
            mydfs=result(d.get("mydfs")),
            peer=result(d.get("peer")),
            limit=None if lim is None else Limit(**lim),
            notes=list(d.get("notes") or []),
            peer_absent=str(d.get("peer_absent") or ""),
        )


def summary(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max) of a non-empty list."""
    return statistics.median(values), min(values), max(values)
