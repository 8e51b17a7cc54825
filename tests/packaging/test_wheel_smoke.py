"""The wheel, as a user gets it: built from a copy of the source tree with ``pip wheel``,
installed (not editable) into a fresh virtual environment with its dependencies from the
package index, then used from outside the source tree.

Shows: every subpackage and ``py.typed`` are in the wheel; ``mydfs --help``,
``mydfs bench --list`` and ``mydfs-storage selfcheck`` run; ``mydfs cluster up --groups 1``
stores a file put with ``mydfs put`` and gives the same bytes back to ``mydfs get``; SIGTERM
stops it and every process it started. Select it alone with ``-m packaging``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ClusterUp, child_pids, free_base

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["common", "tracker", "storage", "client", "raft_ext", "bench"]
TRACKER_LINE = re.compile(r"^tracker (http://127\.0\.0\.1:(\d+))$")
#: What never belongs in a build of the source tree.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".typecheck",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "bench-results",
    "mydfs-data",
)


def run(*argv: str | Path, timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; fail the test with its output unless it exits 0."""
    done = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done


@pytest.fixture(scope="module")
def venv() -> Iterator[Path]:
    """A fresh virtual environment with the wheel installed; its ``bin`` folder (all of it
    removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="mydfs-wheel-") as name:
        yield from _build_and_install(Path(name))


def _build_and_install(tmp: Path) -> Iterator[Path]:
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp / "dist", src,
        timeout=600, cwd=tmp)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("mydfs-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in PACKAGES:
        assert f"mydfs/{package}/__init__.py" in names, package
        assert f"mydfs/{package}/py.typed" in names, package
    for init in src.glob("*/**/__init__.py"):  # every subpackage of the source tree ships
        folder = init.parent.relative_to(src)
        if folder.parts[0] in PACKAGES:
            assert f"mydfs/{folder.as_posix()}/__init__.py" in names, folder
    assert "mydfs/bench/workloads/large.py" in names
    for asset in ("index.html", "dashboard.js", "dashboard.css"):  # the dashboard's files
        assert f"mydfs/tracker/static/{asset}" in names, asset
    shutil.rmtree(src)

    env_dir = tmp / "venv"
    run(sys.executable, "-m", "venv", env_dir, timeout=300, cwd=tmp)
    bin_dir = env_dir / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel,
        timeout=900, cwd=tmp)  # fmt: skip
    yield bin_dir


def test_installed_wheel_runs_its_commands_and_a_cluster(venv: Path, tmp_path: Path) -> None:
    where = run(venv / "python", "-c", "import mydfs.bench.workloads as w; print(w.__file__)",
                timeout=60, cwd=tmp_path).stdout  # fmt: skip
    assert where.startswith(str(venv.parent)), where  # the installed copy, not the source tree
    assert "cluster" in run(venv / "mydfs", "--help", timeout=60, cwd=tmp_path).stdout
    listed = run(venv / "mydfs", "bench", "--list", timeout=60, cwd=tmp_path).stdout
    assert "large" in listed, listed
    run(venv / "mydfs-storage", "selfcheck", timeout=300, cwd=tmp_path)

    data = tmp_path / "data"
    original = os.urandom(3 * (1 << 20) + 12345)
    (tmp_path / "some.file").write_bytes(original)
    up = ClusterUp("--data", str(data), "--groups", "1", "--port", str(free_base(1)),
                   cwd=tmp_path, mydfs=str(venv / "mydfs"))  # fmt: skip
    try:
        tracker = up.wait_line(TRACKER_LINE, timeout=180).group(1)
        up.children = child_pids(up.proc.pid)
        assert len(up.children) == 4, (up.children, up.seen)  # a tracker and 3 storage nodes
        mydfs = [str(venv / "mydfs"), "--tracker", tracker]
        run(*mydfs, "put", "./some.file", "/some.file", timeout=120, cwd=tmp_path)
        run(*mydfs, "get", "/some.file", "./copy", timeout=120, cwd=tmp_path)
        assert (tmp_path / "copy").read_bytes() == original
        assert up.terminate() == 0  # SIGTERM; every child checked gone by pid
    finally:
        up.kill_everything()
