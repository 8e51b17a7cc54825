"""Where a server process gets the cluster secret, without it ever being on a command line.

A command line is readable by every local user (``/proc/PID/cmdline``, ``ps``), and with the
secret a stranger can sign internal calls, mint grants and talk to the Raft port. So the secret
comes from, in this order:

1. config key ``secret`` in the ``--config`` TOML file (keep that file 0600), or the
   ``--secret`` flag, kept for compatibility: it works but prints a warning;
2. config key ``secret_file``: a file holding the secret (surrounding whitespace is stripped),
   refused unless only its owner can read it (mode 0600 or 0400);
3. the environment variable ``MYDFS_SECRET`` (``/proc/PID/environ`` is readable only by the
   process's owner). The local cluster launcher (``client/process.py``) uses this one.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mydfs.common.config import ConfigError, Option

SECRET_ENV = "MYDFS_SECRET"  # noqa: S105 - the variable name, not a secret

SECRET_OPTIONS: tuple[Option, ...] = (
    Option(
        "secret",
        "str",
        "",
        "cluster secret (>= 16 chars); prefer secret_file or $MYDFS_SECRET "
        "(a --secret flag is visible to every local user)",
    ),
    Option(
        "secret_file",
        "path",
        "",
        "file holding the cluster secret (mode 0600); else $MYDFS_SECRET",
        "/etc/mydfs/secret",
    ),
)


def read_secret_file(path: Path) -> str:
    """The secret in ``path``; :class:`ConfigError` if unreadable, empty or not owner-only."""
    try:
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(
                f"config key secret_file: {path} is readable by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config key secret_file: cannot read {path}: {exc}") from None
    if not text:
        raise ConfigError(f"config key secret_file: {path} is empty")
    return text


def resolve_secret(
    values: Mapping[str, Any],
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The cluster secret from the merged config ``values`` (see the module doc)."""
    env = os.environ if environ is None else environ
    if values.get("secret"):
        if args is not None and getattr(args, "secret", None) is not None:
            print(
                "mydfs: warning: --secret on the command line is readable by every local user; "
                f"use secret_file or ${SECRET_ENV} instead",
                file=sys.stderr,
            )
        return str(values["secret"])
    if values.get("secret_file"):
        return read_secret_file(Path(values["secret_file"]))
    from_env = env.get(SECRET_ENV, "").strip()
    if from_env:
        return from_env
    raise ConfigError(
        f"missing cluster secret: set secret_file, ${SECRET_ENV}, or secret in --config"
    )


__all__ = ["SECRET_ENV", "SECRET_OPTIONS", "read_secret_file", "resolve_secret"]
