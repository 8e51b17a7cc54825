"""The Raft port guard: bounded frames and bounded unauthenticated connections.

pysyncobj 0.3.17's TCP connection (tcp_connection.py:L256-300) reads everything the socket
holds into one buffer, then reads a 4-byte signed length and waits until that many bytes have
arrived, all before anything is decrypted or authenticated. An unauthenticated peer could send
a header claiming 2^31-1 bytes and then a stream of zeros: the tick thread kept reading (every
write to the group timed out) and the buffer grew without bound (note, "Found later"). Idle
connections that never sent a byte were also kept forever.

Installed through ``SyncObj(transportClass=GuardedTransport)`` (no module is patched):

* every connection, inbound and outbound, is a :class:`GuardedTcpConnection`: as soon as 4
  bytes are buffered, a length outside ``0..max_frame_bytes`` closes the connection, and one
  poll event never buffers more than one whole frame, so the tick thread returns to its work
  and memory per connection stays below ``max_frame_bytes`` + one receive buffer;
* at most :data:`MAX_UNKNOWN_CONNECTIONS` inbound connections may be waiting for their
  handshake (the first, password-encrypted message); the oldest is closed to make room, and one
  older than ``connection_timeout`` is closed at the next tick. A peer's real connection
  completes its handshake within one round trip, so a flood cannot lock it out for long.

The password stays mandatory (``RaftSettings.validate``): the bound stops a stream from
freezing or inflating a node, the password stops it from being unpickled.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import struct
import time
from typing import Any

from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.tcp_server import TcpServer
from pysyncobj.transport import TCPTransport

log = logging.getLogger(__name__)

#: Largest frame a member ever sends: an append_entries batch is cut after 64 KiB of commands
#: (plus one command of at most 60 KiB), a snapshot chunk is 64 KiB; pickled, compressed and
#: encrypted (base64, x4/3) that stays well under 256 KiB.
DEFAULT_MAX_FRAME_BYTES = 1 << 20
#: Inbound connections allowed to wait for their handshake at the same time.
MAX_UNKNOWN_CONNECTIONS = 16
_LOG_INTERVAL = 10.0
_HEADER = struct.Struct("i")  # pysyncobj's own framing: native signed 32-bit length


class _RateLimitedLog:
    def __init__(self) -> None:
        self._next = 0.0
        self.suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return
        self._next = now + _LOG_INTERVAL
        if self.suppressed:
            msg += f" ({self.suppressed} more since the last message)"
            self.suppressed = 0
        log.warning(msg, *args)


_guard_log = _RateLimitedLog()


def frame_length_ok(header: bytes, max_frame_bytes: int) -> bool:
    """True if the 4-byte pysyncobj frame header announces an acceptable length."""
    length: int = _HEADER.unpack(header[:4])[0]
    return 0 <= length <= max_frame_bytes


class GuardedTcpConnection(TcpConnection):  # type: ignore[misc]
    """``TcpConnection`` that refuses oversized frames and buffers at most one frame limit
    (``max_frame_bytes`` + header) per poll event."""

    max_frame_bytes = DEFAULT_MAX_FRAME_BYTES
    frames_refused = 0  # class-wide counter (status)
    created_at: float

    def __init__(self, *args: Any, max_frame_bytes: int, **kwargs: Any) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.created_at = time.monotonic()
        super().__init__(*args, **kwargs)

    # Overrides TcpConnection.__tryReadBuffer (name-mangled private method).
    def _TcpConnection__tryReadBuffer(self) -> None:
        limit = self.max_frame_bytes + _HEADER.size
        while True:
            buffer = self._TcpConnection__readBuffer
            if len(buffer) >= _HEADER.size and not frame_length_ok(buffer, self.max_frame_bytes):
                GuardedTcpConnection.frames_refused += 1
                _guard_log.warning(
                    "raft port: closed a connection announcing a %d-byte frame (limit %d)",
                    _HEADER.unpack(buffer[:4])[0],
                    self.max_frame_bytes,
                )
                self.disconnect()
                return
            # The first frame is within the limit, so a full buffer holds at least one whole
            # frame: the caller parses it and the next poll event reads on.
            if len(buffer) >= limit or not self._TcpConnection__processRead():
                break
        self._TcpConnection__lastReadTime = time.monotonic()


class GuardedTcpServer(TcpServer):  # type: ignore[misc]
    """``TcpServer`` whose accepted connections are :class:`GuardedTcpConnection`."""

    def __init__(self, *args: Any, max_frame_bytes: int, **kwargs: Any) -> None:
        self._guard_max_frame_bytes = max_frame_bytes
        super().__init__(*args, **kwargs)

    # Overrides TcpServer.__onNewConnection (tcp_server.py:L60-84, same steps).
    def _TcpServer__onNewConnection(self, descr: int, event: int) -> None:
        from pysyncobj.poller import POLL_EVENT_TYPE

        if event & POLL_EVENT_TYPE.READ:
            try:
                sock, _addr = self._TcpServer__socket.accept()
                send_size = self._TcpServer__sendBufferSize
                recv_size = self._TcpServer__recvBufferSize
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_size)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_size)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                conn = GuardedTcpConnection(
                    poller=self._TcpServer__poller,
                    socket=sock,
                    timeout=self._TcpServer__connectionTimeout,
                    sendBufferSize=send_size,
                    recvBufferSize=recv_size,
                    keepalive=self._TcpServer__keepalive,
                    max_frame_bytes=self._guard_max_frame_bytes,
                )
                self._TcpServer__onNewConnectionCallback(conn)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self.unbind()
                    return
        if event & POLL_EVENT_TYPE.ERROR:
            self.unbind()


class GuardedTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport with :class:`GuardedTcpConnection` on both sides."""

    #: Bound per node by :func:`transport_class` (a subclass per ``max_frame_bytes``).
    max_frame_bytes = DEFAULT_MAX_FRAME_BYTES

    def _createServer(self) -> None:
        super()._createServer()  # resolves the bind address; the server is not bound yet
        conf = self._syncObj.conf
        old: Any = self._server
        self._server: Any = GuardedTcpServer(
            self._syncObj._poller,
            old._TcpServer__host,
            old._TcpServer__port,
            onNewConnection=self._onNewIncomingConnection,
            sendBufferSize=conf.sendBufferSize,
            recvBufferSize=conf.recvBufferSize,
            connectionTimeout=conf.connectionTimeout,
            max_frame_bytes=self.max_frame_bytes,
        )

    def addNode(self, node: Any) -> None:
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is None or isinstance(conn, GuardedTcpConnection):
            return
        conf = self._syncObj.conf
        guarded = GuardedTcpConnection(
            poller=self._syncObj._poller,
            timeout=conf.connectionTimeout,
            sendBufferSize=conf.sendBufferSize,
            recvBufferSize=conf.recvBufferSize,
            keepalive=conf.tcp_keepalive,
            max_frame_bytes=self.max_frame_bytes,
        )
        guarded.encryptor = self._syncObj.encryptor
        guarded.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, guarded))
        guarded.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
        guarded.setOnDisconnectedCallback(functools.partial(self._onDisconnected, guarded))
        self._connections[node] = guarded

    def _onNewIncomingConnection(self, conn: Any) -> None:
        waiting = self._unknownConnections
        while len(waiting) >= MAX_UNKNOWN_CONNECTIONS:
            oldest = min(waiting, key=lambda c: getattr(c, "created_at", 0.0))
            waiting.discard(oldest)
            _guard_log.warning("raft port: too many connections without a handshake")
            oldest.disconnect()
        super()._onNewIncomingConnection(conn)

    def _onTick(self) -> None:
        super()._onTick()
        timeout = self._syncObj.conf.connectionTimeout
        now = time.monotonic()
        for conn in list(self._unknownConnections):
            if now - getattr(conn, "created_at", now) > timeout:
                self._unknownConnections.discard(conn)
                conn.disconnect()


def transport_class(max_frame_bytes: int) -> type[GuardedTransport]:
    """A :class:`GuardedTransport` subclass bound to ``max_frame_bytes``."""
    return type("GuardedTransport", (GuardedTransport,), {"max_frame_bytes": max_frame_bytes})


__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_UNKNOWN_CONNECTIONS",
    "GuardedTcpConnection",
    "GuardedTransport",
    "frame_length_ok",
    "transport_class",
]
