"""Grant checks of a storage node's client routes (``docs/replication.md``, Grants).

A client route changes or serves slices of one file; the node serves it only to a caller that
shows a grant for that file, signed by the tracker with the cluster secret
(:mod:`mydfs.common.grants`), in the ``X-Mydfs-Grant`` header or the ``grant`` query parameter:

* a **write** grant for the file, and for this node's group, on ``PUT /slices?upload``,
  ``POST /slices/reserve`` (the new slice's owner is the grant's file), ``PUT /slices/{slot}``
  and ``POST /slices/{slot}/relink`` (the slot's owner must be the grant's file), and
  ``POST /edits/{txn}/prepare`` (the body's ``file_id``; the table refuses to lock a slot of
  another file);
* a **read** (or write) grant for the file on ``GET /chain``, ``GET|HEAD /slices/{slot}`` and
  ``GET|HEAD /files/...``: the owner checks of the read path then bind every slice served to
  that file.

Deletes are not a client route: ``DELETE /internal/slices/{slot}?gen=G&file=F`` is signed with
the cluster secret (the tracker's reclaimer) and deletes only a slot whose owner is file F at
generation G (:func:`delete_verdict`).

The decisions are pure functions of the grant, the slot's record and the request's values, so
they are tested without a node.
"""

from __future__ import annotations

from aiohttp import web

from mydfs.common import grants
from mydfs.common.errors import Conflict, Forbidden, NotFound
from mydfs.common.grants import Grant
from mydfs.storage.group_records import SlotInfo
from mydfs.storage.slot_state import SlotState


def token_of(request: web.Request) -> str | None:
    """The grant a request carries: the header, else the query parameter."""
    return request.headers.get(grants.GRANT_HEADER) or request.query.get(grants.GRANT_PARAM)


def require(
    secret: str,
    token: str | None,
    op: str,
    *,
    file_id: str | None = None,
    group: int | None = None,
    now: float | None = None,
) -> Grant:
    """The grant in ``token`` if it allows ``op`` on ``file_id`` (None: the grant's own file)
    in ``group``; 401 for a missing or forged grant, 403 for another op, file, group, an
    expired grant, or one naming no file id (a shared-path grant is the tracker's alone)."""
    grant = grants.check(secret, token, op=op, file_id=file_id, group=group, now=now)
    if not grant.file_id:
        raise Forbidden("the grant names no file id (only the tracker takes path grants)")
    return grant


def check_slot_owner(info: SlotInfo | None, grant: Grant, slot: int) -> None:
    """403 unless the slot's record (when there is one) belongs to the grant's file: a write
    grant for one file never changes another file's slice."""
    if info is not None and info.file_id != grant.file_id:
        raise Forbidden("the slot belongs to another file than the grant's", slot=slot)


def check_file_version(current: int, expected: int, slot: int) -> None:
    """The collector's delete condition: :class:`Conflict` ``reason=file_version`` (409,
    nothing deleted) unless the slot's file is at ``expected`` in this group, the version its
    report showed: an edit of the file committed here since may have linked the slot."""
    if current != expected:
        raise Conflict(
            f"slot {slot}: its file is at version {current} here, not {expected}: left alone",
            slot=slot,
            reason="file_version",
        )


def delete_verdict(info: SlotInfo | None, slot: int, generation: int, file_id: str) -> bool:
    """Whether an internal delete of ``slot`` at ``generation`` for file ``file_id`` goes on
    (True) or already happened (False: the slot is deleted at that generation). Raises
    :class:`NotFound` for a slot without a record, :class:`Conflict` (409) when the slot holds
    another file or another generation now: the caller's idea of the slot is not the table's,
    and nothing is deleted."""
    if info is None:
        raise NotFound("no such slice", slot=slot)
    if info.file_id != file_id or info.generation != generation:
        raise Conflict(
            f"slot {slot} holds {info.file_id} generation {info.generation}, "
            f"not {file_id} generation {generation}: left alone",
            slot=slot,
            reason="another_owner",
        )
    return info.state is not SlotState.DELETED
