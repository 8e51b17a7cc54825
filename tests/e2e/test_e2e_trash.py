"""Lazy delete on a real cluster, through the ``mydfs`` command line (``docs/space.md``, Trash).

Shows: ``rm`` hides a file at once and ``trash ls`` shows it (held, with the time it will be
freed); ``undelete`` restores it byte-identical under its old name and under a new one; an
undelete onto a taken path fails and loses nothing; ``trash purge`` frees the slices (the
group's live slice count and the reclaimer's metric show it) and the record goes; ``rm --now``
does both at once; bad input gets exit 1 and one clear line. Then, with a short retention, a
record past it is marked (``reclaiming``: undelete is refused from then on) and reclaimed, and a
tracker killed with -9 right after the mark finishes the reclaim after its restart; the file
can never be undeleted.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from typing import Any

from e2e_helpers import SLICE, cli_ok, random_bytes, restart_tracker, run_cli
from helpers import http_json, wait_for

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster

DEADLINE = 60.0


def trash(c: LocalCluster) -> list[dict[str, Any]]:
    """The trash as ``GET /meta/trash`` shows it (what ``mydfs trash ls --json`` prints)."""
    status, body = http_json(c.tracker_url + "/meta/trash", headers=c.auth_headers())
    assert status == 200, body
    records: list[dict[str, Any]] = body["trash"]
    return records


def record_of(c: LocalCluster, path: str) -> dict[str, Any] | None:
    found = [r for r in trash(c) if r["path"] == path]
    return found[-1] if found else None


def live_slices(c: LocalCluster) -> int | None:
    """The group's live slice count, as its leader last reported it."""
    status, body = http_json(c.tracker_url + "/cluster", headers=c.auth_headers())
    assert status == 200, body
    [group] = body["groups"]
    leaders = [n for n in group["nodes"] if n["role"] == "leader" and n["up"]]
    return int(leaders[0]["used_slots"]) if leaders else None


def reported_slices(c: LocalCluster) -> int:
    wait_for(lambda: live_slices(c) is not None, timeout=DEADLINE, what="a leader's report")
    count = live_slices(c)
    assert count is not None
    return count


def reclaimed_metric(c: LocalCluster) -> float:
    with urllib.request.urlopen(c.tracker_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(r"^mydfs_tracker_reclaimed_slices_total ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def fails(*args: str, c: LocalCluster, expect: str | tuple[str, ...]) -> None:
    """The command fails (exit 1) with one line naming the reason (one of ``expect``)."""
    done = run_cli(*args, tracker=c.tracker_url)
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 1, (args, done.returncode, done.stdout, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    words = (expect,) if isinstance(expect, str) else expect
    assert any(w.lower() in err.lower() for w in words), (args, err)


def test_rm_trash_undelete_purge(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster(groups=1, trash_retention=3600)
    t = c.tracker_url
    files = {"/t/a.bin": SLICE + 123, "/t/b.bin": 2 * SLICE + 7, "/t/c.bin": 1000}
    data = {path: random_bytes(size, seed=700 + n) for n, (path, size) in enumerate(files.items())}
    with Client(t, deadline=60.0) as client:
        for path, content in data.items():
            client.put(path, content)

        # rm hides the file at once; trash ls shows it, held for the retention.
        cli_ok("rm", "/t/a.bin", tracker=t)
        assert not client.exists("/t/a.bin")
        assert [e.name for e in client.listdir("/t")] == ["b.bin", "c.bin"]
        [rec] = json.loads(cli_ok("trash", "ls", "--json", tracker=t).stdout)
        assert (rec["path"], rec["state"], rec["reason"]) == ("/t/a.bin", "held", "deleted")
        assert rec["size"] == files["/t/a.bin"] and rec["restorable"] is True
        assert rec["free_at"] == rec["time"] + 3600
        line = cli_ok("trash", "ls", tracker=t).stdout.decode()
        assert "/t/a.bin" in line and rec["file_id"] in line and "held" in line

        # undelete: byte-identical, under its old name and under a new one.
        cli_ok("undelete", "/t/a.bin", tracker=t)
        assert client.read("/t/a.bin") == data["/t/a.bin"] and trash(c) == []
        client.delete("/t/a.bin")
        cli_ok("undelete", "/t/a.bin", "/t/renamed/a2.bin", tracker=t)
        assert client.read("/t/renamed/a2.bin") == data["/t/a.bin"]
        assert not client.exists("/t/a.bin")

        # undelete onto a taken path: refused, nothing lost on either side.
        client.delete("/t/b.bin")
        client.put("/t/b.bin", b"a new file at the old path")
        fails("undelete", "/t/b.bin", c=c, expect="exists")
        fails("undelete", "/t/b.bin", "/t/renamed/a2.bin", c=c, expect="exists")
        assert client.read("/t/b.bin") == b"a new file at the old path"
        b_rec = record_of(c, "/t/b.bin")
        assert b_rec is not None and b_rec["state"] == "held"

        # Bad input: exit 1 and a clear line, nothing changed.
        fails("undelete", "/t/never.bin", c=c, expect="no trash record")
        fails("undelete", "relative.bin", c=c, expect="path")
        fails("undelete", "/t/b.bin", "--id", "nothex", c=c, expect="file_id")
        fails("trash", "purge", "/t/never.bin", c=c, expect="no trash record")
        fails("trash", "purge", c=c, expect="needs a path")
        fails("trash", "purge", "--all", c=c, expect="--yes")
        assert record_of(c, "/t/b.bin") == b_rec

        # purge frees b's slices at the reclaimer's next pass; its record goes.
        before = reported_slices(c)
        metric = reclaimed_metric(c)
        out = cli_ok("trash", "purge", "/t/b.bin", tracker=t).stdout.decode()
        assert b_rec["file_id"] in out
        wait_for(lambda: record_of(c, "/t/b.bin") is None, timeout=DEADLINE, what="b to go")
        assert reclaimed_metric(c) >= metric + 3
        wait_for(lambda: live_slices(c) == before - 3, timeout=DEADLINE, what="b's 3 slices")
        fails("undelete", "/t/b.bin", c=c, expect="no trash record")

        # rm --now: removed and freed at once.
        cli_ok("rm", "--now", "/t/c.bin", tracker=t)
        assert not client.exists("/t/c.bin")
        wait_for(lambda: record_of(c, "/t/c.bin") is None, timeout=DEADLINE, what="c to go")
        wait_for(lambda: live_slices(c) == before - 4, timeout=DEADLINE, what="c's slice")
        assert client.read("/t/renamed/a2.bin") == data["/t/a.bin"]  # untouched throughout


def test_past_retention_reclaimed_even_across_a_kill_9(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    """A record past the retention is marked, then reclaimed. The tracker is killed (-9) right
    after the mark, slow enough (one slice every 4 s) that slices are left; after its restart
    it finishes, and the file can never come back."""
    c = make_cluster(groups=1, trash_retention=3600)
    t = c.tracker_url
    with Client(t, deadline=60.0) as client:
        before = reported_slices(c)
        client.put("/t/big.bin", random_bytes(3 * SLICE + 1, seed=799))
        wait_for(lambda: live_slices(c) == before + 4, timeout=DEADLINE, what="big's slices")
        cli_ok("rm", "/t/big.bin", tracker=t)
    restart_tracker(c, trash_retention=2, reclaim_rate=0.25)

    def marked() -> dict[str, Any] | None:
        r = record_of(c, "/t/big.bin")
        assert r is not None, "reclaimed before the mark was seen"
        return r if r["state"] == "reclaiming" else None

    big = wait_for(marked, timeout=DEADLINE, what="the reclaimer's mark")
    assert big["restorable"] is False and big["free_at"] is None
    fails("undelete", "/t/big.bin", c=c, expect="no longer be undeleted")
    proc = c.tracker_process
    assert proc is not None
    proc.kill()  # SIGKILL after the mark, while slices are left
    restart_tracker(c, reclaim_rate=200)
    after = record_of(c, "/t/big.bin")
    assert after is None or after["state"] == "reclaiming"  # the mark survived the kill
    fails("undelete", "/t/big.bin", "/t/big2.bin", c=c, expect=("no longer", "no trash record"))
    wait_for(lambda: record_of(c, "/t/big.bin") is None, timeout=DEADLINE, what="big to go")
    wait_for(lambda: live_slices(c) == before, timeout=DEADLINE, what="big's 4 slices freed")
    fails("undelete", "/t/big.bin", c=c, expect="no trash record")
