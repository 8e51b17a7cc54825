"""What the storage node's HTTP modules share: the app key of the node, JSON replies, and the
answer to a chain walk that a request's own parameters sent astray."""

from __future__ import annotations

from aiohttp import web

from mydfs.common.errors import Corrupt, NotFound
from mydfs.common.web import error_response, json_response
from mydfs.storage.node import StorageNode

NODE_KEY = web.AppKey("node", StorageNode)


def broken_chain(exc: Corrupt) -> NotFound:
    """A chain walk that failed on this node's current table (a start slot that holds no chain,
    a next pointer to a slot never written or deleted, a chain shorter than the request says),
    answered as 404 ``reason=broken_chain``: the walk starts from what the client sent (a slot,
    a file's size and slice count), so the server is not at fault and logs nothing. A reader
    that expected the chain reports it as it reports any missing slice."""
    return NotFound(f"no such chain: {exc.message}", **{**exc.context, "reason": "broken_chain"})


__all__ = ["NODE_KEY", "broken_chain", "error_response", "json_response"]
