"""A toy pure state machine for the raft_ext tests: a key/value dict with counters.

Shared by the in-process tests and by ``raft_node_proc.py`` (the per-process test node).
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

from mydfs.common.errors import Conflict, InvalidArgument


class KVMachine:
    """Deterministic: the result depends only on the command and the current state."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.applied = 0
        self.restores = 0
        # Test hook only: the "block" op parks the tick thread until the gate opens
        # (a real machine never blocks; this simulates a stuck apply to exercise timeouts).
        self.gate = threading.Event()
        self.gate.set()

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "set":
            key = str(command["k"])
            self.data[key] = command["v"]
            self.applied += 1
            return {"ok": True, "size": len(self.data)}
        if op == "incr":
            key = str(command["k"])
            value = int(self.data.get(key, 0)) + int(command.get("by", 1))
            self.data[key] = value
            self.applied += 1
            return {"value": value}
        if op == "reject":
            raise Conflict("rejected on purpose", key=command.get("k"))
        if op == "crash":
            raise RuntimeError("a bug in apply")
        if op == "block":
            self.gate.wait(timeout=15)
            self.applied += 1
            return {"blocked": True}
        raise InvalidArgument("unknown op", op=str(op))

    def snapshot(self) -> bytes:
        return orjson.dumps(
            {"data": self.data, "applied": self.applied}, option=orjson.OPT_SORT_KEYS
        )

    def restore(self, data: bytes) -> None:
        state = orjson.loads(data)
        self.data = dict(state["data"])
        self.applied = int(state["applied"])
        self.restores += 1

    def dump(self) -> dict[str, Any]:
        return {"data": dict(self.data), "applied": self.applied, "restores": self.restores}
