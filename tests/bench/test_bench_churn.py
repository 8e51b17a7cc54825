"""The ``churn`` workload of ``mydfs bench``: its pure parts, and ``--quick`` end to end.

The end-to-end test starts real clusters (one per phase) and checks that the four figures exist
with what they measured; it checks no figure's value: a benchmark is never a timed test.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from mydfs.bench.edits import parse_counter
from mydfs.bench.figures import Sample
from mydfs.bench.suite import WORKLOADS
from mydfs.bench.workloads.churn import (
    CLIENTS,
    LAG,
    LARGE,
    LARGE_EVERY,
    OFF,
    ON,
    ORPHANS,
    RECLAIMED,
    RELEASED,
    SCRUBBED,
    SMALL,
    STEPS,
    Cycle,
    PhaseRun,
    counters,
    increase,
    ratios,
)
from mydfs.client.cli import main as mydfs_main
from mydfs.common.slices import PAYLOAD_CAPACITY


def test_registered() -> None:
    assert "churn" in WORKLOADS
    assert WORKLOADS["churn"].description


def test_cycle_walks_each_file_through_the_steps() -> None:
    cycle = Cycle("/p/c0")
    seen = []
    for _ in range(len(STEPS) * LARGE_EVERY):
        seen.append((cycle.path, cycle.op, cycle.size))
        cycle.advance()
    assert [op for _, op, _ in seen[:4]] == ["put", "overwrite", "edit", "rm"]
    assert {p for p, _, _ in seen[:4]} == {"/p/c0/f000000"}
    assert seen[4][0] == "/p/c0/f000001" and seen[4][1] == "put"
    # The rm step removes the file LAG files back (none yet before).
    assert Cycle("/p/c0").old_path is None
    cycle = Cycle("/p/c0")
    cycle.file = LAG + 3
    assert cycle.old_path == "/p/c0/f000003"
    sizes = [size for _, op, size in seen if op == "put"]
    assert sizes == [SMALL] * (LARGE_EVERY - 1) + [LARGE]
    assert 2 * PAYLOAD_CAPACITY < LARGE <= 3 * PAYLOAD_CAPACITY  # three slices


def test_counters_and_rates() -> None:
    tracker = f"# HELP x\n{RECLAIMED} 10.0\n{ORPHANS} 2.0\n{RELEASED} 1\nother 7\n"
    nodes = [f"{SCRUBBED} 1e6\n", f"{SCRUBBED} 3e6\n", "nothing\n"]
    before = counters(tracker, nodes)
    assert before == {RECLAIMED: 10.0, ORPHANS: 2.0, RELEASED: 1.0, SCRUBBED: 4e6}
    after = counters(f"{RECLAIMED} 25\n{ORPHANS} 3\n{RELEASED} 5\n", [f"{SCRUBBED} 5e6\n"])
    run = PhaseRun(Sample(20.0, seconds=4.0), increase(before, after))
    assert run.freed == 20.0
    assert run.freed_per_second == 5.0
    assert PhaseRun(Sample(None, seconds=0.0)).freed_per_second is None
    assert parse_counter("a_total 1.5\n", "a_total") == 1.5
    assert parse_counter("a_total_x 1.5\n", "a_total") == 0.0


def test_ratio_is_on_over_off_per_repetition() -> None:
    on = [PhaseRun(Sample(8.0)), PhaseRun(Sample(None)), PhaseRun(Sample(5.0))]
    off = [PhaseRun(Sample(10.0)), PhaseRun(Sample(9.0)), PhaseRun(Sample(0.0))]
    assert [s.value for s in ratios(on, off)] == [0.8, None, None]


def test_phases_differ_only_in_housekeeping() -> None:
    assert OFF.storage_args == ("--scrub-rate-mb", "0")
    assert "--scrub-rate-mb" in ON.storage_args and "0" not in ON.storage_args
    assert set(OFF.tracker_options) == set(ON.tracker_options)
    assert ON.trash_retention < 1 < OFF.trash_retention


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_churn(tmp_path: Path) -> None:
    """``mydfs bench churn --quick --no-peer``: four figures on mydfs alone, no peer and the
    reason why; the off phase freed nothing."""
    out = tmp_path / "churn"
    code = mydfs_main(["bench", "churn", "--quick", "--no-peer", "--out", str(out)])
    doc = orjson.loads((out / "results.json").read_bytes())
    table = (out / "results.md").read_text()
    assert not doc["failures"], doc["failures"]
    assert code == 0
    by_op = {f["op"]: f for f in doc["figures"]}
    assert set(by_op) == {
        "write, housekeeping off",
        "write, housekeeping on",
        "on ÷ off",
        "slices freed, housekeeping on",
    }
    for f in doc["figures"]:
        assert f["clients"] == CLIENTS
        assert f["peer"] is None and f["peer_absent"], f["key"]
        assert f["mydfs"]["median"] is not None, f["key"]
        assert f"| churn {f['op']} N={CLIENTS} |" in table
    off = by_op["write, housekeeping off"]["mydfs"]["measured"]
    on = by_op["write, housekeeping on"]["mydfs"]["measured"]
    assert off["slices_freed"] == [0] and off["scrub_bytes"] == [0]
    assert on["fsync"] is True and on["cluster"]["storage_args"] != off["cluster"]["storage_args"]
