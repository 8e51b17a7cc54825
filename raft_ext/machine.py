"""The replicated state-machine contract and the command codec.

A :class:`StateMachine` is plugged into a :class:`~mydfs.raft_ext.node.RaftNode`. Its ``apply`` is
called on **every** replica, on the pysyncobj tick thread, for every committed command, in log
order. It must therefore be:

* **pure and deterministic**: no clock, no randomness, no disk or network I/O, no reading of
  anything but the command and the machine's own state. Time and ids come *in* the command
  (the leader puts ``now`` in it);
* **fast**: it runs between Raft heartbeats; a slow apply triggers elections;
* **side-effect free**: a follower that installs a snapshot skips applies altogether, so work on
  disk (deleting files, trimming slots) belongs to a reconciler that compares state with disk;
* **reject before mutating**: raising a :class:`~mydfs.common.errors.MydfsError` is a
  deterministic rejection (the same on every replica); it is handed back to the submitter and
  the state must be unchanged. Any other exception is a bug and is reported as
  :class:`~mydfs.common.errors.InvariantViolation` (and the node's ``on_fatal`` hook fires).

Commands are JSON objects (``dict``) encoded with orjson into a ``str`` of at most
``max_command_bytes``; they never carry slice payloads (``bytes`` are refused by orjson).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import orjson

from mydfs.common.errors import InvalidArgument, PayloadTooLarge

#: pysyncobj ships any log entry of 64 KiB or more through a chunked path that misfires and
#: raises on followers (note §4e). A command plus its pickle framing must stay below that.
HARD_MAX_COMMAND_BYTES = 60 * 1024

#: The payload of the internal no-op used by ``RaftNode.barrier()``; never reaches the machine.
NOOP_PAYLOAD = ""

#: Key of the error envelope an apply result carries when the machine rejected a command.
ERROR_KEY = "__raft_ext_error__"


@runtime_checkable
class StateMachine(Protocol):
    """What the user of ``raft_ext`` implements (one instance per node)."""

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        """Apply one committed command and return a small JSON-able result."""
        ...

    def snapshot(self) -> bytes:
        """The complete state as bytes (called on the tick thread during log compaction)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot produced by :meth:`snapshot`."""
        ...


def encode_command(command: Mapping[str, Any], max_bytes: int) -> str:
    """Validate and encode a command to the ``str`` that travels in the Raft log.

    Raises :class:`InvalidArgument` for anything that is not a JSON object, and
    :class:`PayloadTooLarge` (an ``InvalidArgument``) above ``max_bytes``.
    """
    if not isinstance(command, Mapping):
        raise InvalidArgument("a raft command must be a JSON object", type=type(command).__name__)
    if not command:
        raise InvalidArgument("a raft command must not be empty")
    try:
        raw = orjson.dumps(command)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidArgument(f"a raft command must be plain JSON: {exc}") from exc
    if len(raw) > max_bytes:
        raise PayloadTooLarge(
            "raft command too large; slice data never travels in the Raft log",
            size=len(raw),
            limit=max_bytes,
        )
    return raw.decode("utf-8")


def decode_command(payload: str) -> dict[str, Any]:
    """Inverse of :func:`encode_command` (runs on the tick thread inside apply)."""
    value = orjson.loads(payload)
    if not isinstance(value, dict):
        raise InvalidArgument("a raft command must be a JSON object")
    return value
