"""The leader's side of an in-place edit: submitting prepare / commit / rollback, and the
resolver that settles edits whose coordinator went silent.

The commands and their rules are the pure state machine's (:mod:`mydfs.storage.group_edits`,
``docs/group_state.md`` "Edits"). This module adds what needs the outside world:

* :meth:`EditParticipant.prepare` stamps a prepare with the leader's clock and submits it;
  :meth:`EditParticipant.decide` submits the commit or rollback a tracker decision token says
  (verified by the HTTP layer or the resolver with the cluster secret).
* :meth:`EditParticipant.run`, the resolver (leader only, like the settlement loop): once a
  second, every edit prepared longer than ``edit_timeout`` ago is asked of the tracker
  (``POST /internal/edits/{txn}/resolve``, signed like the heartbeat); a ``commit`` or ``abort``
  answer is applied, an ``unknown`` one (the tracker forgot it: it is older than the tracker's
  retention) is logged and counted (``mydfs_storage_edits_in_doubt``) and the lock kept. A
  commit refused ``out_of_order`` (an earlier commit of the same file has not reached this group
  yet) is retried on the next pass.

:func:`resolver_action` is the decision rule, pure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import aiohttp
import orjson

from mydfs.common import grants
from mydfs.common.auth import AUTH_HEADER, sign
from mydfs.common.errors import Conflict, Forbidden, MydfsError, Unavailable
from mydfs.common.grants import Grant
from mydfs.storage.context import NodeContext
from mydfs.storage.edit_commands import Commit, Prepare, Rollback
from mydfs.storage.group_records import COMMITTED, ROLLED_BACK, TxnInfo

log = logging.getLogger(__name__)

#: Seconds between two passes of the resolver.
RESOLVE_INTERVAL = 1.0
#: Seconds one resolve call to the tracker may take.
RESOLVE_TIMEOUT = 5.0
#: The tracker's answer for a txn it has no decision on and may have forgotten.
UNKNOWN = "unknown"

Resolve = Callable[[TxnInfo], Awaitable[Mapping[str, Any]]]
"""Ask the tracker about a prepared txn; its JSON answer (``{"decision": ..., "token"}``)."""


class Action(Enum):
    WAIT = "wait"  # not old enough to ask the tracker
    ASK = "ask"  # prepared past edit_timeout: ask the tracker
    RETRY = "retry"  # a decision is known here (a commit refused out_of_order): apply it again


def resolver_action(info: TxnInfo, now_ms: int, timeout_s: float, known_decision: bool) -> Action:
    """What the resolver does about one prepared txn this pass. Pure."""
    if known_decision:
        return Action.RETRY
    if now_ms - info.prepared_at_ms > timeout_s * 1000:
        return Action.ASK
    return Action.WAIT


@dataclass(frozen=True)
class Outcome:
    """What a prepare, commit or rollback did: the txn's state and whether it was a retry."""

    txn: str
    state: str
    duplicate: bool

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "txn": self.txn, "state": self.state, "duplicate": self.duplicate}


class EditParticipant:
    """Submits the edit commands on the leader and runs the resolver."""

    def __init__(
        self,
        ctx: NodeContext,
        resolve: Resolve | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ctx = ctx
        self._resolve = resolve or self._ask_tracker
        self._clock = clock
        #: Decisions known here but not applied yet (a commit refused out_of_order).
        self._waiting: dict[str, Grant] = {}
        #: Txns whose trouble was logged already (one error per txn, not one a second).
        self._reported: set[str] = set()

    # --- the commands ------------------------------------------------------------------------

    async def prepare(
        self,
        txn: str,
        file_id: str,
        lock: Any,
        move: Any,
        new: Any,
        keep: Any = (),
    ) -> Outcome:
        """Submit ``prepare`` (wire shapes of ``lock``, ``move``, ``new``, ``keep``; checked by
        the command's decoding, 400 when malformed) with the leader's clock."""
        ctx = self._ctx
        if not ctx.is_leader():
            raise ctx.not_leader_error()
        command = Prepare(
            txn=txn,
            file_id=file_id,
            now_ms=int(self._clock() * 1000),
            lock=lock,
            move=move,
            new=new,
            keep=keep,
        )
        result = await ctx.submit(command.to_dict())
        return self._outcome(result, "prepared")

    async def decide(self, decision: Grant) -> Outcome:
        """Submit the commit or rollback a verified decision token says. A commit refused
        ``out_of_order`` is remembered for the resolver to retry, then raised (409)."""
        ctx = self._ctx
        if not ctx.is_leader():
            raise ctx.not_leader_error()
        known = ctx.group.read(lambda g: g.txn(decision.txn))
        if known is not None and known.file_id and known.file_id != decision.file_id:
            raise Forbidden(
                "the decision is for another file than the prepared edit", txn=decision.txn
            )
        if decision.op == "commit":
            command: Commit | Rollback = Commit(
                txn=decision.txn, version=decision.version, prev=decision.prev_for(ctx.group_id)
            )
        else:
            command = Rollback(txn=decision.txn)
        try:
            result = await ctx.submit(command.to_dict())
        except Conflict as exc:
            if exc.context.get("reason") == "out_of_order":
                self._waiting[decision.txn] = decision
            raise
        self._waiting.pop(decision.txn, None)
        return self._outcome(result, COMMITTED if decision.op == "commit" else ROLLED_BACK)

    def _outcome(self, result: Mapping[str, Any], counted: str) -> Outcome:
        out = Outcome(str(result["txn"]), str(result["state"]), bool(result["duplicate"]))
        if not out.duplicate:
            self._ctx.metrics.edits.labels(counted).inc()
        return out

    # --- the resolver ------------------------------------------------------------------------

    async def run(self) -> None:
        """The leader's resolver loop: one pass a second until cancelled."""
        while True:
            try:
                await self.resolve_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("edit resolver pass failed")
            await asyncio.sleep(RESOLVE_INTERVAL)

    async def resolve_once(self) -> None:
        """One pass over the prepared txns."""
        ctx = self._ctx
        if not ctx.is_leader():
            return
        prepared = ctx.group.read(lambda g: g.prepared_txns())
        live = {info.txn for info in prepared}
        for txn in [t for t in self._waiting if t not in live]:
            del self._waiting[txn]  # applied or rolled back meanwhile
        self._reported &= live
        now_ms = int(self._clock() * 1000)
        in_doubt = 0
        for info in prepared:
            action = resolver_action(
                info, now_ms, ctx.config.edit_timeout, info.txn in self._waiting
            )
            if action is Action.WAIT:
                continue
            if action is Action.RETRY:
                await self._apply(self._waiting[info.txn])
                continue
            decision = await self._ask(info)
            if decision == UNKNOWN:
                in_doubt += 1
            elif isinstance(decision, Grant):
                await self._apply(decision)
        ctx.metrics.edits_in_doubt.set(in_doubt)

    async def _ask(self, info: TxnInfo) -> Grant | str | None:
        """The tracker's verified decision on ``info``; :data:`UNKNOWN` when the tracker has
        none (it forgot the txn); None when it could not be asked or its answer does not
        verify (logged)."""
        try:
            answer = await self._resolve(info)
        except (MydfsError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if self._report(info.txn):
                log.warning("edit %s: the tracker could not be asked: %s", info.txn, exc)
            return None
        outcome = answer.get("decision")
        if outcome == UNKNOWN:
            if not self._report(info.txn):
                return UNKNOWN
            log.error(
                "edit %s of file %s is in doubt: prepared at %d ms, the tracker has no "
                "decision; its slots stay locked",
                info.txn,
                info.file_id,
                info.prepared_at_ms,
            )
            return UNKNOWN
        try:
            decision = grants.decision_of(self._ctx.config.secret, answer.get("token"), info.txn)
        except MydfsError as exc:
            log.error("edit %s: the tracker's decision does not verify: %s", info.txn, exc)
            return None
        if decision.op != outcome:
            log.error("edit %s: the answer says %s, its token %s", info.txn, outcome, decision.op)
            return None
        return decision

    def _report(self, txn: str) -> bool:
        """True the first time ``txn`` has a trouble to log (then once more after it left)."""
        first = txn not in self._reported
        self._reported.add(txn)
        return first

    async def _apply(self, decision: Grant) -> None:
        try:
            out = await self.decide(decision)
        except Conflict as exc:
            if exc.context.get("reason") != "out_of_order":
                log.error("edit %s: %s refused: %s", decision.txn, decision.op, exc)
            return
        except MydfsError as exc:
            log.warning("edit %s: %s not applied yet: %s", decision.txn, decision.op, exc)
            return
        log.info("edit %s resolved: %s", decision.txn, out.state)

    async def _ask_tracker(self, info: TxnInfo) -> Mapping[str, Any]:
        """``POST {tracker}/internal/edits/{txn}/resolve``, signed with the body."""
        ctx = self._ctx
        if not ctx.config.tracker or ctx.session is None:
            raise Unavailable("this node knows no tracker to ask", txn=info.txn)
        path = f"/internal/edits/{info.txn}/resolve"
        body = orjson.dumps(
            {"file_id": info.file_id, "group": ctx.group_id, "prepared_at_ms": info.prepared_at_ms}
        )
        headers = {
            AUTH_HEADER: sign(ctx.config.secret, "POST", path, body=body),
            "Content-Type": "application/json",
        }
        timeout = aiohttp.ClientTimeout(total=RESOLVE_TIMEOUT)
        async with ctx.session.post(
            ctx.config.tracker + path, data=body, headers=headers, timeout=timeout
        ) as resp:
            if resp.status != 200:
                text = (await resp.text())[:200]
                raise Unavailable(f"the tracker answered {resp.status}: {text}", txn=info.txn)
            answer = await resp.json(loads=orjson.loads)
        if not isinstance(answer, dict):
            raise ValueError("the tracker's answer is not a JSON object")
        return answer


__all__ = ["Action", "EditParticipant", "Outcome", "resolver_action"]
