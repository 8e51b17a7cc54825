"""One directory's children packed into two buffers: about 7 bytes per file beyond its name and
its packed entry, instead of a ``str`` and a ``bytes`` object and a dict slot (pure).

:class:`DirTable` maps a name to a file's packed entry (``bytes``, see
:mod:`mydfs.tracker.records`) or to ``None`` for a subdirectory, with the part of the ``dict``
interface the namespace uses, and iterates in name order. Layout:

* ``blob`` (a ``bytearray``) holds one record per child: ``u8 name length | name (UTF-8) |
  varint value length | value``, value length 0 meaning a subdirectory (a packed entry is never
  empty);
* ``index`` (an ``array('I')``) holds the offsets of the live records, sorted by name (UTF-8
  byte order, which is code point order, so the same order as ``sorted()`` of the names).

A lookup is a binary search over ``index``. Replacing a child with a value of the same size
rewrites its record in place; otherwise the new record is appended and the old one becomes
garbage, counted in ``dead``; once garbage is more than half of the blob (and at least
:data:`COMPACT_MIN` bytes), the blob is rewritten in index order. Inserting a new name moves
the offsets after it (4 bytes each): a directory of a million files costs about a
millisecond per insert, which the tracker's request handling dwarfs.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from mydfs.common.errors import InvalidArgument

#: Bytes of garbage a table keeps before it is compacted, whatever its size.
COMPACT_MIN = 64 * 1024
#: Largest blob the 32-bit offsets address.
MAX_BLOB = 2**32 - 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class DirTable:
    """name → packed entry (or None: a subdirectory), in name order; see the module doc."""

    __slots__ = ("_blob", "_dead", "_index")

    def __init__(self) -> None:
        self._blob = bytearray()
        self._index = array("I")
        self._dead = 0

    # --- records ---------------------------------------------------------------------------

    def _key_at(self, off: int) -> bytearray:
        n = self._blob[off]
        return self._blob[off + 1 : off + 1 + n]

    def _value_span(self, off: int) -> tuple[int, int]:
        """(start, length) of the value of the record at ``off``."""
        blob = self._blob
        pos = off + 1 + blob[off]
        length = shift = 0
        while True:
            byte = blob[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                return pos, length
            shift += 7

    def _value_at(self, off: int) -> bytes | None:
        start, length = self._value_span(off)
        return None if length == 0 else bytes(self._blob[start : start + length])

    def _size_at(self, off: int) -> int:
        start, length = self._value_span(off)
        return start + length - off

    def _find(self, key: bytes) -> tuple[int, bool]:
        """Where ``key`` is (or would go) in the index, and whether it is there."""
        index, lo, hi = self._index, 0, len(self._index)
        if not hi or self._key_at(index[-1]) < key:
            return hi, False  # after the last name: the common case of loading a sorted listing
        while lo < hi:
            mid = (lo + hi) // 2
            if self._key_at(index[mid]) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo, lo < len(index) and self._key_at(index[lo]) == key

    @staticmethod
    def _encode(name: str) -> bytes:
        key = name.encode("utf-8")
        if not 0 < len(key) <= 255:
            raise InvalidArgument("a name is 1-255 bytes of UTF-8", name=name[:64])
        return key

    # --- the dict interface the namespace uses ------------------------------------------------

    def get(self, name: str, default: bytes | None = None) -> bytes | None:
        pos, found = self._find(self._encode(name))
        return self._value_at(self._index[pos]) if found else default

    def __getitem__(self, name: str) -> bytes | None:
        pos, found = self._find(self._encode(name))
        if not found:
            raise KeyError(name)
        return self._value_at(self._index[pos])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(self._encode(name))[1]

    def __setitem__(self, name: str, value: bytes | None) -> None:
        if value is not None and not value:
            raise InvalidArgument("an empty packed entry", name=name[:64])
        key = self._encode(name)
        record = (
            bytes([len(key)]) + key + _varint(0 if value is None else len(value)) + (value or b"")
        )
        pos, found = self._find(key)
        if found:
            old = self._index[pos]
            size = self._size_at(old)
            if size == len(record):
                self._blob[old : old + size] = record
                return
            self._dead += size
        if len(self._blob) + len(record) > MAX_BLOB:
            raise InvalidArgument("directory too large", name=name[:64])
        offset = len(self._blob)
        self._blob += record
        if found:
            self._index[pos] = offset
        else:
            self._index.insert(pos, offset)
        self._maybe_compact()

    def __delitem__(self, name: str) -> None:
        pos, found = self._find(self._encode(name))
        if not found:
            raise KeyError(name)
        self._dead += self._size_at(self._index[pos])
        del self._index[pos]
        self._maybe_compact()

    def __len__(self) -> int:
        return len(self._index)

    def __bool__(self) -> bool:
        return len(self._index) > 0

    def __iter__(self) -> Iterator[str]:
        for off in self._index:
            yield self._key_at(off).decode("utf-8")

    def items(self, after: str | None = None) -> Iterator[tuple[str, bytes | None]]:
        """Every child in name order; with ``after``, only the names greater than it (found by
        binary search: a page of a listing costs its own length, not the directory's)."""
        start = 0
        if after is not None:
            key = after.encode("utf-8")
            start, found = self._find(key)
            start += found
        for off in self._index[start:]:
            yield self._key_at(off).decode("utf-8"), self._value_at(off)

    def copy(self) -> DirTable:
        other = DirTable()
        other._blob = bytearray(self._blob)
        other._index = array("I", self._index)
        other._dead = self._dead
        return other

    @property
    def nbytes(self) -> int:
        """Bytes the two buffers use (allocation slack not counted)."""
        return len(self._blob) + self._index.itemsize * len(self._index)

    # --- compaction ----------------------------------------------------------------------------

    def _maybe_compact(self) -> None:
        if self._dead >= COMPACT_MIN and 2 * self._dead > len(self._blob):
            self.compact()

    def compact(self) -> None:
        """Rewrite the blob with only the live records, in name order."""
        blob, index = bytearray(), array("I")
        for off in self._index:
            index.append(len(blob))
            blob += self._blob[off : off + self._size_at(off)]
        self._blob, self._index, self._dead = blob, index, 0
