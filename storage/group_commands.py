"""Typed commands of a storage group's replicated slot table.

The group state machine (:mod:`mydfs.storage.group_state`) is driven only by these commands, in
Raft log order. Each command travels through the log as a small dict of JSON types (``str``,
``int``, ``None`` and lists), built by :meth:`Command.to_dict` and rebuilt by
:func:`decode_command`.

Decoding is strict. Every key of the command must be present (``to_dict`` always writes all of
them, with ``None`` for "no value"), no other key may be present, and every value must have the
exact type and range documented on the field: ``True`` is not an integer, ``1.0`` is not an
integer, a list is not a tuple of holders with duplicates, and so on. Anything else raises
:class:`~mydfs.common.errors.InvalidArgument` (or its subclasses :class:`SlotOutOfRange` and
:class:`PayloadTooLarge`) whose context names the ``op`` and the ``field``.

Constructing a command in Python runs the very same checks (and normalises ``[group, slot]``
lists to :class:`Location` and holder lists to sorted tuples), so a leader cannot submit a
command that its followers would refuse to decode.

The field vocabulary is shared by all commands:

===============  =======================================================================
field            meaning and range
===============  =======================================================================
slot             slot number in the group's volumes, ``0 <= slot <= MAX_SLOT`` (2**64 - 2)
upload_id        idempotency key of one slice upload: 1-128 chars of ``[A-Za-z0-9._:-]``
file_id          owner file id: 32 lowercase hex digits (the header's 16-byte file id)
slice_index      position of the slice in its file, ``0 <= i < 2**32``
length           valid payload bytes, ``0 <= length <= PAYLOAD_CAPACITY`` (4,190,208)
crc32c           CRC-32C of the payload, ``0 <= crc < 2**32``
now_ms           leader's wall clock in ms (the machine never reads a clock itself)
next, target     a :class:`~mydfs.common.location.Location`; wire form ``[group, slot]``
holders          node ids that hold the payload durably; 1-16 distinct node ids
node             a node id: 1-128 printable ASCII characters, no spaces
generation       a slot write's generation number, ``1 <= g <= MAX_GENERATION``
max_slots        volume capacity in slots (``None`` = unbounded)
min_holders      holders a ``seal`` needs (1-16)
upload_window    how many sealed upload ids the retry index keeps (0-10,000,000)
===============  =======================================================================
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, Self

from mydfs.common.checksum import crc32c as _crc32c
from mydfs.common.errors import InvalidArgument, PayloadTooLarge, SlotOutOfRange
from mydfs.common.location import MAX_GROUP, MAX_SLOT, Location
from mydfs.storage.format import PAYLOAD_CAPACITY

MAX_SLICE_INDEX: Final = 2**32 - 1
_MAX_I64: Final = 2**63 - 1
MAX_GENERATION: Final = _MAX_I64
MAX_TIME_MS: Final = _MAX_I64
MAX_CRC32C: Final = 2**32 - 1
MAX_HOLDERS: Final = 16
MAX_UPLOAD_WINDOW: Final = 10_000_000
#: Largest payload a ``put`` command may carry inline (base64 keeps the command under
#: raft_ext's 60 KiB command bound; the journal holds every command in memory until the next
#: compaction, up to ``log_compaction_min_entries`` of them: 5000 x 22 KiB at most).
MAX_INLINE: Final = 16 * 1024

_UPLOAD_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_NODE_ID_RE: Final = re.compile(r"[!-~]{1,128}")
_FILE_ID_RE: Final = re.compile(r"[0-9a-f]{32}")


# --------------------------------------------------------------------------------------------
# field validation


def _short(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def check_int(
    raw: object,
    *,
    op: str,
    field: str,
    lo: int,
    hi: int,
    error: type[InvalidArgument] = InvalidArgument,
) -> int:
    """``raw`` as an ``int`` in ``[lo, hi]``; ``bool`` and ``float`` are refused."""
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise InvalidArgument(
            f"{field} must be an integer, not {type(raw).__name__}", op=op, field=field
        )
    if not lo <= raw <= hi:
        raise error(f"{field} must be in [{lo}, {hi}], got {raw}", op=op, field=field)
    return raw


def _check_str(raw: object, *, op: str, field: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(raw, str):
        raise InvalidArgument(
            f"{field} must be a string, not {type(raw).__name__}", op=op, field=field
        )
    if pattern.fullmatch(raw) is None:
        raise InvalidArgument(f"{field} must be {what}, got {_short(raw)}", op=op, field=field)
    return raw


def check_upload_id(raw: object, *, op: str, field: str = "upload_id") -> str:
    return _check_str(
        raw, op=op, field=field, pattern=_UPLOAD_ID_RE, what="1-128 chars of [A-Za-z0-9._:-]"
    )


def check_node_id(raw: object, *, op: str, field: str = "node") -> str:
    return _check_str(
        raw, op=op, field=field, pattern=_NODE_ID_RE, what="1-128 printable ASCII chars"
    )


def check_file_id(raw: object, *, op: str, field: str = "file_id") -> str:
    return _check_str(
        raw, op=op, field=field, pattern=_FILE_ID_RE, what="32 lowercase hex digits (16 bytes)"
    )


def check_holders(raw: object, *, op: str, field: str = "holders") -> tuple[str, ...]:
    """A list (or tuple) of 0-16 distinct node ids, returned sorted."""
    items = check_entries(raw, op, field, "node ids", MAX_HOLDERS)
    nodes = [check_node_id(n, op=op, field=field) for n in items]
    if len(set(nodes)) != len(nodes):
        raise InvalidArgument(f"{field} lists a node twice", op=op, field=field)
    return tuple(sorted(nodes))


def parse_location(raw: object, *, op: str, field: str) -> Location:
    """A :class:`~mydfs.common.location.Location` from itself or its wire form ``[group, slot]``,
    validated against the ranges the slot header can carry."""
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise InvalidArgument(f"{field} must be a [group, slot] pair", op=op, field=field)
    group = check_int(raw[0], op=op, field=f"{field}.group", lo=0, hi=MAX_GROUP)
    slot = check_int(raw[1], op=op, field=f"{field}.slot", lo=0, hi=MAX_SLOT, error=SlotOutOfRange)
    return Location(group, slot)


SlotRef = tuple[int, int]
"""A slice identity in this group: ``(slot, generation)``."""


def parse_slot_ref(raw: object, op: str, field: str) -> SlotRef:
    """A ``[slot, generation]`` pair (wire form) as a :data:`SlotRef`."""
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise InvalidArgument(f"{field} entries are [slot, generation] pairs", op=op, field=field)
    slot = check_int(raw[0], op=op, field=f"{field}.slot", lo=0, hi=MAX_SLOT, error=SlotOutOfRange)
    gen = check_int(raw[1], op=op, field=f"{field}.generation", lo=1, hi=MAX_GENERATION)
    return (slot, gen)


def check_entries(
    raw: object, op: str, field: str, shape: str, limit: int
) -> list[Any] | tuple[Any, ...]:
    """``raw`` as a list of at most ``limit`` entries (each ``shape``)."""
    if not isinstance(raw, list | tuple):
        raise InvalidArgument(
            f"{field} must be a list of {shape}, not {type(raw).__name__}", op=op, field=field
        )
    if len(raw) > limit:
        raise InvalidArgument(
            f"{field} has {len(raw)} entries, at most {limit} allowed", op=op, field=field
        )
    return raw


def check_distinct(slots: list[int], op: str, field: str) -> None:
    if len(set(slots)) != len(slots):
        raise InvalidArgument(f"{field} names a slot twice", op=op, field=field)


def parse_slot_refs(raw: object, op: str, field: str, limit: int) -> tuple[SlotRef, ...]:
    """At most ``limit`` ``[slot, generation]`` pairs, no slot twice."""
    items = check_entries(raw, op, field, "[slot, generation]", limit)
    refs = tuple(parse_slot_ref(item, op, field) for item in items)
    check_distinct([slot for slot, _ in refs], op, field)
    return refs


_Parser = Callable[[object, str, str], Any]
"""``parse(raw, op, field) -> value``: validate one field and return its normalised value."""


def _int_field(lo: int, hi: int, error: type[InvalidArgument] = InvalidArgument) -> _Parser:
    def parse(raw: object, op: str, field: str) -> int:
        return check_int(raw, op=op, field=field, lo=lo, hi=hi, error=error)

    return parse


def check_length(raw: object, *, op: str, field: str = "length") -> int:
    """A payload length: ``0 <= length <= PAYLOAD_CAPACITY`` (:class:`PayloadTooLarge` above)."""
    length = check_int(raw, op=op, field=field, lo=0, hi=_MAX_I64)
    if length > PAYLOAD_CAPACITY:
        raise PayloadTooLarge(
            f"{field} {length} exceeds a slice's payload capacity {PAYLOAD_CAPACITY}",
            op=op,
            field=field,
        )
    return length


def _location(raw: object, op: str, field: str) -> Location:
    return parse_location(raw, op=op, field=field)


_FIELD_PARSERS: Final[dict[str, _Parser]] = {
    "slot": _int_field(0, MAX_SLOT, SlotOutOfRange),
    "generation": _int_field(1, MAX_GENERATION),
    "upload_id": lambda raw, op, field: check_upload_id(raw, op=op, field=field),
    "file_id": lambda raw, op, field: check_file_id(raw, op=op, field=field),
    "slice_index": _int_field(0, MAX_SLICE_INDEX),
    "length": lambda raw, op, field: check_length(raw, op=op, field=field),
    "crc32c": _int_field(0, MAX_CRC32C),
    "now_ms": _int_field(0, MAX_TIME_MS),
    "next": _location,
    "target": _location,
    "holders": lambda raw, op, field: check_holders(raw, op=op, field=field),
    "node": lambda raw, op, field: check_node_id(raw, op=op, field=field),
    "max_slots": _int_field(1, MAX_SLOT + 1),
    "min_holders": _int_field(1, MAX_HOLDERS),
    "upload_window": _int_field(0, MAX_UPLOAD_WINDOW),
}


def _encode(value: object) -> object:
    if isinstance(value, Location):
        return [value.group, value.slot]
    if isinstance(value, tuple):
        return list(value)
    return value


# --------------------------------------------------------------------------------------------
# commands

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """The dataclass field names of a command class (memoised: ``fields()`` is slow)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every group command. ``OP`` is the wire name; ``NULLABLE`` names the fields that
    may be ``None`` (the key must still be present on the wire)."""

    OP: ClassVar[str] = ""
    NULLABLE: ClassVar[frozenset[str]] = frozenset()
    PARSERS: ClassVar[Mapping[str, _Parser]] = {}
    """Parsers of fields outside the shared vocabulary (by name), for command modules of
    their own (``storage/edit_commands.py``)."""

    def __post_init__(self) -> None:
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if value is None:
                if name not in self.NULLABLE:
                    raise InvalidArgument(f"{name} is required", op=self.OP, field=name)
                continue
            parse = self.PARSERS.get(name) or _FIELD_PARSERS[name]
            object.__setattr__(self, name, parse(value, self.OP, name))
        self._check()

    def _check(self) -> None:
        """Cross-field checks of one command (hook for subclasses)."""

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``{"op": ..., <every field>}`` with JSON types only."""
        out: dict[str, Any] = {"op": self.OP}
        for name in _field_names(type(self)):
            out[name] = _encode(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Decode and validate the wire form; raises :class:`InvalidArgument`."""
        if not isinstance(data, Mapping):
            raise InvalidArgument(
                f"a command must be a mapping, not {type(data).__name__}", op=cls.OP
            )
        if data.get("op") != cls.OP:
            raise InvalidArgument(f"not a {cls.OP!r} command", op=cls.OP, field="op")
        names = _field_names(cls)
        unknown = [k for k in data if k != "op" and k not in names]
        if unknown:
            shown = sorted(k if isinstance(k, str) else _short(k) for k in unknown)
            raise InvalidArgument(
                f"unknown field(s): {', '.join(shown)}", op=cls.OP, field=shown[0][:40]
            )
        missing = [n for n in names if n not in data]
        if missing:
            raise InvalidArgument(
                f"missing field(s): {', '.join(missing)}", op=cls.OP, field=missing[0]
            )
        kwargs: dict[str, Any] = {n: data[n] for n in names}
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class Reserve(Command):
    """Pick a slot for a new slice (or return the one already picked for ``upload_id``)."""

    OP: ClassVar[str] = "reserve"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"next"})

    upload_id: str
    file_id: str
    slice_index: int
    length: int
    crc32c: int
    now_ms: int
    next: Location | None = None


def _check_data(raw: object, op: str, field: str) -> str:
    if not isinstance(raw, str) or len(raw) > 4 * (MAX_INLINE // 3 + 1):
        raise PayloadTooLarge(f"{field} must be base64 of at most {MAX_INLINE} bytes", op=op)
    return raw


@dataclass(frozen=True, slots=True)
class Put(Command):
    """A small slice in one command: pick its slot and make it LIVE at once, its payload
    (``data``: base64, at most :data:`MAX_INLINE` bytes) carried by the log until
    ``min_holders`` nodes confirm a durable copy in their volumes (``docs/replication.md``,
    "Inline uploads")."""

    OP: ClassVar[str] = "put"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"next"})
    PARSERS: ClassVar[Mapping[str, _Parser]] = {"data": _check_data}

    upload_id: str
    file_id: str
    slice_index: int
    length: int
    crc32c: int
    now_ms: int
    next: Location | None
    data: str

    @classmethod
    def of(cls, payload: bytes, **fields: Any) -> Put:
        return cls(data=base64.b64encode(payload).decode("ascii"), **fields)

    def payload(self) -> bytes:
        return base64.b64decode(self.data, validate=True)

    def _check(self) -> None:
        try:
            payload = self.payload()
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgument("data is not base64", op=self.OP, field="data") from exc
        if len(payload) != self.length or _crc32c(payload) != self.crc32c:
            raise InvalidArgument(
                "data does not match its length and checksum", op=self.OP, field="data"
            )
        if self.length > MAX_INLINE:
            raise PayloadTooLarge(f"an inline payload is at most {MAX_INLINE} bytes", op=self.OP)


@dataclass(frozen=True, slots=True)
class Seal(Command):
    """PENDING -> LIVE, once the payload is durable on ``holders`` (at least ``min_holders``)."""

    OP: ClassVar[str] = "seal"

    slot: int
    upload_id: str
    generation: int
    holders: tuple[str, ...]

    def _check(self) -> None:
        if not self.holders:
            raise InvalidArgument("holders must not be empty", op=self.OP, field="holders")


#: Upload ids of a leader's slots reserved ahead (``docs/replication.md``, "Slots reserved
#: ahead") start with this; settlement aborts them, never seals them.
POOL_PREFIX: Final = "pool."


@dataclass(frozen=True, slots=True)
class Assign(Command):
    """A slot reserved ahead (``pool_id``, PENDING at ``generation``) becomes the LIVE slice
    written into it: upload ``upload_id`` of ``file_id``/``slice_index``, durable on
    ``holders``. ``reserve`` and ``seal`` of a one-slice upload with the reserve done before
    the upload arrived."""

    OP: ClassVar[str] = "assign"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"next"})
    PARSERS: ClassVar[Mapping[str, _Parser]] = {
        "pool_id": lambda raw, op, field: check_upload_id(raw, op=op, field=field)
    }

    slot: int
    generation: int
    pool_id: str
    upload_id: str
    file_id: str
    slice_index: int
    length: int
    crc32c: int
    next: Location | None
    holders: tuple[str, ...]

    def _check(self) -> None:
        if not self.pool_id.startswith(POOL_PREFIX) or self.upload_id.startswith(POOL_PREFIX):
            raise InvalidArgument(
                f"pool_id must start with {POOL_PREFIX!r}, upload_id must not", op=self.OP
            )
        if not self.holders:
            raise InvalidArgument("holders must not be empty", op=self.OP, field="holders")


@dataclass(frozen=True, slots=True)
class Abort(Command):
    """PENDING -> DELETED (404, into the free table): the upload did not become durable."""

    OP: ClassVar[str] = "abort"

    slot: int
    upload_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class Delete(Command):
    """LIVE -> DELETED (404, into the free table)."""

    OP: ClassVar[str] = "delete"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"generation"})

    slot: int
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class Move(Command):
    """LIVE -> MOVED (301 redirect to ``target``); not reusable until released by compaction."""

    OP: ClassVar[str] = "move"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"generation"})

    slot: int
    target: Location
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class Relink(Command):
    """Change the next pointer of a PENDING or LIVE slice (``None`` = end of the chain)."""

    OP: ClassVar[str] = "relink"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"next", "generation"})

    slot: int
    next: Location | None
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class Confirm(Command):
    """``node`` now holds the payload of ``slot`` (generation ``generation``) durably."""

    OP: ClassVar[str] = "confirm"

    slot: int
    node: str
    generation: int


#: Slices one ``confirm_many`` may name.
MAX_CONFIRMS: Final = 256


def _confirm_refs(raw: object, op: str, field: str) -> tuple[SlotRef, ...]:
    """1 to :data:`MAX_CONFIRMS` distinct-slot ``[slot, generation]`` pairs."""
    refs = parse_slot_refs(raw, op, field, MAX_CONFIRMS)
    if not refs:
        raise InvalidArgument(f"{field} names no slice", op=op, field=field)
    return refs


@dataclass(frozen=True, slots=True)
class ConfirmMany(Command):
    """``node`` now holds the payloads of ``slices`` (``(slot, generation)`` pairs) durably:
    a ``confirm`` of each, in one log entry. Each is applied or refused on its own."""

    OP: ClassVar[str] = "confirm_many"
    PARSERS: ClassVar[Mapping[str, _Parser]] = {"slices": _confirm_refs}

    node: str
    slices: tuple[SlotRef, ...]


@dataclass(frozen=True, slots=True)
class Unconfirm(Command):
    """``node`` lost the payload of ``slot`` (corrupt, disk replaced, node removed)."""

    OP: ClassVar[str] = "unconfirm"

    slot: int
    node: str
    generation: int


@dataclass(frozen=True, slots=True)
class Release(Command):
    """MOVED -> DELETED (into the free table): compaction no longer needs the redirect."""

    OP: ClassVar[str] = "release"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"generation"})

    slot: int
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class Configure(Command):
    """Replace the replicated configuration (all three values, every time)."""

    OP: ClassVar[str] = "configure"
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"max_slots"})

    max_slots: int | None
    min_holders: int
    upload_window: int


@dataclass(frozen=True, slots=True)
class Noop(Command):
    """Changes nothing; a new leader commits one as a barrier before it settles pending slots."""

    OP: ClassVar[str] = "noop"


COMMAND_TYPES: Final[dict[str, type[Command]]] = {
    cls.OP: cls
    for cls in (
        Reserve,
        Put,
        Assign,
        Seal,
        Abort,
        Delete,
        Move,
        Relink,
        Confirm,
        ConfirmMany,
        Unconfirm,
        Release,
        Configure,
        Noop,
    )
}


def register(*classes: type[Command]) -> None:
    """Add command classes defined in other modules (``storage/edit_commands.py``) to
    :data:`COMMAND_TYPES`, so :func:`decode_command` knows them."""
    for cls in classes:
        if cls.OP in COMMAND_TYPES and COMMAND_TYPES[cls.OP] is not cls:
            raise ValueError(f"command op {cls.OP!r} registered twice")
        COMMAND_TYPES[cls.OP] = cls


def decode_command(data: object) -> Command:
    """The typed command for a wire dict; raises :class:`InvalidArgument` if it is malformed.
    Knows every command of :data:`COMMAND_TYPES`, the edit commands
    (:mod:`mydfs.storage.edit_commands`) included."""
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"a command must be a mapping, not {type(data).__name__}")
    _load_edit_commands()
    op = data.get("op")
    cls = COMMAND_TYPES.get(op) if isinstance(op, str) else None
    if cls is None:
        raise InvalidArgument(f"unknown command op {_short(op)}", field="op")
    return cls.from_dict(data)


def _load_edit_commands() -> None:
    """Import :mod:`mydfs.storage.edit_commands` (it registers itself): decoding a wire command
    must know every command, whoever imported this module first."""
    from mydfs.storage import edit_commands  # noqa: F401  (cyclic import: edit_commands uses us)
