"""The plan of an in-place edit of a file (pure: no I/O, deterministic).

An edit replaces the consecutive slices ``[i, j]`` of a file's chain by new slices holding
``old_i[:a] ++ middle ++ old_j[b:]`` (``docs/client.md``, "Editing files"). This module turns
an operation (:class:`Op`: write, append, truncate, insert, cut) and the file's chain (the
:class:`~mydfs.common.readpath.SliceLoc` list a walk returned, with each slice's ``via``) into
a :class:`Plan`:

* which slices are replaced (``i, j``) and how much of their old bytes stay (``a``, ``b``);
* the new content as :data:`Segment` s (old bytes, zeros, the caller's data) and the new
  slices' lengths (:meth:`Plan.pieces` cuts the content into them);
* whether the layout changes, the new size and slice count, what happens to the tracker's
  head, and per group the ``lock`` / ``move`` / ``new`` sets of the participants' ``prepare``
  once the new slots are known (:func:`prepares`).

Rules (the contract, ``EDIT_PLAN.md``):

* The new content is never empty: when it would be, the range grows by one neighbour slice
  (``i - 1`` kept whole when ``i > 0``, else ``j + 1`` kept whole when it exists); when there
  is no neighbour, the whole file goes (no new slices, head cleared).
* New slices are full (``PAYLOAD_CAPACITY``) except the last, unless the edit preserves the
  layout (an overwrite inside the current size): then they have exactly the replaced slices'
  lengths. A slice is never empty.
* The **entry point** of slice ``k`` is the slot its predecessor's pointer names: the first of
  its ``via`` slots, else its live slot. The entry point of slice ``i`` becomes a 301 to the
  first new slice (``move``); every other old slot of the range (intermediates, live slots,
  the later slices' entry points) is locked and dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mydfs.common.errors import InvalidArgument
from mydfs.common.location import Location
from mydfs.common.readpath import SliceLoc
from mydfs.common.slices import PAYLOAD_CAPACITY

#: Largest file an edit may produce (as many slices as a file may have, all full).
MAX_FILE_SIZE = 1_000_000 * PAYLOAD_CAPACITY

#: Most slots one participant's ``prepare`` may lock, and most new slices it may name.
MAX_PREPARE = 4096

OpKind = Literal["write", "append", "truncate", "insert", "cut"]
HeadChange = Literal["keep", "set", "clear"]


@dataclass(frozen=True)
class Old:
    """``length`` bytes of old slice ``index`` from its byte ``offset``."""

    index: int
    offset: int
    length: int


@dataclass(frozen=True)
class Zeros:
    """``length`` zero bytes."""

    length: int


@dataclass(frozen=True)
class Data:
    """``length`` bytes of the caller's data from its byte ``offset``."""

    offset: int
    length: int


Segment = Old | Zeros | Data


@dataclass(frozen=True)
class Op:
    """An edit operation. ``offset``: where (truncate: the new size); ``length``: the data's
    length (write, append, insert) or the bytes removed (cut)."""

    kind: OpKind
    offset: int = 0
    length: int = 0

    @classmethod
    def write(cls, offset: int, length: int) -> Op:
        return cls("write", offset, length)

    @classmethod
    def append(cls, length: int) -> Op:
        return cls("append", 0, length)

    @classmethod
    def truncate(cls, size: int) -> Op:
        return cls("truncate", size, 0)

    @classmethod
    def insert(cls, offset: int, length: int) -> Op:
        return cls("insert", offset, length)

    @classmethod
    def cut(cls, offset: int, length: int) -> Op:
        return cls("cut", offset, length)

    @property
    def data_length(self) -> int:
        """Bytes of the caller's data this operation consumes."""
        return self.length if self.kind in ("write", "append", "insert") else 0


@dataclass(frozen=True)
class Splice:
    """File bytes ``[start, stop)`` become ``middle``; ``data_at``: the file offset where the
    caller's data lands (append's answer)."""

    start: int
    stop: int
    middle: tuple[Segment, ...]
    preserving: bool
    data_at: int


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise InvalidArgument(f"{name} must not be negative, got {value}", **{name: value})
    return value


def splice_of(op: Op, size: int) -> Splice | None:
    """What ``op`` does to a file of ``size`` bytes; None when it changes nothing (data of
    length 0, truncate to the current size, a cut of 0 bytes). :class:`InvalidArgument` for a
    negative or out-of-range offset or length, or a result past :data:`MAX_FILE_SIZE`."""
    off = _int(op.offset, "offset" if op.kind != "truncate" else "size")
    n = _int(op.length, "length")
    if op.kind == "append":
        off = size
    splice: Splice | None
    if op.kind in ("write", "append"):
        if off > size:
            middle: tuple[Segment, ...] = (Zeros(off - size), Data(0, n))
            splice = Splice(size, size, middle, False, off)
        else:
            stop = min(size, off + n)
            splice = Splice(off, stop, (Data(0, n),), off + n <= size, off)
        splice = None if n == 0 else splice
    elif op.kind == "truncate":
        if off < size:
            splice = Splice(off, size, (), False, off)
        else:
            splice = Splice(size, size, (Zeros(off - size),), False, size) if off > size else None
    elif op.kind == "insert":
        if off > size:
            raise InvalidArgument(
                f"insert offset {off} is past the end of the file ({size} bytes)",
                offset=off,
                size=size,
            )
        splice = Splice(off, off, (Data(0, n),), False, off) if n else None
    elif op.kind == "cut":
        if off + n > size:
            raise InvalidArgument(
                f"cut of {n} bytes at {off} goes past the end of the file ({size} bytes)",
                offset=off,
                length=n,
                size=size,
            )
        splice = Splice(off, off + n, (), False, off) if n else None
    else:
        raise InvalidArgument(f"unknown edit operation {op.kind!r}")
    if splice is not None:
        new_size = size - (splice.stop - splice.start) + sum(s.length for s in splice.middle)
        if new_size > MAX_FILE_SIZE:
            raise InvalidArgument(
                f"the file would grow to {new_size} bytes, past the limit of {MAX_FILE_SIZE}",
                size=new_size,
            )
    return splice


def entry_point(loc: SliceLoc) -> tuple[int, int]:
    """The slot (and generation) the predecessor's pointer names for ``loc``: its first 301
    slot, else its live slot."""
    return loc.via[0] if loc.via else (loc.slot, loc.generation)


def old_slots(loc: SliceLoc) -> list[tuple[int, int]]:
    """Every slot of ``loc``'s group an edit replacing it changes: the 301 slots it was reached
    through and its live slot."""
    return [*loc.via, (loc.slot, loc.generation)]


def cut_lengths(total: int, capacity: int = PAYLOAD_CAPACITY) -> tuple[int, ...]:
    """``total`` bytes as full slices of ``capacity`` and a shorter last one (none for 0)."""
    full, rest = divmod(total, capacity)
    return (capacity,) * full + ((rest,) if rest else ())


@dataclass(frozen=True)
class Plan:
    """What one edit does; ``i == j == -1`` when no old slice is replaced (an empty file)."""

    size_before: int
    size: int  # the file's size after the edit
    slices: int  # its slice count after the edit
    i: int
    j: int
    a: int
    b: int
    content: tuple[Segment, ...]  # the new slices' bytes, in order
    lengths: tuple[int, ...]  # the new slices' lengths
    layout_change: bool
    head: HeadChange
    home: int | None  # the group of the new slices (None: the tracker's placement decides)
    next: Location | None  # what the last new slice points at
    move: tuple[int, int] | None  # slice i's entry point (slot, generation), in ``home``
    locks: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]  # (group, old slots), by group
    data_at: int  # the file offset where the caller's data lands

    def pieces(self) -> list[tuple[Segment, ...]]:
        """The content cut into the new slices (one tuple of segments per slice)."""
        out: list[tuple[Segment, ...]] = []
        segments = list(self.content)
        k = 0
        for want in self.lengths:
            got: list[Segment] = []
            while want:
                seg = segments[k]
                take = min(want, seg.length)
                got.append(_head_of(seg, take))
                want -= take
                if take == seg.length:
                    k += 1
                else:
                    segments[k] = _tail_of(seg, take)
            out.append(tuple(got))
        return out


def _head_of(seg: Segment, n: int) -> Segment:
    if isinstance(seg, Old):
        return Old(seg.index, seg.offset, n)
    if isinstance(seg, Data):
        return Data(seg.offset, n)
    return Zeros(n)


def _tail_of(seg: Segment, n: int) -> Segment:
    if isinstance(seg, Old):
        return Old(seg.index, seg.offset + n, seg.length - n)
    if isinstance(seg, Data):
        return Data(seg.offset + n, seg.length - n)
    return Zeros(seg.length - n)


def _slice_at(ends: Sequence[int], pos: int) -> int:
    """The index of the slice holding byte ``pos`` (``ends``: each slice's end offset)."""
    lo, hi = 0, len(ends) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ends[mid] > pos:
            hi = mid
        else:
            lo = mid + 1
    return lo


def plan(locs: Sequence[SliceLoc], op: Op, capacity: int = PAYLOAD_CAPACITY) -> Plan | None:
    """The plan of ``op`` on the file whose chain is ``locs`` (None: a no-op); ``capacity``:
    the bytes of a full slice (smaller in tests)."""
    lengths = [loc.length for loc in locs]
    if any(n <= 0 or n > capacity for n in lengths):
        raise InvalidArgument(f"a chain slice holds 0 or more than {capacity} bytes")
    size = sum(lengths)
    splice = splice_of(op, size)
    if splice is None:
        return None
    m = sum(s.length for s in splice.middle)
    new_size = size - (splice.stop - splice.start) + m
    if not locs:
        if len(cut_lengths(m, capacity)) > MAX_PREPARE:
            raise InvalidArgument(
                f"the edit would write more than {MAX_PREPARE} slices; split it into smaller edits"
            )
        return Plan(
            size_before=0,
            size=new_size,
            slices=len(cut_lengths(m, capacity)),
            i=-1,
            j=-1,
            a=0,
            b=0,
            content=splice.middle,
            lengths=cut_lengths(m, capacity),
            layout_change=True,
            head="set",
            home=None,
            next=None,
            move=None,
            locks=(),
            data_at=splice.data_at,
        )
    ends = list(itertools.accumulate(lengths))
    starts = [e - n for e, n in zip(ends, lengths, strict=True)]
    last = len(locs) - 1
    i = last if splice.start >= size else _slice_at(ends, splice.start)
    a = splice.start - starts[i]
    if splice.stop > splice.start:
        j = _slice_at(ends, splice.stop - 1)
        b = splice.stop - starts[j]
    else:
        j, b = i, a
    if a + m + lengths[j] - b == 0:  # the new content would be empty: take in a neighbour
        if i > 0:
            i -= 1
            a = lengths[i]
        elif j < last:
            j += 1
            b = 0
    content: list[Segment] = []
    if a:
        content.append(Old(i, 0, a))
    content += splice.middle
    if lengths[j] - b:
        content.append(Old(j, b, lengths[j] - b))
    total = sum(s.length for s in content)
    new_lengths = tuple(lengths[i : j + 1]) if splice.preserving else cut_lengths(total, capacity)
    locks: dict[int, list[tuple[int, int]]] = {}
    for loc in locs[i : j + 1]:
        locks.setdefault(loc.group, []).extend(old_slots(loc))
    too_many = [g for g, slots in locks.items() if len(slots) > MAX_PREPARE]
    if len(new_lengths) > MAX_PREPARE or too_many:
        raise InvalidArgument(
            f"the edit would replace or write more than {MAX_PREPARE} slices in one group;"
            " split it into smaller edits",
            new_slices=len(new_lengths),
        )
    whole = total == 0
    after = None if j == last else locs[j + 1]
    return Plan(
        size_before=size,
        size=new_size,
        slices=len(locs) - (j - i + 1) + len(new_lengths),
        i=i,
        j=j,
        a=a,
        b=b,
        content=tuple(content),
        lengths=new_lengths,
        layout_change=not splice.preserving,
        head="clear" if whole else "keep",
        home=None if whole else locs[i].group,
        next=None if after is None else Location(after.group, entry_point(after)[0]),
        move=None if whole else entry_point(locs[i]),
        locks=tuple((g, tuple(slots)) for g, slots in sorted(locks.items())),
        data_at=splice.data_at,
    )


@dataclass(frozen=True)
class Prepare:
    """One participant's share of an edit: the body of ``POST /edits/{txn}/prepare``."""

    group: int
    lock: tuple[tuple[int, int], ...]
    move: tuple[int, int, tuple[int, int]] | None
    new: tuple[tuple[int, int], ...]

    def body(self, file_id: str) -> dict[str, Any]:
        move = None
        if self.move is not None:
            slot, gen, (group, target) = self.move
            move = [slot, gen, [group, target]]
        return {
            "file_id": file_id,
            "lock": [list(s) for s in self.lock],
            "move": move,
            "new": [list(s) for s in self.new],
        }


def prepares(p: Plan, new: Sequence[tuple[int, int, int]]) -> list[Prepare]:
    """Every participant's ``prepare``, by group, once the new slices (``(group, slot,
    generation)`` in chain order) are written."""
    if len(new) != len(p.lengths):
        raise InvalidArgument(f"{len(p.lengths)} new slices planned, {len(new)} written")
    if p.home is not None and any(g != p.home for g, _, _ in new):
        raise InvalidArgument("the new slices of an edit must all be in its home group")
    groups = {g for g, _ in p.locks} | {g for g, _, _ in new}
    locks = dict(p.locks)
    out = []
    for g in sorted(groups):
        move = None
        if p.move is not None and g == p.home:
            first = new[0]
            move = (p.move[0], p.move[1], (first[0], first[1]))
        out.append(
            Prepare(
                group=g,
                lock=tuple(locks.get(g, ())),
                move=move,
                new=tuple((s, gen) for grp, s, gen in new if grp == g),
            )
        )
    return out
