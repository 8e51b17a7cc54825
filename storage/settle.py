"""Settlement (leader only): deciding the fate of PENDING slots whose upload did not finish.

A slot that 2 nodes hold durably is sealed (live); one that 2 nodes cannot hold is aborted (404,
reusable). A node that does not answer may be a holder coming back: while the silent nodes could
still make a majority, the slot waits, up to :data:`SETTLE_PATIENCE` seconds after it was
reserved; a slot reserved ahead that no ``assign`` made live is aborted
(``docs/replication.md``, "Slots reserved ahead"). :func:`settle_decision` is that rule, pure;
:class:`Settler` asks the nodes and commits the outcome. A new leader settles every PENDING
slot after a barrier, then sweeps once a second for slots older than twice
``replica_timeout`` (uploads whose handler died).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from mydfs.common.errors import Conflict, MydfsError, SliceDeleted
from mydfs.storage.context import RAFT_TIMEOUT, NodeContext
from mydfs.storage.group_commands import POOL_PREFIX, Abort, Seal
from mydfs.storage.group_state import GroupState, SlotInfo, SlotState

log = logging.getLogger(__name__)

#: Seconds after which the sweep aborts a slot reserved ahead that no leader's pool guards
#: (an upload into it failed, or its leader is gone): such a slot is never sealed, so there is
#: nothing to wait for beyond a reservation still on its way into the pool.
AHEAD_GRACE = 10.0
#: How long a pending slot may wait for silent nodes (maybe holders) before it is aborted.
SETTLE_PATIENCE = 30.0


class Verdict(Enum):
    SEAL = "seal"  # 2 nodes hold it durably: make it live
    WAIT = "wait"  # silent nodes could still make a majority: ask again later
    ABORT = "abort"  # 2 copies cannot be found: 404, reusable


@dataclass(frozen=True)
class Settlement:
    verdict: Verdict
    holders: tuple[str, ...]  # who answered "holds", sorted
    silent: int  # how many did not answer


def settle_decision(
    answers: Mapping[str, bool | None],
    age: float,
    patience: float = SETTLE_PATIENCE,
    *,
    ahead: bool = False,
) -> Settlement:
    """The fate of a pending slot, given each node's answer (True: holds it durably, False: does
    not, None: did not answer) and the seconds since it was reserved. A slot reserved ahead
    (``ahead``: its upload id is a pool id) is always aborted: whatever copies it has belong to
    an upload no ``assign`` made live, which no client was told of. Pure."""
    holders = tuple(sorted(node for node, yes in answers.items() if yes))
    silent = sum(1 for yes in answers.values() if yes is None)
    if ahead:
        return Settlement(Verdict.ABORT, holders, silent)
    if len(holders) >= 2:
        return Settlement(Verdict.SEAL, holders, silent)
    if len(holders) + silent >= 2 and age < patience:
        return Settlement(Verdict.WAIT, holders, silent)
    return Settlement(Verdict.ABORT, holders, silent)


class Settler:
    """Asks every node who holds a pending slot and commits seal or abort."""

    def __init__(
        self,
        ctx: NodeContext,
        holds: Callable[[int, int], bool],
        inflight: Collection[int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ctx = ctx
        self._holds = holds
        self._inflight = inflight  # slots this leader is uploading right now: not settled
        self._clock = clock

    async def run(self) -> None:
        """The leader's loop: a barrier, every pending slot, then a sweep once a second."""
        ctx = self._ctx
        _, raft, _ = ctx.require()
        try:
            await raft.barrier(timeout=RAFT_TIMEOUT)  # apply everything earlier leaders committed
        except MydfsError as exc:
            log.warning("leader barrier failed: %s", exc)
        first = True
        while True:
            now_ms = time.time_ns() // 1_000_000
            grace_ms = int(1000 * max(60.0, 2 * ctx.config.replica_timeout))
            cutoff = None if first else now_ms - grace_ms
            ahead_cutoff = None if first else now_ms - int(1000 * AHEAD_GRACE)
            pending = [
                info
                for info in ctx.group.read(
                    functools.partial(GroupState.pending, reserved_before_ms=ahead_cutoff)
                )
                if cutoff is None
                or info.reserved_at_ms < cutoff
                or info.upload_id.startswith(POOL_PREFIX)
            ]
            for info in pending:
                if info.slot not in self._inflight:
                    with contextlib.suppress(MydfsError):
                        await self.settle_one(info)
            first = False
            ctx.registration.expire(time.monotonic())
            await asyncio.sleep(1.0)

    async def settle_one(self, info: SlotInfo) -> SlotState:
        """Settle one pending slot: LIVE (sealed), DELETED (aborted) or PENDING (waiting)."""
        ctx = self._ctx
        _, _, peers = ctx.require()
        answers: dict[str, bool | None] = {ctx.node_id: self._holds(info.slot, info.generation)}
        replies = await asyncio.gather(
            *(
                peers.holds(
                    ctx.urls[p.node_id], slot=info.slot, generation=info.generation, timeout=2.0
                )
                for p in ctx.config.peers
            )
        )
        answers.update((p.node_id, yes) for p, yes in zip(ctx.config.peers, replies, strict=True))
        age = self._clock() - info.reserved_at_ms / 1000
        got = settle_decision(answers, age, ahead=info.upload_id.startswith(POOL_PREFIX))
        if got.verdict == Verdict.SEAL:
            seal = Seal(
                slot=info.slot,
                upload_id=info.upload_id,
                generation=info.generation,
                holders=got.holders,
            )
            if not await self._commit(seal.to_dict()):
                return self._outcome(info)
            ctx.metrics.settled.labels("sealed").inc()
            log.info("settled slot %d: live on %s", info.slot, list(got.holders))
            return SlotState.LIVE
        if got.verdict == Verdict.WAIT:
            log.info(
                "slot %d: %d holder(s), %d node(s) silent; settling later",
                info.slot,
                len(got.holders),
                got.silent,
            )
            return SlotState.PENDING
        if info.slot in self._inflight:
            # The client's retry started writing it while the nodes were asked: let it finish.
            return SlotState.PENDING
        abort = Abort(slot=info.slot, upload_id=info.upload_id, generation=info.generation)
        if not await self._commit(abort.to_dict()):
            return self._outcome(info)
        ctx.metrics.settled.labels("aborted").inc()
        log.info("settled slot %d: aborted (held by %s)", info.slot, list(got.holders))
        return SlotState.DELETED

    async def _commit(self, command: dict[str, object]) -> bool:
        """Submit a seal or abort; False when it was refused because the slot was settled
        meanwhile (the sweep and a client's retry may settle the same slot at once, and the
        slot may even have been reused since): not an error, the table has the outcome."""
        try:
            await self._ctx.submit(command)
        except (Conflict, SliceDeleted):
            return False
        return True

    def _outcome(self, info: SlotInfo) -> SlotState:
        """What became of ``info``'s upload, from the table: its slot's state while the slot
        still holds it, else DELETED (aborted, and maybe reused)."""
        now = self._ctx.info(info.slot)
        if now is None or (now.upload_id, now.generation) != (info.upload_id, info.generation):
            return SlotState.DELETED
        return now.state
