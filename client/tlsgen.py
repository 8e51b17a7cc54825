"""A throwaway CA and one server certificate for a local cluster on loopback.

``mydfs cluster up --tls-dir DIR`` and ``LocalCluster(tls_dir=DIR)`` use :func:`ensure` : the
files ``ca.pem``, ``cert.pem`` and ``key.pem`` in ``DIR`` are used as they are if all three
exist (bring your own), else made here with ``cryptography`` (already a dependency, for the
Raft password): a CA valid for 1 year and a certificate for ``127.0.0.1`` and ``localhost``
signed by it. Private keys are written 0600, the folder is 0700. For a local cluster only:
production certificates come from your own CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
_CA_KEY_FILE = "ca-key.pem"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def ensure(folder: Path) -> TlsFiles:
    """The CA, certificate and key in ``folder``, made first if any of them is missing."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = TlsFiles(folder / CA_FILE, folder / CERT_FILE, folder / KEY_FILE)
    if not (files.ca.exists() and files.cert.exists() and files.key.exists()):
        _generate(folder, files)
    return files


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _generate(folder: Path, files: TlsFiles) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    later = now + datetime.timedelta(days=365)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mydfs local cluster CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(later)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private = {
        "encoding": pem,
        "format": serialization.PrivateFormat.PKCS8,
        "encryption_algorithm": serialization.NoEncryption(),
    }
    _write(folder / _CA_KEY_FILE, ca_key.private_bytes(**private), 0o600)  # type: ignore[arg-type]
    _write(files.key, key.private_bytes(**private), 0o600)  # type: ignore[arg-type]
    _write(files.cert, cert.public_bytes(pem), 0o644)
    _write(files.ca, ca_cert.public_bytes(pem), 0o644)


__all__ = ["CA_FILE", "CERT_FILE", "KEY_FILE", "TlsFiles", "ensure"]
