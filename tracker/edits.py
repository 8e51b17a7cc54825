"""The tracker's side of in-place edits: the routes' service logic (``docs/tracker.md``, Edits).

The tracker is the commit point of an edit's two-phase commit: a participant group applies a
commit or rolls back only on a **decision token** (``common/grants.py``) the tracker signed for
a decision it recorded first (``DECIDE`` edit, fsynced before any answer). The rules are pure
(:mod:`mydfs.tracker.decisions`); this module reads the state, logs, and shapes the answers:

* ``begin``   (``POST /meta/edits``): the entry to plan on and a write grant for its file id;
* ``commit``  (``POST /meta/edits/{txn}/commit``): decide (commit, or abort with a refusal);
* ``abort``   (``POST /meta/edits/{txn}/abort``): decide abort unless decided;
* ``resolve`` (``POST /internal/edits/{txn}/resolve``, a participant that waited too long):
  the decision, or an abort recorded now, or ``unknown`` for a prepare older than the retention;
* ``get``     (``GET /meta/edits/{txn}``): the decision.

Decided transactions always get the recorded decision again, after a barrier (so nobody sees
a decision a crash could still undo): the first decision wins.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mydfs.common import grants
from mydfs.common.errors import Conflict, InvalidArgument, NotFound
from mydfs.common.location import MAX_GROUP
from mydfs.common.paths import check_file_path
from mydfs.tracker.decisions import CommitRequest, abort_of, check_body, check_txn, judge
from mydfs.tracker.records import MAX_SIZE, Decide, Decision, check_file_id

if TYPE_CHECKING:
    from mydfs.tracker.service import Tracker

log = logging.getLogger("mydfs.tracker.edits")


class Edits:
    """The edit routes of one :class:`~mydfs.tracker.service.Tracker`."""

    def __init__(self, tracker: Tracker) -> None:
        self._t = tracker

    # --- helpers ---------------------------------------------------------------------------------

    @property
    def _retention(self) -> float:
        return self._t.config.edit_decision_retention

    def _now(self) -> float:
        now = self._t.wall()
        self._t.store.ns.decisions.expire(now, self._retention)
        return now

    def token(self, d: Decision) -> str:
        """The decision token of ``d``, valid ``edit_decision_retention`` seconds from now."""
        return grants.issue_decision(
            self._t.config.secret,
            "commit" if d.committed else "abort",
            file_id=d.file_id,
            txn=d.txn,
            version=d.version,
            prevs=d.prevs,
            expires=int(self._t.wall() + self._retention),
        )

    def answer(self, d: Decision) -> dict[str, Any]:
        """A decision on the wire (the answer of every edit route for a decided txn)."""
        out: dict[str, Any] = {
            "decision": "commit" if d.committed else "abort",
            "txn": d.txn,
            "file_id": d.file_id,
            "path": d.path,
            "version": d.version,
            "prevs": [[g, p] for g, p in d.prevs],
            "offset": d.offset,
            "at": d.at,
            "token": self.token(d),
        }
        if d.entry is not None:
            out["entry"] = d.entry.to_dict(d.path)
        return out

    async def _record(self, d: Decision) -> None:
        await self._t.record_edit(Decide(d), "edit_commit" if d.committed else "edit_abort")
        log.debug(
            "edit %s of %s (%s): %s%s",
            d.txn,
            d.path or "?",
            d.file_id,
            "commit" if d.committed else "abort",
            f" version {d.version}" if d.committed else "",
        )

    async def _decided(self, txn: str, file_id: str | None) -> Decision | None:
        """The recorded decision of ``txn`` once durable (None if undecided); a decision for
        another file id than the caller's is a conflict."""
        found = self._t.store.ns.decisions.get(txn)
        if found is None:
            return None
        await self._t.store.barrier()
        if file_id is not None and found.file_id != file_id:
            raise Conflict(
                "this txn was decided for another file id",
                reason="txn_mismatch",
                txn=txn,
                file_id=found.file_id,
            )
        return found

    # --- routes ----------------------------------------------------------------------------------

    async def begin(self, body: Any) -> dict[str, Any]:
        """``POST /meta/edits {"path"}`` → the entry (with versions, layout) and a write grant."""
        b = check_body(body)
        path = b.get("path")
        if not isinstance(path, str):
            raise InvalidArgument(f"path must be a string, got {path!r}", field="path")
        check_file_path(path)
        await self._t.store.barrier()
        ns = self._t.store.ns
        entry = ns.get(path)
        if entry is None:
            if ns.is_dir(path):
                raise InvalidArgument(
                    "the path is a directory; only files are edited", reason="directory", path=path
                )
            raise NotFound("no such file", path=path)
        wire = dict(
            entry.to_dict(path),
            versions=[[g, v] for g, v in entry.versions],
            layout=entry.layout,
        )
        return {"entry": wire, "grant": self._t.grant("write", entry.file_id)}

    async def commit(self, txn: str, body: Any) -> dict[str, Any]:
        """Decide ``txn``: commit (200 + the decision) or abort with the refusal (4xx)."""
        check_txn(txn)
        req = CommitRequest.from_dict(body)
        now = self._now()
        found = await self._decided(txn, req.file_id)
        if found is not None:
            if found.committed:
                return self.answer(found)
            raise Conflict(
                "this edit was aborted", reason="aborted", txn=txn, decision=self.token(found)
            )
        verdict = judge(self._t.store.ns.get(req.path), req, txn, now)
        await self._record(verdict.decision)
        if verdict.refusal is not None:
            verdict.refusal.context["decision"] = self.token(verdict.decision)
            raise verdict.refusal
        return self.answer(verdict.decision)

    async def abort(self, txn: str, body: Any) -> dict[str, Any]:
        """Decide abort unless ``txn`` is decided; a committed txn is a 409 with its token."""
        check_txn(txn)
        b = check_body(body)
        path = b.get("path")
        if not isinstance(path, str):
            raise InvalidArgument(f"path must be a string, got {path!r}", field="path")
        check_file_path(path)
        file_id = check_file_id(b.get("file_id"))
        now = self._now()
        found = await self._decided(txn, file_id)
        if found is None:
            found = abort_of(txn, file_id, path, now)
            await self._record(found)
        elif found.committed:
            raise Conflict(
                "this edit was committed", reason="committed", txn=txn, decision=self.token(found)
            )
        return self.answer(found)

    async def resolve(self, txn: str, body: Any) -> dict[str, Any]:
        """A participant's question about a prepare it holds: the decision; for an undecided
        txn an abort recorded now, or ``unknown`` when the prepare is older than the retention
        (the tracker may have forgotten its decision: it never guesses)."""
        check_txn(txn)
        b = check_body(body)
        file_id = check_file_id(b.get("file_id"))
        group, prepared = b.get("group"), b.get("prepared_at_ms")
        if type(group) is not int or not 1 <= group <= MAX_GROUP:
            raise InvalidArgument(f"group must be a group id, got {group!r}", field="group")
        if type(prepared) is not int or not 0 <= prepared <= MAX_SIZE:
            raise InvalidArgument(
                f"prepared_at_ms must be an integer >= 0, got {prepared!r}", field="prepared_at_ms"
            )
        now = self._now()
        found = await self._decided(txn, file_id)
        if found is None:
            if now - prepared / 1000 > self._retention:
                log.error(
                    "group %d asks about edit %s (file %s) prepared %.0f s ago: older than "
                    "edit_decision_retention, its decision may be forgotten; answered unknown",
                    group,
                    txn,
                    file_id,
                    now - prepared / 1000,
                )
                return {"decision": "unknown", "txn": txn}
            found = abort_of(txn, file_id, "", now)
            await self._record(found)
            log.info("edit %s aborted at the request of group %d (prepare timed out)", txn, group)
        return self.answer(found)

    async def get(self, txn: str) -> dict[str, Any]:
        check_txn(txn)
        self._now()
        found = await self._decided(txn, None)
        if found is None:
            raise NotFound("no decision for this txn (undecided, or forgotten)", txn=txn)
        return self.answer(found)
