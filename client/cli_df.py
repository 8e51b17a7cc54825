"""``mydfs df``: the table of space per group and for the cluster (``GET /space``)."""

from __future__ import annotations

from typing import Any

#: The columns, in the order of ``GET /space``'s figures (docs/collector.md).
KINDS = ("free", "live", "moved", "pending", "files", "trash", "orphan")
HEADERS = ("FREE", "LIVE", "301", "PENDING", "FILES", "TRASH", "ORPHAN")


def human(n: int) -> str:
    """Bytes as 4.0M, 1.2G, 512 (binary units)."""
    value = float(n)
    for unit in ("", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            return f"{int(value)}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError(n)


def _cell(fig: dict[str, int]) -> str:
    return f"{fig['slots']} ({human(fig['bytes'])})"


def rows(space: dict[str, Any]) -> list[tuple[str, ...]]:
    """The table: a header, one row per group (slots and bytes per kind), the cluster's."""
    out: list[tuple[str, ...]] = [("GROUP", *HEADERS)]
    for g in space.get("groups", []):
        if not g.get("report"):
            out.append((str(g["group"]), *("?" for _ in KINDS)))
            continue
        out.append((str(g["group"]), *(_cell(g[k]) for k in KINDS)))
    total = space.get("cluster") or {}
    if total:
        out.append(("all", *(_cell(total[k]) for k in KINDS)))
    return out


def print_df(space: dict[str, Any]) -> None:
    table = rows(space)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(
        "slots (bytes). LIVE/301/PENDING: slot states; FILES, TRASH, ORPHAN: what references "
        f"them (orphans: unreferenced for over {space.get('grace', '?')} s; '?': no report)"
    )
