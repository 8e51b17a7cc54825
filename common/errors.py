"""The one error hierarchy of mydfs.

Every error a mydfs component raises on purpose is a :class:`MydfsError`. Each carries a stable
``code`` (a short string that crosses the wire), the HTTP ``status`` it maps to, a ``retryable``
flag, and a ``context`` dict naming what failed (``path``, ``group``, ``slot``, ``volume``,
``node``...), so a message read in a log or at a terminal says *where* as well as *what*::

    MydfsError
      InvalidArgument            400  bad input from the caller; nothing was changed
        PayloadTooLarge          413  more bytes than a slice (or a request) may hold
        LengthRequired           411  a body sent without its Content-Length
        SlotOutOfRange           400  a slot number outside the volume's address range
        InvalidPath              400  a path with '..', NUL, or not absolute
        RequestTimeout           408  the request (headers or body) came too slowly
      Unauthorized               401  no credential, or one that does not verify
      Forbidden                  403  a valid credential that does not allow this (role, object,
                                      expiry)
      TooManyRequests            429  a bound on pending work was reached; retry later
      NotFound                   404  no such file, slice or slot
        SliceDeleted             404  the slot carries a 404 marker (deleted / rolled back)
      SliceMoved                 301  the slot carries a 301 redirect; ``target`` says where
      Redirect                   307  not a failure: another node must answer (``url``)
      AlreadyExists              409  the path (or upload id) is taken
      Conflict                   409  the operation does not fit the current state
        StaleEntry               409  the reader's file entry is older than a group's table:
                                      re-read the entry and read again
      Corrupt                    500  stored bytes fail their checksum or structure checks
        IncompatibleVolume       500  a foreign, newer-version or other node's volume file
      StorageIOError             500  the disk refused (EIO, fsync failure...)
        DiskFull                 507  ENOSPC; nothing stored was damaged
        SyncFailed               500  an fdatasync failed: the file can no longer promise
                                      durability (``errno``)
      Unavailable                503  retryable: try again, maybe elsewhere
        NotLeader                503  this node is not the group leader (``leader`` hint)
        NoQuorum                 503  the group cannot reach a majority
        Timeout                  504  a deadline passed before an answer
        OutcomeUnknown           504  a command was submitted but its fate is not known
      InvariantViolation         500  an internal invariant broke; the node must stop

``InvariantViolation`` is never caught to limp on: the process logs it and exits.
``Redirect`` is a typed signal rather than a failure: a read resolved on a node that cannot serve
it raises one, and the servers' error middleware (:mod:`mydfs.common.web`) answers
``307 Location: url + path`` instead of an error body.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MydfsError(Exception):
    """Base of every mydfs error. ``context`` names the path, group, slot... that failed."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        if not self.context:
            return self.message
        where = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.message} ({where})"

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``{"error": code, "message": ..., "context": {...}}``."""
        return {"error": self.code, "message": self.message, "context": self.context}


class InvalidArgument(MydfsError):
    code = "invalid_argument"
    status = 400


class PayloadTooLarge(InvalidArgument):
    code = "payload_too_large"
    status = 413


class LengthRequired(InvalidArgument):
    code = "length_required"
    status = 411


class SlotOutOfRange(InvalidArgument):
    code = "slot_out_of_range"


class InvalidPath(InvalidArgument):
    code = "invalid_path"


class RequestTimeout(InvalidArgument):
    code = "request_timeout"
    status = 408


class Unauthorized(MydfsError):
    code = "unauthorized"
    status = 401


class Forbidden(MydfsError):
    code = "forbidden"
    status = 403


class TooManyRequests(MydfsError):
    code = "too_many_requests"
    status = 429
    retryable = True


class NotFound(MydfsError):
    code = "not_found"
    status = 404


class SliceDeleted(NotFound):
    code = "slice_deleted"


class SliceMoved(MydfsError):
    """A 301 marker: the slice now lives at ``target`` (a ``(group, slot)`` pair)."""

    code = "slice_moved"
    status = 301

    def __init__(self, message: str, *, target: tuple[int, int], **context: Any) -> None:
        super().__init__(message, **context)
        self.target = target
        self.context["target"] = f"{target[0]}:{target[1]}"


class Redirect(MydfsError):
    """Not a failure: the request should go to ``url`` (the server answers 307 there)."""

    code = "redirect"
    status = 307

    def __init__(self, url: str, message: str = "answered by another node", **context: Any) -> None:
        super().__init__(message, url=url, **context)
        self.url = url


class AlreadyExists(MydfsError):
    code = "already_exists"
    status = 409


class Conflict(MydfsError):
    code = "conflict"
    status = 409


class StaleEntry(Conflict):
    """A node's group applied a later edit of the file than the reader's entry knows (or a
    slice of an edited file is gone): the reader re-reads the entry and starts its read again.
    Not retryable as is: repeating the same request with the same entry cannot succeed."""

    code = "stale_entry"


class Corrupt(MydfsError):
    code = "corrupt"
    status = 500


class IncompatibleVolume(Corrupt):
    code = "incompatible_volume"


class StorageIOError(MydfsError):
    code = "io_error"
    status = 500


class DiskFull(StorageIOError):
    code = "disk_full"
    status = 507
    retryable = True


class SyncFailed(StorageIOError):
    """fdatasync failed once; the file can no longer promise durability."""

    code = "sync_failed"

    def __init__(self, message: str, *, errno: int | None = None, **context: Any) -> None:
        super().__init__(message, errno=errno, **context)
        self.errno = errno


class Unavailable(MydfsError):
    code = "unavailable"
    status = 503
    retryable = True


class NotLeader(Unavailable):
    """Writes must go to the leader; ``leader`` is its advertised URL when known."""

    code = "not_leader"

    def __init__(self, message: str, *, leader: str | None = None, **context: Any) -> None:
        super().__init__(message, leader=leader, **context)
        self.leader = leader


class NoQuorum(Unavailable):
    code = "no_quorum"


class Timeout(Unavailable):
    code = "timeout"
    status = 504


class OutcomeUnknown(Timeout):
    """A command was handed to Raft but no answer came: it may still commit later."""

    code = "outcome_unknown"


class InvariantViolation(MydfsError):
    """An internal invariant is broken. Never caught to carry on: the node stops."""

    code = "invariant_violation"


def _all_error_classes() -> list[type[MydfsError]]:
    seen: list[type[MydfsError]] = []
    todo: list[type[MydfsError]] = [MydfsError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


ERRORS_BY_CODE: dict[str, type[MydfsError]] = {cls.code: cls for cls in _all_error_classes()}


def error_from_dict(data: dict[str, Any]) -> MydfsError:
    """Rebuild an error from its wire form; unknown codes become a plain :class:`MydfsError`."""
    code = str(data.get("error", "error"))
    message = str(data.get("message", code))
    context = dict(data.get("context") or {})
    cls = ERRORS_BY_CODE.get(code, MydfsError)
    if cls is SliceMoved or issubclass(cls, SliceMoved):
        group, _, slot = str(context.pop("target", "0:0")).partition(":")
        return cls(message, target=(int(group or 0), int(slot or 0)), **context)
    if issubclass(cls, Redirect):
        url = str(context.pop("url", ""))
        return cls(url, message, **context)
    if issubclass(cls, NotLeader):
        leader = context.pop("leader", None)
        return cls(message, leader=leader, **context)
    return cls(message, **context)
