"""File paths of the mydfs namespace, checked the same way by the client and the tracker.

A path is absolute and POSIX-shaped: ``/`` followed by one or more components joined by ``/``,
for example ``/data/d0042/f000123.bin``. A path is **rejected, never repaired**: nothing is
normalised silently, so what the caller sees is what the tracker stores.

Rejected (:class:`~mydfs.common.errors.InvalidPath`, with the path in its context):

* not starting with ``/`` (relative paths), or the empty path;
* a component ``.`` or ``..``;
* an empty component (``//``) or a trailing ``/``;
* NUL or any other control character (Unicode category ``Cc``: U+0000-U+001F, U+007F-U+009F);
* text that is not valid Unicode (lone surrogates, e.g. from undecodable bytes);
* text not in Unicode normal form C (NFC): ``café`` typed as ``e`` + U+0301 would otherwise be
  a second file that looks the same as the precomposed one, so the caller normalises first;
* a component longer than :data:`MAX_COMPONENT_BYTES` or a path longer than
  :data:`MAX_PATH_BYTES`, both counted in UTF-8 bytes.

The root ``/`` is a directory, never a file: :func:`check_file_path` rejects it and
:func:`check_dir_path` accepts it. In URLs a path is sent with every component percent-quoted
(:func:`url_quote`), so ``/a b/c%`` travels as ``/a%20b/c%25``. A quoted ``/`` (``%2F``) in a
URL is refused (:func:`from_url`): a name cannot hold a ``/``, so it can only be a disguised
separator.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote_to_bytes

from mydfs.common.errors import InvalidPath

#: Longest component (file or directory name), in UTF-8 bytes (as Linux's NAME_MAX).
MAX_COMPONENT_BYTES = 255
#: Longest path, in UTF-8 bytes (as Linux's PATH_MAX).
MAX_PATH_BYTES = 4096

ROOT = "/"


def _bad(path: str, why: str) -> InvalidPath:
    return InvalidPath(f"invalid path {path!r}: {why}", path=path)


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_file_path(path: str) -> str:
    """Return ``path`` unchanged if it is a valid file path, else raise :class:`InvalidPath`."""
    if not isinstance(path, str):
        raise InvalidPath(f"invalid path {path!r}: not a string", path=repr(path))
    if path == ROOT:
        raise _bad(path, "the root is a directory, not a file")
    return _check(path)


def check_dir_path(path: str) -> str:
    """Like :func:`check_file_path`, but the root ``/`` is accepted."""
    if not isinstance(path, str):
        raise InvalidPath(f"invalid path {path!r}: not a string", path=repr(path))
    if path == ROOT:
        return path
    return _check(path)


def _check(path: str) -> str:
    if not path:
        raise _bad(path, "empty")
    if not path.startswith("/"):
        raise _bad(path, "not absolute (must start with '/')")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(path, "not valid Unicode") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise _bad(path, f"longer than {MAX_PATH_BYTES} bytes ({len(encoded)})")
    if path.endswith("/"):
        raise _bad(path, "trailing '/'")
    control = _CONTROL.search(path)
    if control is not None:
        ch = control.group()
        what = "NUL" if ch == "\x00" else f"control character U+{ord(ch):04X}"
        raise _bad(path, f"contains {what}")
    for part in path[1:].split("/"):
        if part == "":
            raise _bad(path, "empty component ('//')")
        if part in (".", ".."):
            raise _bad(path, f"component {part!r} is not allowed")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise _bad(path, f"a component is longer than {MAX_COMPONENT_BYTES} bytes")
    if not unicodedata.is_normalized("NFC", path):
        raise _bad(path, "not in Unicode normal form NFC (normalize the name first)")
    return path


def split(path: str) -> tuple[str, str]:
    """``"/a/b/c"`` → ``("/a/b", "c")``; ``"/c"`` → ``("/", "c")``. ``path`` must be valid."""
    parent, _, name = path.rpartition("/")
    return (parent or ROOT), name


def join(parent: str, name: str) -> str:
    """The inverse of :func:`split`."""
    return ("/" + name) if parent == ROOT else (parent + "/" + name)


def parents(path: str) -> list[str]:
    """Every ancestor directory of ``path`` below the root, outermost first.

    ``"/a/b/c"`` → ``["/a", "/a/b"]``.
    """
    out: list[str] = []
    pos = path.find("/", 1)
    while pos != -1:
        out.append(path[:pos])
        pos = path.find("/", pos + 1)
    return out


def url_quote(path: str) -> str:
    """Percent-quote every component of a valid path for a URL; the ``/`` separators stay."""
    return "/".join(quote(part, safe="") for part in path.split("/"))


def from_url(raw: str, *, directory: bool = False) -> str:
    """Decode a raw (still percent-quoted) URL path tail into a checked path.

    ``raw`` is what follows the route prefix, without the leading ``/``, e.g. ``"a/b%20c"``
    → ``"/a/b c"``. Bytes that are not UTF-8 are rejected rather than replaced.
    """
    if "%2f" in raw.lower():
        raise InvalidPath(
            f"invalid path {raw[:200]!r}: an encoded '/' (%2F) is not allowed", path=raw[:200]
        )
    data = unquote_to_bytes(raw)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath(
            f"invalid path {raw!r}: not UTF-8 after percent-decoding", path=raw
        ) from None
    path = "/" + text
    if directory:
        return check_dir_path(ROOT if text == "" else path)
    return check_file_path(path)
