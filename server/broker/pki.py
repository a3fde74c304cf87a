"""`windowrate pki`: the hall's own certificate authority and the broker's TLS certificate.

Kiosks trust only this CA (its `ca.crt` is handed over at provisioning), so a hall needs no
public CA and no internet. Keys are EC P-256, written 0600; the CA key never leaves the
directory it was made in.
"""

import datetime as dt
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest validity clients commonly accept for a server certificate


@dataclass(frozen=True)
class PkiPaths:
    """The files of one PKI directory."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (public: goes to every kiosk)."""
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's private key."""
        return self.root / "ca.key"

    def cert(self, name: str) -> Path:
        """A server certificate."""
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        """A server certificate's private key."""
        return self.root / f"{name}.key"


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file atomically with `mode` from the start (no moment world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PEM of a private key (unencrypted: the broker must start unattended)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    """Now, a minute back (a Pi whose clock lags a little still accepts the certificate)."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)


def init_ca(paths: PkiPaths, name: str = "WindowRate hall CA") -> bool:
    """Make the CA if it does not exist; True when made now."""
    if paths.ca_cert.exists() and paths.ca_key.exists():
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(paths.ca_key, _key_pem(key), 0o600)
    _write(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("made CA %s", paths.ca_cert)
    return True


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    """DNS names and IP addresses the certificate is valid for."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue_server_cert(paths: PkiPaths, name: str, hosts: list[str]) -> None:
    """Issue (or re-issue) `name`.crt/.key for `hosts`, signed by the CA."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{paths.ca_key} is not an EC key made by windowrate pki")
    ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(paths.key(name), _key_pem(key), 0o600)
    _write(paths.cert(name), cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("issued %s for %s", paths.cert(name), ", ".join(hosts))
