"""The nemesis's bytes model (pure: no I/O, no clock): the bytes every write operation puts
into a file, how an operation changes a file's content, and what a read's bytes contain.

Every byte string a write operation brings (a put's whole content, the data of a write,
append or insert) is :func:`content` of (client, seq, path, n): a self-checking header that
names the three, then pseudo-random bytes. Edits splice such pieces together, so a file's
content is a patchwork; a header cut in two by a later edit no longer checks (its CRC), so
:func:`markers` finds only whole headers. A read's bytes are summed up by :func:`classify`
(size, sha256, the headers found), which is all the checker needs: it compares hashes with
the versions it replays (:func:`apply`) and names the paths whose bytes a wrong read holds.
"""

from __future__ import annotations

import hashlib
import random
import re
import zlib
from typing import Any

MAGIC = b"NEM2"
#: A slice's payload (``common/slices.py``): a file "just over one slice" has two slices.
SLICE = 4 * 1024 * 1024 - 4096
#: The write operations: ``put`` and ``delete`` and the in-place edits.
EDITS = ("write", "append", "truncate", "insert", "cut")
WRITES = ("put", "delete", *EDITS)
_HEADER = re.compile(rb"NEM2 (\d+) (\d+) (\d+) (/nem/c\d+/f\d+) ([0-9a-f]{8})\n")
#: At most this many headers are reported per read.
MAX_MARKERS = 16


def _crc(client: int, seq: int, n: int, path: str) -> bytes:
    return b"%08x" % zlib.crc32(b"%d %d %d %s" % (client, seq, n, path.encode()))


def content(client: int, seq: int, path: str, n: int) -> bytes:
    """Exactly ``n`` bytes that operation ``seq`` of ``client`` brings to ``path``: a header
    naming all three (with a CRC, so a partial header never counts), then pseudo-random bytes;
    cut short when ``n`` is smaller than the header."""
    head = b"%s %d %d %d %s %s\n" % (
        MAGIC,
        client,
        seq,
        n,
        path.encode(),
        _crc(client, seq, n, path),
    )
    if n <= len(head):
        return head[:n]
    return head + random.Random(f"{client}:{seq}").randbytes(n - len(head))


def markers(data: bytes) -> list[tuple[int, int, str]]:
    """The whole, valid headers in ``data``: (client, seq, path) of each, first ones first."""
    out: list[tuple[int, int, str]] = []
    for m in _HEADER.finditer(data):
        client, seq, n, path = int(m[1]), int(m[2]), int(m[3]), m[4].decode()
        if m[5] == _crc(client, seq, n, path) and (client, seq, path) not in out:
            out.append((client, seq, path))
            if len(out) >= MAX_MARKERS:
                break
    return out


def classify(data: bytes) -> dict[str, Any]:
    """What a read returned, as the history records it: ``size``, ``sha256`` and ``markers``
    (the headers in it, ``[client, seq, path]`` each)."""
    return {
        "size": len(data),
        "sha256": sha(data),
        "markers": [list(m) for m in markers(data)],
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def apply(before: bytes | None, op: dict[str, Any]) -> bytes | None:
    """The content after write operation ``op`` (``op``, ``client``, ``seq``, ``path`` and its
    arguments: ``size`` for put, truncate; ``offset`` for write, insert, cut; ``n`` data bytes
    for write, append, insert; ``length`` for cut) applied to ``before`` (None: absent)."""
    kind = op["op"]
    if kind == "delete":
        return None
    if kind == "put":
        return content(int(op["client"]), int(op["seq"]), op["path"], int(op["size"]))
    if before is None:
        raise ValueError(f"{kind} of an absent file")
    cur = before
    if kind == "truncate":
        size = int(op["size"])
        return cur[:size] if size <= len(cur) else cur + bytes(size - len(cur))
    if kind == "cut":
        off, length = int(op["offset"]), int(op["length"])
        return cur[:off] + cur[off + length :]
    data = content(int(op["client"]), int(op["seq"]), op["path"], int(op["n"]))
    if kind == "append":
        return cur + data
    off = int(op["offset"])
    if kind == "insert":
        return cur[:off] + data + cur[off:]
    if kind == "write":
        if off > len(cur):
            cur += bytes(off - len(cur))
        return cur[:off] + data + cur[off + len(data) :]
    raise ValueError(f"not a write operation: {kind}")


def expected(version: bytes, offset: int, length: int | None) -> bytes:
    """What a read of ``[offset, offset+length)`` (to the end when ``length`` is None) of a
    file holding ``version`` returns."""
    return version[offset:] if length is None else version[offset : offset + length]
