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

from mydfs.bench.cli import main, size
from mydfs.bench.figures import Figure, Result, percentile
from mydfs.bench.seaweed import find_weed
from mydfs.bench.suite import WORKLOADS, Settings
from mydfs.client.cli import main as mydfs_main


def test_list_names_every_workload(capsys: pytest.CaptureFixture[str]) -> None:
    assert mydfs_main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("large", "small-64k", "small-1k", "meta", "failover"):
        assert name in out
    assert set(WORKLOADS) >= {"large", "small-64k", "small-1k", "meta", "failover"}


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


@pytest.mark.slow
@pytest.mark.timeout(240)
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
        assert all(f["peer"] is not None for f in doc["figures"])
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
