"""The nemesis: a workload of puts, overwrites, in-place edits (writes at offsets, appends,
truncates, inserts, cuts), reads (whole and ranges) and deletes from several clients while
nodes and the tracker are killed, paused, partitioned, lose packets and fill their disk; every
process in its own network namespace (see ``docs/testing.md``).

One run (module-scoped) feeds every test below. The short run (about 2 minutes, every fault
kind once) is the default; ``MYDFS_NEMESIS_LONG=1`` runs the long one (40 faults, about 11
minutes); ``MYDFS_NEMESIS_FAULTS=N`` and ``MYDFS_NEMESIS_SEED=S`` change the number of faults
and the random choices, ``MYDFS_NEMESIS_OP_DEADLINE`` the SDK's deadline per operation (10 s;
a short one makes operations fail mid-fault, so the owners resolve unknown outcomes). The
figures are printed and written to ``report.json`` in the run's folder: a temporary one, or
``MYDFS_NEMESIS_DIR`` (kept, with the history and every log).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from netns import unavailable_reason
from runner import Config, run_nemesis, summary

LONG = os.environ.get("MYDFS_NEMESIS_LONG") == "1"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(4 * 3600 if LONG else 900)]


def config_from_env() -> Config:
    seed = os.environ.get("MYDFS_NEMESIS_SEED", "1")
    # A short deadline makes operations fail during faults: outcomes the owners must resolve.
    deadline = float(os.environ.get("MYDFS_NEMESIS_OP_DEADLINE", "10"))
    if LONG:
        faults = int(os.environ.get("MYDFS_NEMESIS_FAULTS", "40"))
        return Config(faults=faults, fault_seconds=(5.0, 12.0), gap_seconds=4.0, seed=seed,
                      op_deadline=deadline)  # fmt: skip
    faults = int(os.environ.get("MYDFS_NEMESIS_FAULTS", "10"))
    return Config(faults=faults, fault_seconds=(3.0, 5.0), gap_seconds=2.5, seed=seed,
                  op_deadline=deadline)  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"nemesis needs network namespaces and iptables: {reason}")
    where = os.environ.get("MYDFS_NEMESIS_DIR")
    root = Path(where) if where else tmp_path_factory.mktemp("nemesis")
    result = run_nemesis(root, config_from_env())
    print("\n" + summary(result))
    return result


def _violations(report: dict[str, Any], *kinds: str) -> list[dict[str, Any]]:
    return [v for v in report["violations"] if v["kind"] in kinds]


def test_the_run_did_work(report: dict[str, Any]) -> None:
    cfg = report["config"]
    assert report["faults"] == cfg["faults"], report["problems"]
    assert report["acknowledged_puts"] >= 10, report["by_result"]
    assert report["reads_ok"] >= 10, report["by_result"]
    assert not report["problems"]


def test_edits_ran_and_the_owners_agree_with_the_model(report: dict[str, Any]) -> None:
    assert report["acknowledged_edits"] >= 10, report["by_result"]
    assert report["range_reads_ok"] >= 10, report["by_result"]
    assert report["model_violations"] == 0, _violations(
        report, "refused_but_applied", "unaccounted", "size_mismatch", "wrong_offset"
    )


def test_no_acknowledged_write_is_lost(report: dict[str, Any]) -> None:
    assert report["lost"] == 0, _violations(report, "lost")


def test_folders_list_exactly_the_files_that_read(report: dict[str, Any]) -> None:
    assert report["listing_violations"] == 0, _violations(
        report, "phantom_entry", "dangling", "unlisted"
    )


def test_groups_converge_and_volumes_verify(report: dict[str, Any]) -> None:
    assert all(v is None for v in report["convergence"].values()), report["convergence"]
    stopped = report["convergence_at_stop"]  # once the tracker stopped (no more deletes)
    assert all(v is None for v in stopped.values()), stopped
    assert report["tables_differ"] == []
    assert report["offline"]["verify_failed"] == [], report["offline"]["verify"]
    assert report["offline"]["replicas_differ"] == []


def test_reads_return_exactly_one_version_of_their_path(report: dict[str, Any]) -> None:
    wrong = _violations(report, "other_path", "mixed", "garbage", "phantom", "stale", "missing")
    # Every read was one version of its path that existed during the read (docs/testing.md).
    assert report["wrong_reads"] == 0, wrong[:20]


def test_no_slot_leaks_once_the_collector_caught_up(report: dict[str, Any]) -> None:
    """Every allocated slot (live, 301, pending) is reached from a live file or a trash record
    once the collector and the reclaimer have caught up: nothing leaked."""
    leaks = report["leaks"]
    assert leaks["caught_up"] and leaks["leaked"] == 0, (leaks, report["space"])
