"""The client's credentials file: which token (and CA) to use for which tracker.

Where: ``$MYDFS_CREDENTIALS``, else ``${XDG_CONFIG_HOME:-~/.config}/mydfs/credentials.json``.
The file is mode 0600 in a folder of mode 0700, and is replaced atomically on every save (under
an ``flock`` of ``credentials.json.lock`` beside it, so concurrent savers merge)::

    {"default": "<tracker url>",
     "trackers": {"<tracker url>": {"token": "mydfs-...", "ca": null}}}

``default`` is the tracker the CLI uses when neither ``--tracker`` nor ``$MYDFS_TRACKER`` names
one. Tracker URLs are compared without a trailing slash. A token is resolved (:func:`token_for`)
from an explicit value, else ``$MYDFS_TOKEN``, else this file.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

ENV_FILE = "MYDFS_CREDENTIALS"
ENV_TOKEN = "MYDFS_TOKEN"  # noqa: S105 - the name of an environment variable


def path() -> Path:
    """Where the credentials file is (it may not exist)."""
    explicit = os.environ.get(ENV_FILE)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mydfs" / "credentials.json"


def _key(tracker: str) -> str:
    return tracker.rstrip("/")


def load(file: Path | None = None) -> dict[str, Any]:
    """The file's contents (an empty record when there is no file or it is not valid)."""
    target = file or path()
    try:
        data = json.loads(target.read_text())
    except (OSError, ValueError):
        return {"default": None, "trackers": {}}
    if not isinstance(data, dict):
        return {"default": None, "trackers": {}}
    trackers = data.get("trackers")
    if not isinstance(trackers, dict):
        trackers = {}
    default = data.get("default")
    return {"default": default if isinstance(default, str) else None, "trackers": trackers}


def lookup(tracker: str, file: Path | None = None) -> dict[str, Any]:
    """The record of ``tracker`` (``{"token": ..., "ca": ...}``), or ``{}``."""
    record = load(file)["trackers"].get(_key(tracker))
    return record if isinstance(record, dict) else {}


def default_tracker(file: Path | None = None) -> str | None:
    default: str | None = load(file)["default"]
    return default


def token_for(tracker: str, token: str | None = None, file: Path | None = None) -> str | None:
    """The token to send to ``tracker``: ``token``, else ``$MYDFS_TOKEN``, else the file's."""
    if token:
        return token
    env = os.environ.get(ENV_TOKEN)
    if env:
        return env
    found = lookup(tracker, file).get("token")
    return found if isinstance(found, str) and found else None


def save(
    tracker: str,
    *,
    token: str | None = None,
    ca: str | None = None,
    make_default: bool = False,
    file: Path | None = None,
) -> Path:
    """Merge ``tracker``'s token (and CA) into the file, atomically; returns the file's path."""
    target = file or path()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock_fd = os.open(target.with_name(target.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # concurrent savers merge instead of losing entries
        _merge(target, tracker, token, ca, make_default)
    finally:
        os.close(lock_fd)
    return target


def _merge(
    target: Path, tracker: str, token: str | None, ca: str | None, make_default: bool
) -> None:
    data = load(target)
    record = dict(data["trackers"].get(_key(tracker)) or {})
    if token is not None:
        record["token"] = token
    record.setdefault("token", None)
    record["ca"] = ca if ca is not None else record.get("ca")
    data["trackers"][_key(tracker)] = record
    if make_default or not data["default"]:
        data["default"] = _key(tracker)
    fd, tmp = tempfile.mkstemp(prefix=".credentials-", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp makes it 0600
            json.dump(data, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
