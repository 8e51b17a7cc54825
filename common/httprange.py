"""Parsing one HTTP ``Range: bytes=...`` header against a known size (RFC 9110 §14)."""

from __future__ import annotations

from mydfs.common.errors import InvalidArgument
from mydfs.common.params import is_uint_text


class RangeNotSatisfiable(InvalidArgument):
    code = "range_not_satisfiable"
    status = 416


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(offset, length)`` for a single byte range, or None for the whole entity.

    Multiple ranges are refused (``InvalidArgument``); a range that starts past the end raises
    :class:`RangeNotSatisfiable` (416). ``bytes=-N`` is the last N bytes.
    """
    if header is None or not header.strip():
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise InvalidArgument(f"unsupported Range {header!r}: only bytes ranges")
    spec = spec.strip()
    if "," in spec:
        raise InvalidArgument("multiple ranges are not supported; ask for one range")
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not is_uint_text(first)) or (last and not is_uint_text(last)):
        raise InvalidArgument(f"malformed Range {header[:80]!r}")
    if not first:
        if not last:
            raise InvalidArgument(f"malformed Range {header!r}")
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(
                f"range {header!r} selects nothing of {size} bytes", size=size
            )
        length = min(suffix, size)
        return size - length, length
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable(f"range starts at {start}, entity has {size} bytes", size=size)
    end = size - 1 if not last else min(int(last), size - 1)
    if end < start:
        raise InvalidArgument(f"malformed Range {header!r}: end before start")
    return start, end - start + 1
