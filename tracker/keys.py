"""The tracker's API keys: who may call it, and with which role.

A key is a name, a role and the SHA-256 of its token; the token itself (``mydfs-`` +
``secrets.token_urlsafe(32)``) is shown once, when the key is made, and is never stored or
logged in clear. Roles are ordered ``read < write < admin``: a key allows its role and every
role below it.

:class:`Keys` is the pure core (no I/O, no clock unless one is passed in); :class:`KeyStore`
keeps it in ``<data_dir>/keys.json`` (mode 0600, folder 0700), written atomically::

    {"<name>": {"role": "read" | "write" | "admin", "sha256": "<hex>", "created": <unix s>}}

A tracker that starts without a key store makes one with the key ``admin`` (role admin) and
writes that token to ``<data_dir>/admin.token`` (0600): see :func:`open_store`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mydfs.common.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from mydfs.common.fsio import atomic_write

ROLES = ("read", "write", "admin")
TOKEN_PREFIX = "mydfs-"  # noqa: S105 - a prefix, not a secret
KEYS_FILE = "keys.json"
ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name
BOOTSTRAP_NAME = "admin"
#: Longest bearer token looked at (a real one is 49 characters).
MAX_TOKEN_CHARS = 256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def rank(role: str) -> int:
    """The role's place in ``read < write < admin``."""
    return ROLES.index(role)


def allows(role: str, required: str) -> bool:
    """Does a key of ``role`` satisfy a route that needs ``required``?"""
    return rank(role) >= rank(required)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            "a key name is 1-64 characters of letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)",
            field="name",
        )
    return name


def check_role(role: Any) -> str:
    if role not in ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(ROLES)}", field="role")
    return str(role)


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    role: str
    sha256: str
    created: float

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "sha256": self.sha256, "created": self.created}

    def public(self) -> dict[str, Any]:
        """What ``GET /admin/keys`` shows: never the hash."""
        return {"name": self.name, "role": self.role, "created": self.created}


class Keys:
    """The key table: pure, looked up by token hash."""

    def __init__(self, keys: dict[str, Key] | None = None) -> None:
        self._by_name: dict[str, Key] = dict(keys or {})
        self._by_hash = {k.sha256: k for k in self._by_name.values()}

    @classmethod
    def from_dict(cls, data: Any) -> Keys:
        if not isinstance(data, dict):
            raise ValueError("the key store is not a JSON object")
        keys = {}
        for name, rec in data.items():
            check_name(name)
            if not isinstance(rec, dict):
                raise ValueError(f"key {name!r} is not an object")
            sha, created = rec.get("sha256"), rec.get("created", 0)
            if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
                raise ValueError(f"key {name!r} has no valid sha256")
            if not isinstance(created, int | float):
                raise ValueError(f"key {name!r} has a bad created time")
            keys[name] = Key(name, check_role(rec.get("role")), sha, float(created))
        return cls(keys)

    def to_dict(self) -> dict[str, Any]:
        return {name: key.to_dict() for name, key in sorted(self._by_name.items())}

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[Key]:
        return [self._by_name[n] for n in sorted(self._by_name)]

    def lookup(self, token: str | None) -> Key | None:
        """The key whose token this is, or None (no token, or no such key)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        return self._by_hash.get(digest(token))

    def create(self, name: Any, role: Any, *, now: float | None = None) -> tuple[Key, str]:
        """Add a key; returns it with its token (the only time the token exists in clear)."""
        name, role = check_name(name), check_role(role)
        if name in self._by_name:
            raise AlreadyExists(f"a key named {name!r} exists", name=name)
        token = new_token()
        key = Key(name, role, digest(token), time.time() if now is None else now)
        self._by_name[name] = key
        self._by_hash[key.sha256] = key
        return key, token

    def remove(self, name: str) -> Key:
        key = self._by_name.get(name)
        if key is None:
            raise NotFound(f"no key named {name!r}", name=name)
        admins = [k for k in self._by_name.values() if k.role == "admin"]
        if key.role == "admin" and len(admins) == 1:
            raise Conflict("refusing to remove the last admin key", name=name)
        del self._by_name[name]
        del self._by_hash[key.sha256]
        return key


class KeyStore:
    """:class:`Keys` kept in ``<data_dir>/keys.json``; every change is written before it
    returns (blocking and small: the tracker calls it rarely)."""

    def __init__(self, data_dir: Path, keys: Keys) -> None:
        self.path = Path(data_dir) / KEYS_FILE
        self.keys = keys

    def lookup(self, token: str | None) -> Key | None:
        return self.keys.lookup(token)

    def create(self, name: Any, role: Any) -> tuple[Key, str]:
        candidate = Keys.from_dict(self.keys.to_dict())
        key, token = candidate.create(name, role)
        self._save(candidate)
        self.keys = candidate
        return key, token

    def remove(self, name: str) -> Key:
        candidate = Keys.from_dict(self.keys.to_dict())
        key = candidate.remove(name)
        self._save(candidate)
        self.keys = candidate
        return key

    def _save(self, keys: Keys) -> None:
        atomic_write(self.path, orjson.dumps(keys.to_dict(), option=orjson.OPT_INDENT_2))
        os.chmod(self.path, 0o600)


def open_store(data_dir: Path) -> tuple[KeyStore, Path | None]:
    """Load ``<data_dir>/keys.json``; without one, bootstrap: a key ``admin`` whose token is
    written to ``<data_dir>/admin.token``. Returns the store and that file's path when it was
    just written (None otherwise)."""
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / KEYS_FILE
    if path.exists():
        try:
            keys = Keys.from_dict(orjson.loads(path.read_bytes()))
        except (ValueError, InvalidArgument, orjson.JSONDecodeError) as exc:
            raise InvalidArgument(f"key store {path} is not valid: {exc}") from None
        return KeyStore(folder, keys), None
    keys = Keys()
    _, token = keys.create(BOOTSTRAP_NAME, "admin")
    token_path = folder / ADMIN_TOKEN_FILE
    atomic_write(token_path, (token + "\n").encode())
    os.chmod(token_path, 0o600)
    store = KeyStore(folder, keys)
    store._save(keys)
    return store, token_path
