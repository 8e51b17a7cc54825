"""What the storage node's HTTP modules share: the app key of the node and JSON replies."""

from __future__ import annotations

from aiohttp import web

from mydfs.common.web import error_response, json_response
from mydfs.storage.node import StorageNode

NODE_KEY = web.AppKey("node", StorageNode)

__all__ = ["NODE_KEY", "error_response", "json_response"]
