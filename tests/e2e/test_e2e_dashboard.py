"""The tracker's dashboard (``/ui``) in a real browser: Playwright driving Debian's Chromium.

Shows: on a running cluster of 2 groups the page's map lists all 6 storage nodes, up; a
follower killed with SIGKILL turns down on the page within a few heartbeat intervals (the
tracker's timeout is 3 s, heartbeats every 1 s) and an event says so; a file read 25 times
appears with its path in the hot-slice table; the charts draw. A screenshot is saved in the
test's temporary folder (and in ``$MYDFS_SCREENSHOT_DIR`` when set; the README's picture comes
from there).

Needs the ``playwright`` package (the test extra) and a Chromium binary (Debian:
``apt-get install -y chromium``; ``playwright install`` is not used); skipped without them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import random_bytes

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster

CHROMIUM = os.environ.get("MYDFS_CHROMIUM") or shutil.which("chromium")
try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(
        sync_playwright is None, reason="the playwright package is absent (pip install playwright)"
    ),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install -y chromium)"),
]

#: Chromium flags that work in a container without a display or a network.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Tracker heartbeat timeout (3 s) plus a few heartbeat intervals and the page's refresh.
DOWN_WITHIN_MS = 12_000


def _row(page: Page, node: str, up: str) -> str:
    return f'#map tr[data-node="{node}"][data-up="{up}"]'


def test_dashboard_shows_nodes_failures_and_hot_slices(make_cluster: Any, tmp_path: Path) -> None:
    cluster: LocalCluster = make_cluster(groups=2)
    names = sorted(n.name for n in cluster.nodes())
    assert sync_playwright is not None and CHROMIUM is not None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{cluster.tracker_url}/ui#token={cluster.token}")
            page.wait_for_function(
                "n => document.querySelectorAll('#map tr[data-up=\"1\"]').length === n",
                arg=len(names),
                timeout=20_000,
            )
            shown = sorted(page.locator("#map tr[data-node]").evaluate_all(
                "rows => rows.map(r => r.dataset.node)"))  # fmt: skip
            assert shown == names
            assert page.locator("#map .group").count() == 2

            leader = cluster.wait_leader(1)
            follower = next(n for n in cluster.group(1) if n is not leader)
            follower.kill()
            page.wait_for_selector(_row(page, follower.name, "0"), timeout=DOWN_WITHIN_MS)
            page.wait_for_function(
                "name => [...document.querySelectorAll('#events li')]"
                ".some(li => li.textContent.includes(name) && li.textContent.includes('down'))",
                arg=follower.name,
                timeout=10_000,
            )

            with Client(cluster.tracker_url, deadline=60.0) as c:
                c.put("/dashboard/hot.bin", random_bytes(4000, 7))
                for _ in range(25):
                    assert len(c.read("/dashboard/hot.bin")) == 4000
            page.wait_for_function(
                "() => [...document.querySelectorAll('#hot tbody tr')]"
                ".some(tr => tr.textContent.includes('/dashboard/hot.bin'))",
                timeout=15_000,
            )
            hot = page.locator("#hot tbody tr", has_text="/dashboard/hot.bin")
            assert int(hot.locator("td").nth(3).inner_text()) >= 25  # recent reads
            assert "tracker unreachable" not in page.locator("#status").inner_text()

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            keep = os.environ.get("MYDFS_SCREENSHOT_DIR")
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(keep) / "dashboard.png")
        finally:
            browser.close()
