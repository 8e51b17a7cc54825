"""The mydfs client SDK.

``AsyncClient`` (asyncio, aiohttp) and ``Client`` (blocking) have the same methods: ``put``,
``get``, ``open``, ``read``, ``stat``, ``listdir``, ``exists``, ``delete``, ``status``, and
``share``, ``create_key``, ``list_keys``, ``delete_key``, and the in-place edits ``write``,
``append``, ``truncate``, ``insert``, ``cut`` (``client/editor.py``); both take ``token=`` (else
``$MYDFS_TOKEN``, else the credentials file, :mod:`mydfs.client.credentials`). Errors
are the typed mydfs errors re-exported here; each carries ``context`` naming the path and what
failed.
"""

from mydfs.client._transport import RetryPolicy
from mydfs.client.aio import AsyncClient, DirEntry, FileInfo
from mydfs.client.reader import AsyncReader
from mydfs.client.sync import Client, Reader
from mydfs.common.errors import (
    AlreadyExists,
    Conflict,
    Corrupt,
    Forbidden,
    InvalidArgument,
    InvalidPath,
    MydfsError,
    NotFound,
    StaleEntry,
    Timeout,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncReader",
    "Client",
    "Conflict",
    "Corrupt",
    "DirEntry",
    "FileInfo",
    "Forbidden",
    "InvalidArgument",
    "InvalidPath",
    "MydfsError",
    "NotFound",
    "Reader",
    "RetryPolicy",
    "StaleEntry",
    "Timeout",
    "Unauthorized",
    "Unavailable",
]
