"""Redeem a one-time provisioning code at the server: identity, broker login and the hall CA.

The kiosk does not trust the server yet, so it first fetches the hall CA without checking the
connection and accepts it only if its SHA-256 matches the fingerprint handed over with the
code (printed next to it and in its QR). Every later connection, the redeem call included,
is verified against that CA.
"""

import hashlib
import hmac
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from kiosk.core import local_setup
from kiosk.core.local_setup import LocalSetup

log = logging.getLogger(__name__)

CA_FILE = "hall-ca.crt"
MIN_FINGERPRINT = 16  # hex digits (64 bits) the technician must give at least
QR_TAG = "WR1"


class ProvisionError(RuntimeError):
    """Provisioning failed; the message says what to do."""


@dataclass(frozen=True)
class Ticket:
    """What the technician enters: server address, code, CA fingerprint."""

    url: str
    code: str
    fingerprint: str

    @classmethod
    def parse(cls, text: str) -> "Ticket":
        """Read a scanned QR (`WR1;url;code;fp`) or typed `url code fp` (spaces between)."""
        text = text.strip()
        parts = text.split(";") if text.startswith(QR_TAG + ";") else [QR_TAG, *text.split()]
        if len(parts) != 4:
            raise ProvisionError("enter the server address, the code and the fingerprint")
        _, url, code, fp = parts
        if url.startswith("http://"):  # the code and the password would cross in clear
            raise ProvisionError("the server address must use https://")
        if not url.startswith("https://"):
            url = "https://" + url
        return cls(url.rstrip("/"), code, fp.lower())


def _der_sha256(pem: bytes) -> str:
    """SHA-256 of a PEM certificate's DER bytes, hex."""
    der = ssl.PEM_cert_to_DER_cert(pem.decode())
    return hashlib.sha256(der).hexdigest()


def fetch_ca(url: str, fingerprint: str, timeout: float = 10.0) -> bytes:
    """Fetch the hall CA and return it if it matches `fingerprint` (a hex prefix)."""
    fp = fingerprint.lower().replace(":", "")
    if len(fp) < MIN_FINGERPRINT or any(c not in "0123456789abcdef" for c in fp):
        raise ProvisionError(f"the CA fingerprint needs at least {MIN_FINGERPRINT} hex digits")
    import httpx  # here: imported at start it costs every kiosk ~10 MB of RSS (issue 13)

    # Unverified on purpose: this is how the kiosk learns whom to trust; the fingerprint
    # check below is what makes the answer trustworthy.
    try:
        r = httpx.get(f"{url}/api/provisioning/ca", verify=False, timeout=timeout)
        r.raise_for_status()
        pem = (r.json().get("pem") or "").encode()
    except (httpx.HTTPError, ValueError) as exc:
        raise ProvisionError(f"cannot reach the server at {url}: {exc}") from exc
    if not pem:
        raise ProvisionError("the server has no hall CA configured (windowrate pki)")
    got = _der_sha256(pem)
    if not hmac.compare_digest(got[: len(fp)], fp):
        raise ProvisionError("the server's CA does not match the fingerprint: do not continue")
    return pem


def redeem(ticket: Ticket, data_dir: Path, timeout: float = 10.0) -> LocalSetup:
    """Redeem `ticket`, save the CA and setup.json in `data_dir`; return the new setup."""
    import httpx  # here, not at start: see fetch_ca

    pem = fetch_ca(ticket.url, ticket.fingerprint, timeout)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    ca_path = data_dir / CA_FILE
    ca_path.write_bytes(pem)
    ctx = ssl.create_default_context(cafile=str(ca_path))
    try:
        r = httpx.post(
            f"{ticket.url}/api/provisioning/redeem",
            json={"code": ticket.code},
            verify=ctx,
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise ProvisionError(f"cannot redeem the code at {ticket.url}: {exc}") from exc
    if r.status_code != 200:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text[:200]
        raise ProvisionError(f"the server refused the code ({r.status_code}): {detail}")
    doc = r.json()
    mqtt = doc["mqtt"]
    setup = LocalSetup(
        hall=doc["hall"],
        device=doc["device"],
        host=mqtt["host"],
        port=mqtt["port"],
        username=mqtt["username"],
        password=SecretStr(mqtt["password"]),
        tls_ca=str(ca_path) if mqtt["tls"] else None,
    )
    local_setup.save(data_dir, setup)
    log.warning(
        "provisioned as %s/%s for broker %s:%d", setup.hall, setup.device, setup.host, setup.port
    )
    return setup
