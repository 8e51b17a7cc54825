"""The shipped Prometheus set-up (``deploy/prometheus/``) against a real Prometheus server and
a running cluster.

Shows: ``promtool`` accepts the config and the alert rules as shipped; a Prometheus run on them
(with 1 s intervals and 2 s ``for:`` durations, the only changes) scrapes the tracker and every
storage node with every target up (``promtool check metrics`` passes on their expositions),
and raises ``MydfsStorageNodeDown`` (and ``MydfsTargetDown``) for a follower killed with
SIGKILL; every query of the Grafana board (``deploy/grafana/mydfs.json``) is valid and finds
data there.

Needs the ``prometheus`` and ``promtool`` binaries (Debian: ``apt-get install -y
--no-install-recommends prometheus``); skipped without them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import free_ports, http_json, wait_for

from mydfs.client.local_cluster import LocalCluster

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mydfs.json"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="the prometheus/promtool binaries are absent "
    "(apt-get install -y --no-install-recommends prometheus)",
)


def test_promtool_accepts_the_shipped_config_and_rules() -> None:
    assert PROMTOOL is not None
    for args in (
        ["check", "config", str(DEPLOY / "prometheus.yml")],
        ["check", "rules", str(DEPLOY / "alerts.yml")],
    ):
        done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def _prepare(folder: Path, cluster: LocalCluster) -> Path:
    """The shipped files with fast intervals and this cluster's targets."""
    shutil.copytree(DEPLOY, folder, dirs_exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(re.sub(r"(scrape|evaluation)_interval: \S+", r"\1_interval: 1s",
                             config.read_text()))  # fmt: skip
    rules = folder / "alerts.yml"
    rules.write_text(re.sub(r"for: \S+", "for: 2s", rules.read_text()))
    tracker = cluster.tracker_url.removeprefix("http://")
    (folder / "targets" / "tracker.json").write_text(json.dumps([{"targets": [tracker]}]))
    storage = [
        {
            "targets": [n.url.removeprefix("http://")],
            "labels": {"group": str(n.group_id), "node": n.name},
        }
        for n in cluster.nodes()
    ]
    (folder / "targets" / "storage.json").write_text(json.dumps(storage))
    return config


@pytest.fixture
def prometheus(tmp_path: Path, make_cluster: Any) -> Iterator[tuple[str, LocalCluster]]:
    assert PROMETHEUS is not None
    cluster: LocalCluster = make_cluster(groups=1)
    config = _prepare(tmp_path / "prom", cluster)
    port = free_ports(1)[0]
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                return http_json(url + "/-/ready")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=30, what="prometheus to be ready")
        yield url, cluster
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


def _api(url: str, path: str, **query: str) -> Any:
    status, body = http_json(f"{url}/api/v1/{path}?{urllib.parse.urlencode(query)}")
    assert status == 200 and body["status"] == "success", body
    return body["data"]


def _firing(url: str) -> set[tuple[str, str]]:
    """(alert name, node or instance) of every firing alert."""
    alerts = _api(url, "alerts")["alerts"]
    return {
        (a["labels"]["alertname"], a["labels"].get("node") or a["labels"].get("instance", ""))
        for a in alerts
        if a["state"] == "firing"
    }


def test_prometheus_scrapes_the_cluster_and_alerts_on_a_dead_node(
    prometheus: tuple[str, LocalCluster],
) -> None:
    url, cluster = prometheus

    def all_up() -> bool:
        targets = _api(url, "targets")["activeTargets"]
        return len(targets) == 4 and all(t["health"] == "up" for t in targets)

    wait_for(all_up, timeout=30, what="every target up")
    assert PROMTOOL is not None
    for target in (cluster.tracker_url, cluster.nodes()[0].url):  # the exposition passes lint
        with urllib.request.urlopen(target + "/metrics", timeout=10) as resp:
            exposition = resp.read()
        done = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition,
                              capture_output=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    rules = _api(url, "rules")["groups"]
    assert {r["name"] for g in rules for r in g["rules"]} >= {
        "MydfsStorageNodeDown",
        "MydfsGroupWithoutLeader",
        "MydfsGroupNotWritable",
        "MydfsDiskAlmostFull",
        "MydfsCorruptSlices",
    }
    wait_for(
        lambda: _api(url, "query", query='mydfs_tracker_group_writable{group="1"}')["result"],
        timeout=15,
        what="the group's writability in Prometheus",
    )
    assert not {name for name, _ in _firing(url)} & {"MydfsStorageNodeDown", "MydfsTargetDown"}

    # Every query of the Grafana board is valid PromQL and finds data.
    board = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10

    def all_answer() -> bool:
        for expr in exprs:
            query = expr.replace("$__rate_interval", "10s")
            if not _api(url, "query", query=query)["result"]:
                return False
        return True

    wait_for(all_answer, timeout=30, what="every Grafana query to find data")

    leader = cluster.wait_leader(1)
    follower = next(n for n in cluster.group(1) if n is not leader)
    follower.kill()
    wait_for(
        lambda: (
            {("MydfsStorageNodeDown", follower.name), ("MydfsTargetDown", follower.name)}
            <= _firing(url)
        ),
        timeout=45,
        what="the node-down alerts to fire",
    )
