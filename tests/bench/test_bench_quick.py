"""``mydfs bench --quick`` end to end, so that the suite cannot rot.

Starts a real mydfs cluster (and SeaweedFS, when the ``bench`` extra is installed), runs every
workload on tiny sizes, and checks that the JSON, the Markdown table and the chart exist and
hold every workload. It checks no figure's value: a benchmark is never a timed test.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson
import pytest

from mydfs.bench.cli import main, size, sizes
from mydfs.bench.edits import (
    EDIT_WORKLOADS,
    RECEIVED,
    RECORD,
    check_records,
    parse_received,
    record,
)
from mydfs.bench.figures import Figure, Result, percentile
from mydfs.bench.seaweed import find_weed
from mydfs.bench.suite import WORKLOADS, Settings
from mydfs.client.cli import main as mydfs_main


def test_list_names_every_workload(capsys: pytest.CaptureFixture[str]) -> None:
    assert mydfs_main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("large", "small-64k", "small-1k", "meta", "failover", *EDIT_WORKLOADS, "edits"):
        assert name in out
    assert set(WORKLOADS) >= {"large", "small-64k", "small-1k", "meta", "failover"}
    assert set(WORKLOADS) >= set(EDIT_WORKLOADS)


def test_unknown_workload_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-workload", "--quick"])
    assert exc.value.code == 2


def test_helpers() -> None:
    assert size("1G") == 1 << 30
    assert size("64KiB") == 64 << 10
    assert size("4096") == 4096
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    quick = Settings.quick_settings()
    assert quick.quick and quick.large_bytes < Settings().large_bytes
    fig = Figure(
        "w",
        "recover",
        1,
        "s",
        False,
        Result("mydfs", 2.0, 1.0, 3.0, [2.0]),
        Result("seaweedfs", 4.0, 4.0, 4.0, [4.0]),
        None,
    )
    assert fig.ratio_peer == 2.0  # lower is better: peer / mydfs
    assert Figure.from_dict(orjson.loads(orjson.dumps(fig.to_dict()))).ratio_peer == 2.0
    assert sizes("64M,1G") == (64 << 20, 1 << 30)
    assert quick.edits.file_bytes < Settings().edits.file_bytes


def test_append_records_check() -> None:
    """The append check accepts exactly the acknowledged records, each once at its offset."""
    acked = {5: 0, 2: RECORD, 9: 2 * RECORD}
    content = record(0, 5) + record(0, 2) + record(0, 9)
    assert all(len(record(r, i)) == RECORD for r in (0, "warm") for i in (0, 10**7))
    assert check_records(content, acked, 0) == ""
    assert "bytes" in check_records(content + record(0, 1), acked, 0)  # one not acknowledged
    assert "not at offset" in check_records(record(0, 5) * 3, acked, 0)  # a record twice
    assert "not at offset" in check_records(content, acked, 1)  # another repetition's
    assert check_records(content, {5: 0, 2: 0, 9: RECORD}, 0)  # two acks at one offset
    page = f"# HELP x\n{RECEIVED} 1.2345e+06\nother 3\n"
    assert parse_received(page) == 1_234_500
    assert parse_received("nothing\n") == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_edit_workloads(tmp_path: Path) -> None:
    """``mydfs bench edits --quick``: every edit workload gives its figures on mydfs alone,
    with the bytes it wrote, no peer and the reason why; the appended file held exactly the
    acknowledged records. No figure's value is checked."""
    out = tmp_path / "edits"
    code = mydfs_main(["bench", "edits", "--quick", "--no-peer", "--out", str(out)])
    doc = orjson.loads((out / "results.json").read_bytes())
    table = (out / "results.md").read_text()
    assert doc["meta"]["workloads"] == list(EDIT_WORKLOADS)
    assert not doc["failures"], doc["failures"]
    assert code == 0
    ops = {(f["workload"], f["op"], f["clients"]) for f in doc["figures"]}
    quick = Settings.quick_settings()
    assert ops == {
        *{("edit-4k", "overwrite", n) for n in quick.clients},
        ("append-1k", "append", quick.edits.append_clients),
        ("overwrite-64m", "overwrite", 1),
        ("overwrite-64m", "new-file", 1),
        *{("insert-mid", f"insert@{s >> 20}MiB", 1) for s in quick.edits.insert_sizes},
    }
    for f in doc["figures"]:
        assert f["peer"] is None and f["peer_absent"], f["key"]
        assert f["ratio_to_peer"] is None
        assert f["mydfs"]["measured"]["fsync"] is True, f["key"]
        assert f"| {f['workload']} {f['op']} N={f['clients']} |" in table
    by_key = {f["key"]: f["mydfs"]["measured"] for f in doc["figures"]}
    edit = by_key["edit-4k/overwrite/N=1"]
    assert edit["bytes_written_per_edit"] >= quick.edits.edit_bytes  # whole slices rewritten
    assert edit["write_amplification"] >= 1
    append = by_key[f"append-1k/append/N={quick.edits.append_clients}"]
    assert append["verified"] is True, append["checks"]
    assert by_key["overwrite-64m/overwrite/N=1"]["ratio_to_new_file_write"] is not None
    assert "no equivalent" in table and "Figures measured on mydfs alone" in table


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quick_run_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert mydfs_main(["bench", "--quick", "--out", str(out)]) == 0

    doc = orjson.loads((out / "results.json").read_bytes())
    table = (out / "results.md").read_text()
    names = list(WORKLOADS)
    assert doc["meta"]["workloads"] == names
    assert not doc["failures"]
    assert set(doc["limits"]) == {"disk", "append", "tcp"}
    for name in names:
        figures = [f for f in doc["figures"] if f["workload"] == name]
        assert figures, f"no figure for {name}"
        if name not in (*EDIT_WORKLOADS, "churn"):  # those run at their own client counts
            assert {f["clients"] for f in figures} == {1, 16}
        for f in figures:
            assert f["mydfs"]["measured"], f["key"]
            if name != "failover":  # recovering within the quick timeout is a timing matter
                assert f["mydfs"]["median"] is not None, f["key"]
            assert f"| {name} {f['op']} N={f['clients']} |" in table
        rss = doc["workloads"][name]["peak_rss_mib"]  # every process's peak, per workload
        assert rss["bench"] > 0 and any(k.startswith("mydfs:") for k in rss), rss
    assert "Peak resident size" in table

    peer = find_weed() is not None
    assert ("seaweedfs" in doc["meta"]["systems"]) == peer
    if peer:
        assert all(f["peer"] is not None or f["peer_absent"] for f in doc["figures"])
    else:
        assert any("SeaweedFS left out" in n for n in doc["notes"])

    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    chart = out / "chart.png"
    assert chart.exists() == has_matplotlib
    if has_matplotlib:
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert chart.stat().st_size > 10_000
    else:
        assert any("matplotlib" in n for n in doc["notes"])
