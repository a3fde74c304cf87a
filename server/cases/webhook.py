"""Outgoing webhooks for case events: JSON, HMAC-SHA256 signed, retried with backoff off-thread.

Each delivery is a POST of the JSON body with the headers
`X-WindowRate-Event` (e.g. `case.opened`), `X-WindowRate-Delivery` (a UUID, the same on
every retry) and `X-WindowRate-Signature: sha256=<hex HMAC-SHA256 of the raw body>` when a
secret is set. Any 2xx answer is a success; otherwise the delivery is retried after 0.5 s,
1 s, 2 s, … (at most 60 s apart). Deliveries are held in memory only: a server restart
loses those still pending.
"""

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.log_redact import redact

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-WindowRate-Signature"
EVENT_HEADER = "X-WindowRate-Event"
DELIVERY_HEADER = "X-WindowRate-Delivery"
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 60.0


def sign(secret: bytes, body: bytes) -> str:
    """Return the signature header value of `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """Return True if `header` is the valid signature of `body` (for receivers and tests)."""
    return hmac.compare_digest(sign(secret, body), header)


@dataclass
class _Delivery:
    """One event for one URL, with its attempt count and next attempt time."""

    url: str
    event: str
    body: bytes
    delivery_id: str
    attempt: int = 0
    not_before: float = field(default_factory=time.monotonic)


class WebhookSender:
    """Delivers events to every configured URL from one background thread."""

    def __init__(
        self, urls: list[str], secret: str | None, retries: int, timeout_s: float = 5.0
    ) -> None:
        """Prepare the sender (start() runs the thread)."""
        self.urls = list(urls)
        self._secret = secret.encode() if secret else None
        self.retries = retries
        self._timeout_s = timeout_s
        self._queue: queue.Queue[_Delivery | None] = queue.Queue()
        self._waiting: list[_Delivery] = []
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        """Start the delivery thread (nothing happens without URLs)."""
        if self.urls and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="case-webhook", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the delivery thread; pending retries are dropped (logged)."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def send(self, event: str, payload: dict[str, Any]) -> None:
        """Queue `payload` for every URL; returns at once."""
        if not self.urls:
            return
        doc = {"event": event, **payload}
        body = json.dumps(doc, ensure_ascii=False, sort_keys=True, default=str).encode()
        delivery_id = str(uuid.uuid4())
        for url in self.urls:
            self._queue.put(_Delivery(url=url, event=event, body=body, delivery_id=delivery_id))

    def _headers(self, d: _Delivery) -> dict[str, str]:
        """Return the request headers of a delivery."""
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            EVENT_HEADER: d.event,
            DELIVERY_HEADER: d.delivery_id,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, d.body)
        return headers

    def _attempt(self, http: httpx.Client, d: _Delivery) -> bool:
        """Post once; return True on a 2xx answer."""
        d.attempt += 1
        try:
            resp = http.post(d.url, content=d.body, headers=self._headers(d))
        except httpx.HTTPError as exc:
            log.warning(
                "webhook %s to %s failed (attempt %d): %s", d.event, redact(d.url), d.attempt, exc
            )
            return False
        if 200 <= resp.status_code < 300:
            return True
        log.warning(
            "webhook %s to %s answered %d (attempt %d)",
            d.event,
            redact(d.url),
            resp.status_code,
            d.attempt,
        )
        return False

    def _run(self) -> None:
        """Deliver queued events and retry failed ones until stopped."""
        with httpx.Client(timeout=self._timeout_s) as http:
            while True:
                now = time.monotonic()
                wait = min((d.not_before for d in self._waiting), default=now + 3600) - now
                try:
                    item = self._queue.get(timeout=max(0.0, wait))
                except queue.Empty:
                    item = None
                else:
                    if item is None:
                        if self._waiting:
                            log.warning("%d webhook deliveries dropped on stop", len(self._waiting))
                        return
                    self._waiting.append(item)
                now = time.monotonic()
                due = [d for d in self._waiting if d.not_before <= now]
                for d in due:
                    self._waiting.remove(d)
                    if self._attempt(http, d):
                        self.delivered += 1
                    elif d.attempt > self.retries:
                        self.failed += 1
                        log.error(
                            "webhook %s to %s given up after %d", d.event, redact(d.url), d.attempt
                        )
                    else:
                        backoff = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (d.attempt - 1))
                        d.not_before = time.monotonic() + backoff
                        self._waiting.append(d)
