"""Strict parsing of request parameters: query strings, headers and URL parts (pure).

Every number a client sends in text goes through :func:`parse_uint`: ASCII digits only
(``str.isdigit`` also accepts ``²`` and other Unicode digits, which ``int`` then refuses), at most
:data:`MAX_DIGITS` of them (``int`` of a 5000-digit string raises, and would be slow), and inside
the bounds the caller gives. A bad value raises :class:`~mydfs.common.errors.InvalidArgument`
naming the parameter, so the error middleware answers 400 with a clear message and logs nothing.

:func:`parse_finite` does the same for decimal numbers (no ``nan``, ``inf``, ``1e300`` overflow),
:func:`parse_token` for short text values that end up in headers (no CR/LF or other control
characters), :func:`parse_flag` for ``1``/``0`` switches and :func:`parse_hex_id` for file ids.
"""

from __future__ import annotations

import math
import re

from mydfs.common.errors import InvalidArgument

#: Most digits a number may have: a u64 has 20; anything longer is refused before ``int``.
MAX_DIGITS = 20
#: Largest unsigned 64-bit value, the default upper bound.
MAX_U64 = (1 << 64) - 1
#: Longest text parameter accepted by :func:`parse_token`.
MAX_TOKEN = 256

_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")
_TOKEN = re.compile(r"[\x21-\x7e]*")
_HEX_ID = re.compile(r"[0-9a-f]{32}")


def is_uint_text(text: str) -> bool:
    """True for 1 to :data:`MAX_DIGITS` ASCII digits (what :func:`parse_uint` accepts), for
    parsers that report their own error."""
    return 0 < len(text) <= MAX_DIGITS and _DIGITS.fullmatch(text) is not None


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def parse_uint(
    text: str | None,
    name: str,
    *,
    lo: int = 0,
    hi: int = MAX_U64,
    default: int | None = None,
    required: bool = False,
    strip: bool = False,
) -> int | None:
    """The integer ``text`` spells, in ``lo..hi``; ``default`` when absent or empty.

    ``required`` turns an absent value into an error. ``strip`` allows surrounding blanks (as
    HTTP header values may carry). Anything but ASCII digits is refused: signs, ``_``, blanks
    inside, Unicode digits, more than :data:`MAX_DIGITS` digits.
    """
    if text is not None and strip:
        text = text.strip(" \t")
    if text is None or text == "":
        if required:
            raise InvalidArgument(f"{name} is required", field=name)
        return default
    if len(text) > MAX_DIGITS or not _DIGITS.fullmatch(text):
        raise InvalidArgument(
            f"{name}={_show(text)} is not an integer {lo}..{hi} (ASCII digits only)", field=name
        )
    value = int(text)
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name}={value} is out of range {lo}..{hi}", field=name)
    return value


def require_uint(text: str | None, name: str, *, lo: int = 0, hi: int = MAX_U64) -> int:
    """:func:`parse_uint` for a parameter that must be present."""
    value = parse_uint(text, name, lo=lo, hi=hi, required=True)
    assert value is not None
    return value


def parse_finite(text: str | None, name: str, *, lo: float, hi: float, default: float) -> float:
    """A plain decimal number (``123`` or ``123.456``, no sign or exponent) in ``lo..hi``."""
    if text is None or text == "":
        return default
    if len(text) > 41 or not _DECIMAL.fullmatch(text):
        raise InvalidArgument(f"{name}={_show(text)} is not a plain decimal number", field=name)
    value = float(text)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidArgument(f"{name}={_show(text)} is out of range {lo}..{hi}", field=name)
    return value


def parse_token(text: str | None, name: str, *, default: str = "", limit: int = MAX_TOKEN) -> str:
    """Printable ASCII without blanks (safe to echo in a header), at most ``limit`` long."""
    if text is None:
        return default
    if len(text) > limit or not _TOKEN.fullmatch(text):
        raise InvalidArgument(
            f"{name}={_show(text)} must be at most {limit} printable ASCII characters", field=name
        )
    return text


def parse_flag(text: str | None, name: str) -> bool:
    """``1``/``true``/``yes`` or ``0``/``false``/``no``/empty/absent."""
    value = (text or "0").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise InvalidArgument(f"query parameter {name}={_show(text or '')} must be 1 or 0", field=name)


def parse_hex_id(text: str | None, name: str, *, required: bool = True) -> str | None:
    """A file id: exactly 32 lowercase hex digits."""
    if text is None or text == "":
        if required:
            raise InvalidArgument(f"{name} is required (32 lowercase hex digits)", field=name)
        return None
    if not _HEX_ID.fullmatch(text):
        raise InvalidArgument(f"{name}={_show(text)} must be 32 lowercase hex digits", field=name)
    return text
