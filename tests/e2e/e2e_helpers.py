"""Helpers shared by the end-to-end tests: random files, the ``mydfs`` CLI and curl as
subprocesses, plain-HTTP probes of the tracker and the storage nodes (ports, bounded waits and
``http_json`` are in ``tests/helpers.py``).

``curl`` and ``http_request`` send the tracker's API key (``Authorization: Bearer``, the one a
started cluster saved in the session's credentials file) to any URL whose origin has one,
unless ``auth=False`` or the arguments already carry an ``Authorization`` header.

Everything here talks to real processes on 127.0.0.1 only. Waits are polls with deadlines;
nothing depends on a fixed sleep.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import subprocess
from collections.abc import Iterable
from itertools import groupby
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from helpers import auth_headers, entry_point, free_base, http_json, tracker_token

from mydfs.client.local_cluster import LocalCluster
from mydfs.common import grants

T = TypeVar("T")

#: Payload bytes of one slice (a 4 MiB slot minus its 4 KiB header area).
SLICE = 4_190_208
MIB = 1 << 20
#: The sizes the issue names: empty, one byte, and around one slice.
EDGE_SIZES = [0, 1, SLICE - 1, SLICE, SLICE + 1]

# --- ports ---------------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released; below the ephemeral range)."""
    return free_base(0)


# --- data ---------------------------------------------------------------------------------------


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write_random(path: Path, size: int, seed: int) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; return their sha256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    left = size
    with open(path, "wb") as f:
        while left:
            chunk = rng.randbytes(min(left, 8 * MIB))
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_slice(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


# --- subprocesses --------------------------------------------------------------------------------


def run_cli(
    *args: str,
    tracker: str | None = None,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``mydfs [--tracker URL] ARGS`` and capture its output (never raises on failure)."""
    full_env = {k: v for k, v in os.environ.items() if k != "MYDFS_TRACKER"}
    full_env.update(env or {})
    argv = [entry_point("mydfs"), *(["--tracker", tracker] if tracker else []), *args]
    return subprocess.run(
        argv,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def cli_ok(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI and fail the test with its stderr unless it exits 0."""
    done = run_cli(*args, **kwargs)
    assert done.returncode == 0, (
        f"mydfs {' '.join(args)} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
    )
    return done


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def bearer_args(args: Iterable[str]) -> list[str]:
    """``-H "Authorization: Bearer <token>"`` for the first URL in ``args`` whose origin has a
    saved API key (nothing if none has, or if an Authorization header is already given)."""
    args = list(args)
    if any(a.lower().startswith("authorization:") for a in args):
        return []
    for arg in args:
        if arg.startswith(("http://", "https://")):
            token = tracker_token(origin_of(arg))
            if token:
                return ["-H", f"Authorization: Bearer {token}"]
    return []


def curl(
    *args: str, timeout: float = 180.0, cwd: Path | None = None, auth: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """``curl -sS ARGS`` (never raises on failure); with ``auth``, the tracker's API key."""
    extra = bearer_args(args) if auth else []
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(int(timeout)), *extra, *args],
        capture_output=True,
        timeout=timeout + 10,
        check=False,
        cwd=cwd,
    )


def curl_ok(
    *args: str, timeout: float = 180.0, cwd: Path | None = None, auth: bool = True
) -> bytes:
    """``curl -sS --fail-with-body ARGS``; the body (stdout), or a test failure naming curl's
    error and the start of the error body."""
    done = curl("--fail-with-body", *args, timeout=timeout, cwd=cwd, auth=auth)
    if done.returncode != 0:
        body = done.stdout
        if "-o" in args:
            out = (cwd or Path()) / args[args.index("-o") + 1]
            body = out.read_bytes()[:1000] if out.exists() else b""
        raise AssertionError(
            f"curl {' '.join(args)}: {done.stderr.decode(errors='replace').strip()} "
            f"{body[:1000].decode(errors='replace')}"
        )
    return done.stdout


def curl_head(url: str, *extra: str) -> tuple[int, dict[str, str]]:
    """``curl -sSL -I URL``: the status and headers (lower-case names) of the final response."""
    out = curl_ok("-L", "-I", *extra, url).decode("latin-1")
    blocks = [b for b in out.replace("\r\n", "\n").split("\n\n") if b.strip()]
    lines = blocks[-1].strip().split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


# --- plain HTTP ----------------------------------------------------------------------------------


def http_request(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    auth: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    """One request, no redirects followed: (status, headers with lower-case names, body).
    The URL's path is sent exactly as written (nothing is normalised)."""
    parts = urlsplit(url)
    if auth:
        headers = {**auth_headers(tracker_token(origin_of(url))), **(headers or {})}
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def group_nodes(tracker: str) -> dict[int, list[str]]:
    """The storage node URLs of every group, as the tracker lists them (down ones too)."""
    status, body = http_json(f"{tracker}/cluster", headers=auth_headers(tracker_token(tracker)))
    assert status == 200, body
    return {int(g["group_id"]): [n["url"] for n in g["nodes"]] for g in body["groups"]}


def up_nodes(tracker: str) -> dict[int, set[str]]:
    status, body = http_json(f"{tracker}/cluster", headers=auth_headers(tracker_token(tracker)))
    assert status == 200, body
    return {int(g["group_id"]): {n["url"] for n in g["nodes"] if n["up"]} for g in body["groups"]}


def read_grant(cluster: LocalCluster, file_id: str) -> str:
    """A read grant for ``file_id`` minted with the cluster's secret (what the tracker's
    ``GET /meta/files`` answer carries): storage nodes serve ``/chain`` and ``/slices`` with
    it only."""
    return grants.issue_for(cluster.secret, "read", 3600, file_id=file_id)


def walk_chain(
    tracker: str, head: Iterable[int] | None, slices: int, *, grant: str
) -> list[dict[str, Any]]:
    """Every slice of a file, found the documented way: start at the head the tracker gives,
    ask a node of that group for its run (``GET /chain/{slot}?max=n``, with the file's read
    ``grant``), continue in the group the run's ``next`` names."""
    nodes = group_nodes(tracker)
    headers = {grants.GRANT_HEADER: grant}
    entries: list[dict[str, Any]] = []
    current = None if head is None else list(head)
    hops = 0
    while current is not None and len(entries) < slices:
        hops += 1
        assert hops <= slices + 1, f"chain walk does not progress at {current}"
        group, slot = int(current[0]), int(current[1])
        status, body = http_json(
            f"{nodes[group][0]}/chain/{slot}?max={slices - len(entries)}", headers=headers
        )
        assert status == 200, f"/chain/{slot} on group {group}: {status} {body}"
        entries += body["entries"]
        current = body["next"]
    return entries


def runs_of(entries: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(group, run length) for each run of consecutive slices in one group."""
    return [(g, len(list(run))) for g, run in groupby(e["group"] for e in entries)]


def slice_status_everywhere(tracker: str, entry: dict[str, Any], *, grant: str) -> list[int]:
    """The HTTP status every node of the slice's group answers for ``GET /slices/{slot}?gen``
    (with the file's read ``grant``)."""
    out = []
    for url in group_nodes(tracker)[int(entry["group"])]:
        try:
            status, _, _ = http_request(
                f"{url}/slices/{entry['slot']}?gen={entry['generation']}",
                headers={grants.GRANT_HEADER: grant},
                timeout=5.0,
            )
        except OSError:
            status = -1
        out.append(status)
    return out


# --- processes -----------------------------------------------------------------------------------


def restart_tracker(c: LocalCluster, **options: Any) -> None:
    """kill -9 the tracker (if it runs), set ``options`` in its config, start it again and wait
    until it answers."""
    proc = c.tracker_process
    assert proc is not None
    if proc.running:
        proc.kill()  # SIGKILL
    proc.options.update(options)
    c.start([proc], timeout=90.0)
