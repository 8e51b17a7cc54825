"""The tracker's API key store (``tracker/keys.py``): the pure table, its file, the bootstrap,
and the route table of ``tracker/auth.py``."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from mydfs.common.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from mydfs.tracker.auth import ROUTES, required_role, under
from mydfs.tracker.keys import (
    ADMIN_TOKEN_FILE,
    KEYS_FILE,
    Keys,
    allows,
    open_store,
)


def test_roles_are_ordered() -> None:
    assert allows("admin", "write") and allows("admin", "read") and allows("write", "read")
    assert allows("read", "read")
    assert not allows("read", "write") and not allows("write", "admin")


def test_create_lookup_remove() -> None:
    keys = Keys()
    key, token = keys.create("ci", "write", now=100.0)
    assert token.startswith("mydfs-") and len(token) > 40
    assert key.sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert keys.lookup(token) == key
    assert keys.lookup(token + "x") is None
    assert keys.lookup("") is None and keys.lookup(None) is None
    assert keys.lookup("x" * 10_000) is None
    # The token is stored nowhere: only its hash.
    assert token not in json.dumps(keys.to_dict())
    with pytest.raises(AlreadyExists):
        keys.create("ci", "read")
    assert keys.remove("ci") == key
    assert keys.lookup(token) is None
    with pytest.raises(NotFound):
        keys.remove("ci")


def test_tokens_differ() -> None:
    keys = Keys()
    tokens = {keys.create(f"k{i}", "read")[1] for i in range(20)}
    assert len(tokens) == 20


@pytest.mark.parametrize("name", ["", "a b", "../x", "x" * 65, "-x", "é", None, 3])
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidArgument):
        Keys().create(name, "read")


@pytest.mark.parametrize("role", ["", "root", "READ", None])
def test_bad_roles_are_refused(role: object) -> None:
    with pytest.raises(InvalidArgument):
        Keys().create("k", role)


def test_last_admin_key_stays() -> None:
    keys = Keys()
    keys.create("admin", "admin")
    with pytest.raises(Conflict):
        keys.remove("admin")
    keys.create("second", "admin")
    keys.remove("admin")
    with pytest.raises(Conflict):
        keys.remove("second")


def test_round_trip_and_bad_files() -> None:
    keys = Keys()
    _, token = keys.create("a", "read", now=1.5)
    again = Keys.from_dict(json.loads(json.dumps(keys.to_dict())))
    assert again.lookup(token) is not None and again.to_dict() == keys.to_dict()
    for bad in (
        [],
        {"a": "x"},
        {"a": {"role": "read", "sha256": "zz"}},
        {"a": {"role": "god", "sha256": "0" * 64}},
        {"a b": {"role": "read", "sha256": "0" * 64}},
    ):
        with pytest.raises((ValueError, InvalidArgument)):
            Keys.from_dict(bad)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bootstrap_writes_the_admin_token_once(tmp_path: Path) -> None:
    folder = tmp_path / "tracker"
    store, written = open_store(folder)
    assert written == folder / ADMIN_TOKEN_FILE
    token = written.read_text().strip()
    key = store.lookup(token)
    assert key is not None and key.name == "admin" and key.role == "admin"
    assert _mode(folder) == 0o700
    assert _mode(folder / KEYS_FILE) == 0o600 and _mode(written) == 0o600
    assert token not in (folder / KEYS_FILE).read_text()
    # A second start keeps the keys and writes no token.
    written.unlink()
    again, none = open_store(folder)
    assert none is None and not written.exists()
    assert again.lookup(token) is not None


def test_store_persists_changes(tmp_path: Path) -> None:
    store, _ = open_store(tmp_path)
    key, token = store.create("reader", "read")
    assert open_store(tmp_path)[0].lookup(token) == key
    store.remove("reader")
    assert open_store(tmp_path)[0].lookup(token) is None
    assert _mode(tmp_path / KEYS_FILE) == 0o600
    # A refused change leaves the store as it was.
    with pytest.raises(AlreadyExists):
        store.create("admin", "read")
    assert [k.name for k in open_store(tmp_path)[0].keys.names()] == ["admin"]


def test_corrupt_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / KEYS_FILE).write_text("{not json")
    with pytest.raises(InvalidArgument, match="key store"):
        open_store(tmp_path)


def test_route_table() -> None:
    assert required_role("GET", "/health") is None
    assert required_role("HEAD", "/files/{path}") == "read"
    assert required_role("PUT", "/meta/files/{path}") == "write"
    assert required_role("GET", "/meta/trash") == "read"
    assert required_role("POST", "/meta/trash/purge") == "write"
    assert required_role("DELETE", "/meta/trash/{file_id}") == "admin"
    assert required_role("PATCH", "/somewhere/new") == "admin"  # unlisted: closed
    assert all(role in (None, "read", "write", "admin") for role in ROUTES.values())


def test_public_prefixes() -> None:
    prefixes = ("/pub", "/a/b/")
    assert under("/pub", prefixes) and under("/pub/x", prefixes) and under("/a/b/c", prefixes)
    assert not under("/public", prefixes) and not under("/a", prefixes)
    assert under("/anything", ("/",))
    assert not under("/pub", ())
