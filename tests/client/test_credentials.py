"""The client's credentials file (``client/credentials.py``) and the CLI's ``--ttl``."""

from __future__ import annotations

import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mydfs.client import credentials
from mydfs.client.cli import parse_ttl
from mydfs.common.errors import InvalidArgument


def test_save_merge_and_lookup(tmp_path: Path) -> None:
    file = tmp_path / "conf" / "mydfs" / "credentials.json"
    assert credentials.lookup("http://a:1", file) == {}
    assert credentials.default_tracker(file) is None
    credentials.save("http://a:1/", token="mydfs-a", file=file)
    assert credentials.default_tracker(file) == "http://a:1"  # the first one becomes default
    credentials.save("http://b:2", token="mydfs-b", file=file)
    assert credentials.default_tracker(file) == "http://a:1"
    credentials.save("http://b:2", token="mydfs-b2", make_default=True, file=file)
    assert credentials.default_tracker(file) == "http://b:2"
    assert credentials.lookup("http://a:1/", file) == {"token": "mydfs-a", "ca": None}
    assert credentials.lookup("http://b:2", file)["token"] == "mydfs-b2"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
    assert sorted(json.loads(file.read_text())["trackers"]) == ["http://a:1", "http://b:2"]
    left = sorted(p.name for p in file.parent.iterdir())
    assert left == ["credentials.json", "credentials.json.lock"]  # no temp file left


def test_concurrent_saves_keep_every_entry(tmp_path: Path) -> None:
    file = tmp_path / "c.json"
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: credentials.save(f"http://h:{i}", token=f"t{i}", file=file), range(40)
            )
        )
    assert len(credentials.load(file)["trackers"]) == 40


def test_token_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "c.json"
    credentials.save("http://t:1", token="mydfs-file", file=file)
    monkeypatch.delenv("MYDFS_TOKEN", raising=False)
    assert credentials.token_for("http://t:1", None, file) == "mydfs-file"
    assert credentials.token_for("http://other:1", None, file) is None
    monkeypatch.setenv("MYDFS_TOKEN", "mydfs-env")
    assert credentials.token_for("http://t:1", None, file) == "mydfs-env"
    assert credentials.token_for("http://t:1", "mydfs-arg", file) == "mydfs-arg"


def test_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MYDFS_CREDENTIALS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert credentials.path() == tmp_path / "mydfs" / "credentials.json"
    monkeypatch.setenv("MYDFS_CREDENTIALS", str(tmp_path / "x.json"))
    assert credentials.path() == tmp_path / "x.json"


def test_a_broken_file_reads_as_empty(tmp_path: Path) -> None:
    file = tmp_path / "c.json"
    file.write_text("{not json")
    assert credentials.lookup("http://t:1", file) == {}
    credentials.save("http://t:1", token="mydfs-x", file=file)  # and is replaced by a good one
    assert credentials.lookup("http://t:1", file)["token"] == "mydfs-x"


def test_parse_ttl() -> None:
    assert parse_ttl("90s") == 90
    assert parse_ttl("30m") == 1800
    assert parse_ttl("1h") == 3600
    assert parse_ttl("2d") == 172800
    assert parse_ttl("45") == 45
    for bad in ("", "h", "0s", "-1h", "1.5h", "1w", "²h", "9" * 20):
        with pytest.raises(InvalidArgument):
            parse_ttl(bad)
