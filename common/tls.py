"""TLS for the HTTP listeners and for the calls servers and clients make.

Config keys (tracker and storage node alike):

* ``tls_cert`` + ``tls_key``: PEM certificate chain and private key; when both are set the
  process serves HTTPS only on its ``listen`` address (its ``advertise`` URL must then be
  ``https://``). One without the other is a config error.
* ``tls_ca``: a PEM bundle trusted for outgoing HTTPS calls (heartbeats to the tracker,
  node-to-node pushes, fetches and reads, the tracker's calls to nodes) in place of the
  system's trust store. Unset: the system store.

The SDK and CLI take the same bundle as ``Client(..., ca=PATH)`` / ``--ca`` / ``$MYDFS_CA``.
Certificates are always verified (host name included); there is no "insecure" switch.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from mydfs.common.config import ConfigError, Option

CA_ENV = "MYDFS_CA"

TLS_OPTIONS: tuple[Option, ...] = (
    Option("tls_cert", "path", "", "PEM certificate (chain) to serve HTTPS with ('' = HTTP)"),
    Option("tls_key", "path", "", "PEM private key of tls_cert (mode 0600)"),
    Option(
        "tls_ca",
        "path",
        "",
        "PEM CA bundle trusted for outgoing HTTPS calls ('' = the system's trust store)",
    ),
)


def tls_paths(values: Mapping[str, Any]) -> tuple[Path | None, Path | None, Path | None]:
    """``(cert, key, ca)`` from merged config values, checked; unset ones are None."""
    cert, key, ca = (values.get(k) or None for k in ("tls_cert", "tls_key", "tls_ca"))
    if (cert is None) != (key is None):
        raise ConfigError("config keys tls_cert and tls_key: set both or neither")
    for name, path in (("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"config key {name}: {path} is not a file")
    return (
        None if cert is None else Path(cert),
        None if key is None else Path(key),
        None if ca is None else Path(ca),
    )


def server_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """An HTTPS server context, or None for plain HTTP."""
    if cert is None or key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(os.fspath(cert), os.fspath(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"config keys tls_cert/tls_key: cannot load: {exc}") from None
    return ctx


def client_context(ca: str | os.PathLike[str] | None) -> ssl.SSLContext | None:
    """A verifying client context trusting ``ca``; None (aiohttp's default: the system store)
    when ``ca`` is unset."""
    if not ca:
        return None
    try:
        return ssl.create_default_context(cafile=os.fspath(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"CA bundle {ca}: cannot load: {exc}") from None


def connector(ca: str | os.PathLike[str] | None, **kwargs: Any) -> aiohttp.TCPConnector:
    """An aiohttp connector whose HTTPS calls trust ``ca`` (or the system store)."""
    ctx = client_context(ca)
    if ctx is not None:
        kwargs["ssl"] = ctx
    return aiohttp.TCPConnector(**kwargs)


def ca_from_env(
    ca: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """``ca`` if given, else ``$MYDFS_CA``, else None."""
    if ca:
        return os.fspath(ca)
    env = os.environ if environ is None else environ
    return env.get(CA_ENV) or None


def listening_site(
    runner: web.BaseRunner, host: str, port: int, cert: Path | None, key: Path | None
) -> tuple[web.TCPSite, str]:
    """A server's listening site: HTTPS with ``cert`` and ``key``, else plain HTTP; and which
    of the two it is (``"HTTPS"`` or ``"HTTP"``, for the start-up log line)."""
    context = server_context(cert, key)
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=context)
    return site, "HTTPS" if context else "HTTP"


__all__ = [
    "CA_ENV",
    "TLS_OPTIONS",
    "ca_from_env",
    "client_context",
    "connector",
    "listening_site",
    "server_context",
    "tls_paths",
]
