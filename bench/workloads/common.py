"""Helpers the workloads share: the limits of operation-based figures, figures of mydfs alone."""

from __future__ import annotations

from mydfs.bench.figures import Figure, Limit, Result
from mydfs.bench.suite import Context


def mydfs_only(
    workload: str,
    op: str,
    clients: int,
    unit: str,
    mine: Result,
    *,
    limit: Limit | None,
    notes: list[str],
    peer_absent: str,
    higher_is_better: bool = True,
) -> Figure:
    """A figure measured on mydfs alone; ``peer_absent`` says why the peer has none."""
    return Figure(
        workload=workload,
        op=op,
        clients=clients,
        unit=unit,
        higher_is_better=higher_is_better,
        mydfs=mine,
        peer=None,
        limit=limit,
        notes=notes,
        peer_absent=peer_absent,
    )


def ops_limit(
    ctx: Context,
    null: Result | None,
    op: str,
    size: int,
    clients: int,
) -> Limit | None:
    """The bound on operations per second for ``op`` of ``size`` bytes at ``clients`` clients.

    The lowest of: the same client loop against the null HTTP server (an operation needs at
    least one request); for writes, the disk's fresh-block bandwidth shared by 3 copies, in
    operations of this size; and, for a single client, one durable 4 KiB append per write.
    """
    candidates: list[tuple[float, str, str, float | None, float | None]] = []
    if null is not None and null.median is not None:
        candidates.append(
            (
                null.median,
                "null HTTP",
                f"the same client loop against a null HTTP server ({null.median:,.0f}/s)",
                null.min,
                null.max,
            )
        )
    if op == "write":
        disk = ctx.limits.get("disk")
        if disk is not None and size > 0:
            ops = disk.median / 3 * 1e6 / size
            candidates.append(
                (
                    ops,
                    "disk/3",
                    f"disk bandwidth / 3 copies ({ops:,.0f}/s of {size:,} B)",
                    None,
                    None,
                )
            )
        append = ctx.limits.get("append")
        if append is not None and clients == 1:
            candidates.append(
                (
                    append.median,
                    "dsync append",
                    f"one 4 KiB O_DSYNC append per write ({append.median:,.0f}/s)",
                    None,
                    None,
                )
            )
    if not candidates:
        return None
    value, label, what, lo, hi = min(candidates, key=lambda c: c[0])
    others = "; ".join(c[2] for c in candidates if c[2] != what)
    return Limit(
        value=value,
        what=what,
        min=lo,
        max=hi,
        measured={"other_bounds": others, "null": _dict(null)},
        label=label,
    )


def _dict(r: Result | None) -> dict[str, object] | None:
    if r is None:
        return None
    return {"median": r.median, "min": r.min, "max": r.max, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}
