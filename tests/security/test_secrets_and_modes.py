"""The cluster secret never on a command line or in a log; data and metadata owner-only.

A running cluster (tracker + one group, started by the launcher ``client/process.py``) is
checked from outside: ``/proc/PID/cmdline`` of every process, every log, and the mode of every
file (0600) and folder (0700) under its data folder: volume files, node folders, Raft journal,
meta and snapshots, tracker edit logs and checkpoints, the layout file and the logs.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mydfs.client import Client
from mydfs.client.local_cluster import LocalCluster
from mydfs.client.process import wait_for
from mydfs.common.config import ConfigError
from mydfs.common.secretfile import SECRET_ENV, resolve_secret
from mydfs.tracker import config as tracker_config

SECRET = "secret-for-the-secret-test-0123456789"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("secrets") / "cluster"
    c = LocalCluster(root, groups=1, secret=SECRET, die_with_parent=True)
    assert c.tracker_process is not None
    c.tracker_process.options["checkpoint_edits"] = 2  # a checkpoint soon after the writes
    try:
        c.start(timeout=90)
        with Client(c.tracker_url) as client:
            for i in range(3):
                client.put(f"/modes/{i}.bin", os.urandom(5 << 20))  # two slices each
        wait_for(
            lambda: list((root / "tracker").glob("checkpoint-*")),
            timeout=30,
            what="a tracker checkpoint",
        )
        yield c
    finally:
        c.stop()


def test_no_secret_on_any_command_line_or_log(cluster: LocalCluster) -> None:
    procs = cluster.processes()
    assert len(procs) == 4
    for proc in procs:
        assert proc.pid is not None and proc.running
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert SECRET.encode() not in cmdline, f"{proc.name}: secret on its command line"
        assert b"--secret" not in cmdline
        environ = Path(f"/proc/{proc.pid}/environ")
        assert stat.S_IMODE(environ.stat().st_mode) & 0o077 == 0  # owner-only, as the kernel sets
        assert SECRET not in proc.log_text(), f"{proc.name}: secret in its log"


def test_data_and_metadata_are_owner_only(cluster: LocalCluster) -> None:
    root = cluster.root
    seen_files: list[str] = []
    bad: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        mode = stat.S_IMODE(os.stat(dirpath).st_mode)
        if mode != 0o700:
            bad.append(f"{dirpath}: folder mode {mode:04o}")
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            seen_files.append(os.path.relpath(path, root))
            if stat.S_IMODE(st.st_mode) != 0o600:
                bad.append(f"{path}: file mode {stat.S_IMODE(st.st_mode):04o}")
    assert not bad, "\n".join(bad)
    names = {Path(p).name for p in seen_files}
    # What the walk must have covered.
    assert "volume.dat" in names
    assert "cluster.json" in names
    assert any(p.startswith("g1n1/raft/") for p in seen_files), seen_files
    assert any(p.startswith("tracker/edits-") for p in seen_files), seen_files
    assert any(p.startswith("tracker/checkpoint-") for p in seen_files), seen_files


def test_restrict_tree_tightens_an_old_data_folder(tmp_path: Path) -> None:
    from mydfs.common.fsio import restrict_tree

    (tmp_path / "d" / "raft").mkdir(parents=True, mode=0o755)
    (tmp_path / "d" / "volume.dat").write_bytes(b"x")
    (tmp_path / "d" / "volume.dat").chmod(0o644)
    (tmp_path / "d" / "raft").chmod(0o755)
    restrict_tree(tmp_path / "d")
    assert stat.S_IMODE((tmp_path / "d" / "volume.dat").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d" / "raft").stat().st_mode) == 0o700


# -- where the secret comes from -------------------------------------------------------------


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**kw)


def test_secret_file_must_be_owner_only(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text(SECRET + "\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve_secret({"secret": "", "secret_file": f}, environ={})
    f.chmod(0o600)
    assert resolve_secret({"secret": "", "secret_file": f}, environ={}) == SECRET
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(ConfigError, match="empty"):
        resolve_secret({"secret_file": tmp_path / "empty"}, environ={})


def test_secret_from_env_and_missing(tmp_path: Path) -> None:
    assert resolve_secret({"secret": "", "secret_file": ""}, environ={SECRET_ENV: SECRET}) == (
        SECRET
    )
    with pytest.raises(ConfigError, match="missing cluster secret"):
        resolve_secret({"secret": "", "secret_file": ""}, environ={})


def test_secret_flag_still_works_but_warns(capsys: pytest.CaptureFixture[str]) -> None:
    got = resolve_secret({"secret": SECRET}, _args(secret=SECRET), environ={})
    assert got == SECRET
    assert "--secret on the command line" in capsys.readouterr().err


def test_tracker_config_reads_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    f = tmp_path / "secret"
    f.write_text(SECRET)
    f.chmod(0o600)
    parser = argparse.ArgumentParser()
    from mydfs.common.config import add_arguments

    add_arguments(parser, tracker_config.OPTIONS)
    args = parser.parse_args(["--data-dir", str(tmp_path / "t"), "--secret-file", str(f)])
    assert tracker_config.from_args(args).secret == SECRET
    monkeypatch.setenv(SECRET_ENV, SECRET)
    args = parser.parse_args(["--data-dir", str(tmp_path / "t")])
    assert tracker_config.from_args(args).secret == SECRET
