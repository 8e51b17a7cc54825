"""Peak resident size of the processes of a bench run, per workload."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path


class RssMeter:
    """The peak resident size of each process over an interval, in MiB: each one's ``VmHWM``
    is reset at the start (``/proc/PID/clear_refs``, Linux 4.0+; where that is refused, the
    figure is the peak since the process started)."""

    def __init__(self, pids: Callable[[], dict[str, int]]) -> None:
        self._pids = pids

    def __enter__(self) -> RssMeter:
        for pid in self._pids().values():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def read(self) -> dict[str, int]:
        out = {}
        for name, pid in self._pids().items():
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out[name] = int(line.split()[1]) // 1024
        return out
