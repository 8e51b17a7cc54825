"""Pure parts of a storage node: the reconciler's plan, the registration table, the config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mydfs.common.config import ConfigError, add_arguments
from mydfs.common.location import Location
from mydfs.storage import config as storage_config
from mydfs.storage.format import SliceOwner, SlotHeader
from mydfs.storage.format import SlotState as Disk
from mydfs.storage.group_state import SlotInfo, SlotState
from mydfs.storage.reconcile import Action, Kind, plan
from mydfs.storage.registration import RegistrationTable


def info(
    slot: int,
    state: SlotState,
    gen: int,
    *,
    holders: tuple[str, ...] = ("a", "b"),
    next: Location | None = None,
    target: Location | None = None,
) -> SlotInfo:
    return SlotInfo(
        slot=slot,
        state=state,
        generation=gen,
        upload_id=f"u{slot}",
        file_id="0" * 32,
        slice_index=0,
        length=10,
        crc32c=1,
        next=next,
        holders=holders,
        target=target,
        reserved_at_ms=0,
    )


def disk(slot: int, state: Disk, gen: int, *, next: Location | None = None) -> SlotHeader:
    return SlotHeader(
        slot=slot,
        state=state,
        generation=gen,
        length=10,
        owner=SliceOwner(),
        next=next,
        block_crcs=(0,),
        target=Location(1, 9) if state == Disk.MOVED else None,
    )


def test_plan_fetches_missing_and_stale_and_confirms() -> None:
    table = [
        info(0, SlotState.LIVE, 1),  # missing here
        info(1, SlotState.LIVE, 5),  # stale copy here
        info(2, SlotState.LIVE, 3, holders=("a", "b")),  # held here but not confirmed
        info(3, SlotState.LIVE, 4, holders=("a", "c"), next=Location(1, 7)),  # relink
    ]
    local = {1: disk(1, Disk.LIVE, 2), 2: disk(2, Disk.LIVE, 3), 3: disk(3, Disk.LIVE, 4)}
    assert plan(table, local, "c") == [
        Action(Kind.FETCH, 0, 1),
        Action(Kind.DROP, 1, 2),
        Action(Kind.FETCH, 1, 5),
        Action(Kind.CONFIRM, 2, 3),
        Action(Kind.RELINK, 3, 4, next=Location(1, 7)),
    ]


def test_plan_marks_moved_and_drops_deleted_but_never_newer() -> None:
    table = [
        info(0, SlotState.MOVED, 1, target=Location(2, 3)),
        info(1, SlotState.DELETED, 2, holders=()),
        info(2, SlotState.DELETED, 2, holders=()),  # a newer push already arrived here
        info(3, SlotState.PENDING, 6, holders=()),
    ]
    local = {
        0: disk(0, Disk.LIVE, 1),
        1: disk(1, Disk.LIVE, 2),
        2: disk(2, Disk.LIVE, 9),
        3: disk(3, Disk.LIVE, 6),
    }
    assert plan(table, local, "c") == [
        Action(Kind.MOVE, 0, 1, target=Location(2, 3)),
        Action(Kind.DROP, 1, 2),
    ]


def test_plan_retargets_a_301_and_drops_a_released_one() -> None:
    """An edit re-targets an entry point that is already a 301, and frees intermediates."""
    table = [
        info(0, SlotState.MOVED, 1, target=Location(2, 3)),
        info(1, SlotState.MOVED, 2, target=Location(1, 9)),  # the disk has the same target
        info(2, SlotState.DELETED, 3, holders=()),
    ]
    local = {0: disk(0, Disk.MOVED, 1), 1: disk(1, Disk.MOVED, 2), 2: disk(2, Disk.MOVED, 3)}
    assert plan(table, local, "c") == [
        Action(Kind.MOVE, 0, 1, target=Location(2, 3)),
        Action(Kind.DROP, 2, 3),
    ]


def test_plan_repairs_quarantined_slots() -> None:
    table = [info(0, SlotState.LIVE, 1), info(1, SlotState.DELETED, 2, holders=())]
    assert plan(table, {}, "c", quarantined=[0, 1]) == [
        Action(Kind.FETCH, 0, 1),
        Action(Kind.RECLAIM, 1, 2),
    ]


def test_registration_table_bounds_and_confirmations() -> None:
    table = RegistrationTable(max_bytes=100, ttl=10.0)
    assert table.put(1, 1, b"x" * 60, now=0.0)
    assert not table.put(2, 1, b"y" * 60, now=1.0)  # does not fit
    assert table.get(1, 1) == b"x" * 60 and table.get(1, 2) is None
    table.confirm(1, 1, "f1")
    assert table.get(1, 1) is not None
    table.confirm(1, 1, "f2")
    assert table.get(1, 1) is None and table.bytes == 0
    assert table.put(3, 1, b"z" * 50, now=2.0)
    assert table.expire(now=12.5) == 1 and len(table) == 0


def _cfg(argv: list[str]) -> storage_config.StorageConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, storage_config.OPTIONS)
    return storage_config.from_args(parser.parse_args(argv))


BASE = [
    "--node-id",
    "n1",
    "--group-id",
    "1",
    "--data-dir",
    "/tmp/x",
    "--raft",
    "127.0.0.1:7001",
    "--peers",
    "n2,127.0.0.1:7002,http://127.0.0.1:8002",
    "--peers",
    "n3,127.0.0.1:7003,http://127.0.0.1:8003",
    "--secret",
    "0123456789abcdef",
]


def test_storage_config_defaults() -> None:
    cfg = _cfg(BASE)
    assert cfg.advertise == "http://127.0.0.1:8101"
    assert cfg.volume_path == Path("/tmp/x/volume.dat")
    assert [p.node_id for p in cfg.members] == ["n1", "n2", "n3"]
    assert cfg.edit_timeout == 10.0
    assert _cfg([*BASE, "--edit-timeout", "3"]).edit_timeout == 3.0
    assert (cfg.scrub_rate_mb, cfg.scrub_interval) == (8.0, 3600.0)
    assert _cfg([*BASE, "--scrub-rate-mb", "0"]).scrub_rate_mb == 0.0  # the scrub is off


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (["--secret", "short"], "secret"),
        (["--listen", "nohost"], "listen"),
        (["--advertise", "ftp://x"], "advertise"),
        (["--group-id", "0"], "group_id"),
        (["--node-id", "bad id!"], "node_id"),
        (["--log-level", "loud"], "log_level"),
        (["--replica-timeout", "0"], "replica_timeout"),
        (["--edit-timeout", "0"], "edit_timeout"),
        (["--scrub-rate-mb", "-1"], "scrub_rate_mb"),
        (["--scrub-interval", "0"], "scrub_interval"),
    ],
)
def test_storage_config_errors_name_the_key(extra: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        _cfg(BASE + extra)


def test_storage_config_needs_two_distinct_peers() -> None:
    with pytest.raises(ConfigError, match="peers"):
        _cfg(
            BASE[:-6]
            + ["--peers", "n2,127.0.0.1:7002,http://127.0.0.1:8002", "--secret", "0123456789abcdef"]
        )
    with pytest.raises(ConfigError, match="repeat"):
        _cfg(
            BASE[:-6]
            + [
                "--peers",
                "n2,127.0.0.1:7002,http://127.0.0.1:8002",
                "--peers",
                "n2,127.0.0.1:7003,http://127.0.0.1:8003",
                "--secret",
                "0123456789abcdef",
            ]
        )


def test_plan_drops_an_old_copy_in_a_slot_reserved_again() -> None:
    """A slot freed and reserved again (pending at a newer generation, maybe for a long time:
    a slot reserved ahead) before this node dropped its old slice: the old copy goes; the
    upload's own copy (same generation) or a newer push stays."""
    table = [
        info(0, SlotState.PENDING, 6, holders=()),
        info(1, SlotState.PENDING, 6, holders=()),
        info(2, SlotState.PENDING, 6, holders=()),
        info(3, SlotState.PENDING, 6, holders=()),
    ]
    local = {
        0: disk(0, Disk.LIVE, 2),
        1: disk(1, Disk.MOVED, 3),
        2: disk(2, Disk.LIVE, 6),
        3: disk(3, Disk.DELETED, 4),
    }
    assert plan(table, local, "c") == [Action(Kind.DROP, 0, 2), Action(Kind.DROP, 1, 3)]
