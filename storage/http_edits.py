"""The edit routes of a storage node (the group's half of an edit's two-phase commit).

Leader routes (followers answer 307 to the leader, like the other write routes); the state
machine's rules are in ``docs/group_state.md`` ("Edits"):

  POST /edits/{txn}/prepare   body {"file_id", "lock", "move", "new", "keep"} ("keep" may be
                              absent: a compaction's, docs/space.md); a write grant for that
                              file, in this group (X-Mydfs-Grant). The leader adds its clock
                              and submits ``prepare``.
  POST /edits/{txn}/commit    body {"decision": token}: the tracker's signed commit decision
                              for ``txn``; the node submits ``commit`` with the decision's
                              version and ``prev`` for this group.
  POST /edits/{txn}/rollback  body {"decision": token}: the tracker's signed abort decision;
                              the node submits ``rollback``.

200 ``{"ok": true, "txn", "state", "duplicate"}``; a refusal is its typed error (409
``conflict`` with ``reason``: ``locked``, ``out_of_order`` (retry later), ``rolled_back``...;
404; 400). A decision token is the authority of a commit or rollback (no grant needed): 401
when it is missing or does not verify, 403 when it is expired, for another txn or another file,
or of the other outcome. Every check of the caller comes before the leader check, so a follower
refuses what the leader would.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from mydfs.common import grants
from mydfs.common.errors import Forbidden, InvalidArgument, Unauthorized
from mydfs.common.limits import read_body
from mydfs.storage.edit_commands import check_txn
from mydfs.storage.http_common import NODE_KEY, json_response
from mydfs.storage.http_grants import require, token_of

#: Largest prepare body: up to 4096 ``lock`` and 4096 ``new`` entries, with room to spare.
PREPARE_BODY_BYTES = 1 << 20


def _txn(request: web.Request) -> str:
    try:
        return check_txn(request.match_info["txn"], op="edit", field="txn")
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message, field="txn") from None


async def _json_body(request: web.Request, limit: int) -> dict[str, Any]:
    node = request.app[NODE_KEY]
    data = await read_body(request, limit, node.config.limits.body_timeout)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidArgument("the body must be JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON object")
    return body


async def prepare(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    secret = node.config.secret
    require(secret, token_of(request), "write", group=node.group_id)  # before the body is read
    txn = _txn(request)
    if not node.is_leader():
        raise node.not_leader_error()
    body = await _json_body(request, max(PREPARE_BODY_BYTES, node.config.max_json_bytes))
    unknown = sorted(set(body) - {"file_id", "lock", "move", "new", "keep"})
    if unknown:
        raise InvalidArgument(f"unknown field(s): {', '.join(unknown)}", field=unknown[0][:40])
    file_id = body.get("file_id")
    if not isinstance(file_id, str):
        raise InvalidArgument("file_id is required (32 hex digits)", field="file_id")
    require(secret, token_of(request), "write", file_id=file_id, group=node.group_id)
    out = await node.edits.prepare(
        txn,
        file_id,
        body.get("lock", []),
        body.get("move"),
        body.get("new", []),
        body.get("keep", []),
    )
    return json_response(out.to_dict())


async def _decide(request: web.Request, op: str) -> web.Response:
    node = request.app[NODE_KEY]
    txn = _txn(request)
    body = await _json_body(request, node.config.max_json_bytes)
    token = body.get("decision")
    if not isinstance(token, str) or not token:
        raise Unauthorized("no decision: the body must carry the tracker's decision token")
    decision = grants.decision_of(node.config.secret, token, txn)
    if decision.op != op:
        raise Forbidden(f"a {decision.op} decision does not allow {op}", txn=txn)
    if not node.is_leader():
        raise node.not_leader_error()
    out = await node.edits.decide(decision)
    return json_response(out.to_dict())


async def commit(request: web.Request) -> web.Response:
    return await _decide(request, "commit")


async def rollback(request: web.Request) -> web.Response:
    return await _decide(request, "abort")


def add_edit_routes(app: web.Application) -> None:
    app.router.add_post("/edits/{txn}/prepare", prepare)
    app.router.add_post("/edits/{txn}/commit", commit)
    app.router.add_post("/edits/{txn}/rollback", rollback)


__all__ = ["add_edit_routes"]
