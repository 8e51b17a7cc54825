"""Wire form and strict decoding of the storage group's commands."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mydfs.common.checksum import crc32c
from mydfs.common.errors import InvalidArgument, PayloadTooLarge, SlotOutOfRange
from mydfs.common.location import MAX_GROUP, MAX_SLOT, Location
from mydfs.storage.edit_commands import Commit, Prepare, Rollback
from mydfs.storage.format import PAYLOAD_CAPACITY
from mydfs.storage.group_commands import (
    COMMAND_TYPES,
    MAX_CONFIRMS,
    Abort,
    Assign,
    Command,
    Configure,
    Confirm,
    ConfirmMany,
    Delete,
    Move,
    Noop,
    Put,
    Release,
    Relink,
    Reserve,
    Seal,
    Unconfirm,
    decode_command,
)

FILE = "0123456789abcdef0123456789abcdef"

SAMPLES: list[Command] = [
    Reserve(
        upload_id="up-1", file_id=FILE, slice_index=3, length=70_000, crc32c=0xDEADBEEF, now_ms=5
    ),
    Reserve(
        upload_id="u.2:x_Y",
        file_id=FILE,
        slice_index=0,
        length=PAYLOAD_CAPACITY,
        crc32c=0,
        now_ms=0,
        next=Location(2, 9),
    ),
    Put.of(
        b"tiny",
        upload_id="up-3",
        file_id=FILE,
        slice_index=0,
        length=4,
        crc32c=crc32c(b"tiny"),
        now_ms=5,
        next=Location(1, 2),
    ),
    Put.of(
        b"", upload_id="up-4", file_id=FILE, slice_index=1, length=0, crc32c=0, now_ms=0, next=None
    ),
    Assign(
        slot=7,
        generation=3,
        pool_id="pool.g1n1.ab12",
        upload_id="up-5",
        file_id=FILE,
        slice_index=2,
        length=65_536,
        crc32c=12,
        next=None,
        holders=("n1", "n2"),
    ),
    Seal(slot=7, upload_id="up-1", generation=3, holders=("n2", "n1")),
    Abort(slot=7, upload_id="up-1", generation=3),
    Delete(slot=7),
    Delete(slot=7, generation=42),
    Move(slot=7, target=Location(3, 1)),
    Move(slot=7, target=Location(MAX_GROUP, MAX_SLOT), generation=1),
    Relink(slot=7, next=None),
    Relink(slot=7, next=Location(0, 0), generation=5),
    Confirm(slot=7, node="10.0.0.1:4321", generation=5),
    Unconfirm(slot=7, node="n3", generation=5),
    ConfirmMany(node="n2", slices=((7, 5), (MAX_SLOT, 1))),
    Release(slot=7),
    Release(slot=7, generation=9),
    Configure(max_slots=None, min_holders=2, upload_window=100),
    Configure(max_slots=1024, min_holders=1, upload_window=0),
    Noop(),
    Prepare(
        txn="ab" * 16,
        file_id=FILE,
        now_ms=5,
        lock=((3, 4), (5, 6)),
        move=(3, 4, Location(1, 9)),
        new=((9, 10),),
    ),
    Prepare(txn="cd" * 16, file_id=FILE, now_ms=0, lock=(), move=None, new=((1, 1),)),
    Commit(txn="ab" * 16, version=3, prev=1),
    Rollback(txn="ab" * 16),
]


def test_every_op_has_a_sample() -> None:
    assert {type(c) for c in SAMPLES} == set(COMMAND_TYPES.values())


@pytest.mark.parametrize("command", SAMPLES, ids=lambda c: c.OP)
def test_round_trip_through_json(command: Command) -> None:
    wire = command.to_dict()
    assert wire["op"] == command.OP
    again = decode_command(orjson.loads(orjson.dumps(wire)))
    assert again == command
    assert type(again) is type(command)
    assert again.to_dict() == wire


def test_python_values_are_normalised() -> None:
    seal = Seal(slot=1, upload_id="u", generation=1, holders=["n3", "n1"])  # type: ignore[arg-type]
    assert seal.holders == ("n1", "n3")
    assert seal.to_dict()["holders"] == ["n1", "n3"]
    reserve = Reserve(
        upload_id="u",
        file_id=FILE,
        slice_index=0,
        length=1,
        crc32c=1,
        now_ms=1,
        next=[4, 5],  # type: ignore[arg-type]
    )
    assert reserve.next == Location(4, 5)
    assert isinstance(reserve.next, Location)
    assert reserve.to_dict()["next"] == [4, 5]


def test_construction_validates_like_decoding() -> None:
    with pytest.raises(SlotOutOfRange):
        Delete(slot=-1)
    with pytest.raises(InvalidArgument):
        Seal(slot=1, upload_id="u", generation=1, holders=())
    with pytest.raises(InvalidArgument):
        Confirm(slot=1, node="n1", generation=None)  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLarge):
        Reserve(
            upload_id="u",
            file_id=FILE,
            slice_index=0,
            length=PAYLOAD_CAPACITY + 1,
            crc32c=0,
            now_ms=0,
        )


def _wire(command: Command, **changes: Any) -> dict[str, Any]:
    wire = command.to_dict()
    wire.update(changes)
    return wire


RESERVE = SAMPLES[0]
SEAL = Seal(slot=7, upload_id="up-1", generation=3, holders=("n1", "n2"))
MOVE = Move(slot=7, target=Location(3, 1))
CONFIRM = Confirm(slot=7, node="n1", generation=5)
CONFIGURE = Configure(max_slots=None, min_holders=2, upload_window=100)
CONFIRMS = ConfirmMany(node="n1", slices=((7, 5),))

BAD: list[tuple[str, object, type[InvalidArgument], str | None]] = [
    # shape of the command
    ("not a mapping", ["reserve"], InvalidArgument, None),
    ("none", None, InvalidArgument, None),
    ("no op", {"slot": 1}, InvalidArgument, "op"),
    ("op not a string", {"op": 1}, InvalidArgument, "op"),
    ("unknown op", {"op": "format_disk"}, InvalidArgument, "op"),
    ("unknown field", _wire(SEAL, extra=1), InvalidArgument, "extra"),
    ("missing field", {"op": "seal", "slot": 1, "upload_id": "u"}, InvalidArgument, "generation"),
    (
        "seal without generation",
        {"op": "seal", "slot": 1, "upload_id": "u", "holders": ["n1"]},
        InvalidArgument,
        "generation",
    ),
    ("missing nullable key", {"op": "delete", "slot": 1}, InvalidArgument, "generation"),
    (
        "configure missing max_slots",
        {"op": "configure", "min_holders": 2, "upload_window": 1},
        InvalidArgument,
        "max_slots",
    ),
    ("noop with a field", {"op": "noop", "slot": 1}, InvalidArgument, "slot"),
    ("non-string key", {"op": "noop", 1: 2}, InvalidArgument, "1"),
    # confirm_many's slices
    ("no slices", _wire(CONFIRMS, slices=[]), InvalidArgument, "slices"),
    ("slices not a list", _wire(CONFIRMS, slices=7), InvalidArgument, "slices"),
    ("slice not a pair", _wire(CONFIRMS, slices=[[7]]), InvalidArgument, "slices"),
    ("slice slot twice", _wire(CONFIRMS, slices=[[7, 1], [7, 2]]), InvalidArgument, "slices"),
    ("slice generation 0", _wire(CONFIRMS, slices=[[7, 0]]), InvalidArgument, "slices.generation"),
    (
        "too many slices",
        _wire(CONFIRMS, slices=[[i, 1] for i in range(MAX_CONFIRMS + 1)]),
        InvalidArgument,
        "slices",
    ),
    (
        "slice slot too big",
        _wire(CONFIRMS, slices=[[MAX_SLOT + 1, 1]]),
        SlotOutOfRange,
        "slices.slot",
    ),
    # slot
    ("slot negative", _wire(SEAL, slot=-1), SlotOutOfRange, "slot"),
    ("slot too big", _wire(SEAL, slot=MAX_SLOT + 1), SlotOutOfRange, "slot"),
    ("slot bool", _wire(SEAL, slot=True), InvalidArgument, "slot"),
    ("slot float", _wire(SEAL, slot=1.0), InvalidArgument, "slot"),
    ("slot string", _wire(SEAL, slot="1"), InvalidArgument, "slot"),
    ("slot null", _wire(SEAL, slot=None), InvalidArgument, "slot"),
    # upload id
    ("upload id empty", _wire(SEAL, upload_id=""), InvalidArgument, "upload_id"),
    ("upload id space", _wire(SEAL, upload_id="a b"), InvalidArgument, "upload_id"),
    ("upload id slash", _wire(SEAL, upload_id="../x"), InvalidArgument, "upload_id"),
    ("upload id newline", _wire(SEAL, upload_id="ab\n"), InvalidArgument, "upload_id"),
    ("upload id too long", _wire(SEAL, upload_id="a" * 129), InvalidArgument, "upload_id"),
    ("upload id non-ascii", _wire(SEAL, upload_id="ü"), InvalidArgument, "upload_id"),
    ("upload id int", _wire(SEAL, upload_id=5), InvalidArgument, "upload_id"),
    # holders
    ("holders a string", _wire(SEAL, holders="n1"), InvalidArgument, "holders"),
    ("holders empty", _wire(SEAL, holders=[]), InvalidArgument, "holders"),
    ("holders twice", _wire(SEAL, holders=["n1", "n1"]), InvalidArgument, "holders"),
    ("holder with space", _wire(SEAL, holders=["n 1"]), InvalidArgument, "holders"),
    ("holder not str", _wire(SEAL, holders=[1]), InvalidArgument, "holders"),
    (
        "too many holders",
        _wire(SEAL, holders=[f"n{i}" for i in range(17)]),
        InvalidArgument,
        "holders",
    ),
    # reserve fields
    ("file id upper", _wire(RESERVE, file_id=FILE.upper()), InvalidArgument, "file_id"),
    ("file id short", _wire(RESERVE, file_id=FILE[:-1]), InvalidArgument, "file_id"),
    ("file id not hex", _wire(RESERVE, file_id="g" * 32), InvalidArgument, "file_id"),
    ("slice index negative", _wire(RESERVE, slice_index=-1), InvalidArgument, "slice_index"),
    ("slice index too big", _wire(RESERVE, slice_index=2**32), InvalidArgument, "slice_index"),
    ("length negative", _wire(RESERVE, length=-1), InvalidArgument, "length"),
    ("length too big", _wire(RESERVE, length=PAYLOAD_CAPACITY + 1), PayloadTooLarge, "length"),
    ("crc negative", _wire(RESERVE, crc32c=-1), InvalidArgument, "crc32c"),
    ("crc too big", _wire(RESERVE, crc32c=2**32), InvalidArgument, "crc32c"),
    ("now negative", _wire(RESERVE, now_ms=-5), InvalidArgument, "now_ms"),
    ("next short", _wire(RESERVE, next=[1]), InvalidArgument, "next"),
    ("next long", _wire(RESERVE, next=[1, 2, 3]), InvalidArgument, "next"),
    ("next text", _wire(RESERVE, next="1:2"), InvalidArgument, "next"),
    ("next dict", _wire(RESERVE, next={"group": 1, "slot": 2}), InvalidArgument, "next"),
    ("next group negative", _wire(RESERVE, next=[-1, 0]), InvalidArgument, "next.group"),
    ("next group too big", _wire(RESERVE, next=[MAX_GROUP + 1, 0]), InvalidArgument, "next.group"),
    ("next slot negative", _wire(RESERVE, next=[0, -1]), SlotOutOfRange, "next.slot"),
    ("next group bool", _wire(RESERVE, next=[True, 0]), InvalidArgument, "next.group"),
    # other commands
    ("move without target", _wire(MOVE, target=None), InvalidArgument, "target"),
    ("move bad target", _wire(MOVE, target=[0, 1.5]), InvalidArgument, "target.slot"),
    ("generation zero", _wire(MOVE, generation=0), InvalidArgument, "generation"),
    ("generation negative", _wire(MOVE, generation=-1), InvalidArgument, "generation"),
    ("confirm null generation", _wire(CONFIRM, generation=None), InvalidArgument, "generation"),
    ("confirm empty node", _wire(CONFIRM, node=""), InvalidArgument, "node"),
    ("confirm node list", _wire(CONFIRM, node=["n1"]), InvalidArgument, "node"),
    ("max slots zero", _wire(CONFIGURE, max_slots=0), InvalidArgument, "max_slots"),
    ("min holders zero", _wire(CONFIGURE, min_holders=0), InvalidArgument, "min_holders"),
    ("min holders 17", _wire(CONFIGURE, min_holders=17), InvalidArgument, "min_holders"),
    ("window negative", _wire(CONFIGURE, upload_window=-1), InvalidArgument, "upload_window"),
    ("window huge", _wire(CONFIGURE, upload_window=10_000_001), InvalidArgument, "upload_window"),
]


@pytest.mark.parametrize(("case", "wire", "error", "field"), BAD, ids=[b[0] for b in BAD])
def test_malformed_commands_are_refused(
    case: str, wire: object, error: type[InvalidArgument], field: str | None
) -> None:
    with pytest.raises(error) as info:
        decode_command(wire)
    assert type(info.value) is error, case
    if field is not None:
        assert info.value.context.get("field") == field, info.value.context


def test_from_dict_checks_the_op() -> None:
    with pytest.raises(InvalidArgument):
        Seal.from_dict(Abort(slot=1, upload_id="u", generation=1).to_dict())
    assert Seal.from_dict(SEAL.to_dict()) == SEAL


def test_error_names_the_op() -> None:
    with pytest.raises(InvalidArgument) as info:
        decode_command(_wire(SEAL, slot=-1))
    assert info.value.context["op"] == "seal"
    assert "slot" in str(info.value)


def _put_wire(payload: bytes, **changes: Any) -> dict[str, Any]:
    wire = Put.of(
        payload,
        upload_id="up-9",
        file_id=FILE,
        slice_index=0,
        length=len(payload),
        crc32c=crc32c(payload),
        now_ms=1,
        next=None,
    ).to_dict()
    wire.update(changes)
    return wire


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"data": "not base64!"}, InvalidArgument),
        ({"data": 5}, PayloadTooLarge),
        ({"length": 3}, InvalidArgument),  # does not match the payload
        ({"crc32c": 1}, InvalidArgument),
        ({"data": "A" * 30_000}, PayloadTooLarge),  # over the inline bound
    ],
)
def test_put_refuses_a_payload_that_is_not_its_slice(changes: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        decode_command(_put_wire(b"hello", **changes))


def test_put_carries_its_payload() -> None:
    put = decode_command(_put_wire(b"hello"))
    assert isinstance(put, Put) and put.payload() == b"hello"
    with pytest.raises(PayloadTooLarge):
        decode_command(_put_wire(b"x" * (16 * 1024 + 1)))


@pytest.mark.parametrize(
    "changes",
    [{"pool_id": "up-1"}, {"upload_id": "pool.x"}, {"holders": []}],
)
def test_assign_needs_a_pool_slot_a_real_upload_and_holders(changes: dict[str, Any]) -> None:
    wire = {
        "op": "assign",
        "slot": 7,
        "generation": 3,
        "pool_id": "pool.a",
        "upload_id": "up-1",
        "file_id": FILE,
        "slice_index": 0,
        "length": 10,
        "crc32c": 1,
        "next": None,
        "holders": ["n1", "n2"],
    }
    decode_command(wire)
    with pytest.raises(InvalidArgument):
        decode_command({**wire, **changes})
