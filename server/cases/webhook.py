"""Outgoing webhooks for case events: a durable outbox table sent by one background thread.

A case event becomes one `webhook_outbox` row per configured URL, written in the same
transaction as the case change (`WebhookSender.enqueue`), so the event and its alert are
stored together or not at all. The sender thread posts the rows that are due, marks each
delivered on a 2xx answer, and otherwise retries it after 0.5 s, 1 s, 2 s, … (at most 60 s
apart) until `cases.webhook_retries` retries have failed; then the row is given up. A
restarted server sends every undelivered row again at once (those given up included), so
a SIGKILL or a power cut loses no alert.

Each delivery is a POST of the JSON body with the headers `X-WindowRate-Event` (e.g.
`case.opened`), `X-WindowRate-Delivery` (a UUID, the same on every retry and after a
restart) and `X-WindowRate-Signature: sha256=<hex HMAC-SHA256 of the raw body>` when a
secret is set. A crash between a receiver's answer and the row being marked sends that
delivery once more after the restart, with the same delivery id: receivers drop a repeat
by that id.
"""

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from server.cases.models import WebhookDelivery
from server.db.engine import Database
from server.db.models import utcnow
from server.log_redact import redact

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-WindowRate-Signature"
EVENT_HEADER = "X-WindowRate-Event"
DELIVERY_HEADER = "X-WindowRate-Delivery"
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 60.0
BATCH = 100  # rows read per pass
KEEP_DELIVERED = timedelta(days=30)  # delivered rows older than this are deleted
PRUNE_EVERY_S = 3600.0  # … at start and this often
IDLE_S = 60.0  # longest sleep between passes when nothing is due


def sign(secret: bytes, body: bytes) -> str:
    """Return the signature header value of `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """Return True if `header` is the valid signature of `body` (for receivers and tests)."""
    return hmac.compare_digest(sign(secret, body), header)


def backoff_s(attempt: int) -> float:
    """Return the wait after failed attempt number `attempt` (1-based)."""
    return float(min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempt - 1)))


def _undelivered() -> Any:
    """Return the condition of the rows not delivered yet."""
    return WebhookDelivery.delivered.is_(None)


def _waiting() -> Any:
    """Return the condition of the rows the sender still tries."""
    return WebhookDelivery.delivered.is_(None) & WebhookDelivery.gave_up.is_(None)


def pending_deliveries(session: Session) -> int:
    """Return the number of webhook rows not delivered yet (waiting or given up)."""
    q = select(func.count()).select_from(WebhookDelivery).where(_undelivered())
    return int(session.scalar(q) or 0)


def given_up_deliveries(session: Session) -> int:
    """Return the number of webhook rows given up (retried at the server's next start)."""
    q = (
        select(func.count())
        .select_from(WebhookDelivery)
        .where(_undelivered() & WebhookDelivery.gave_up.is_not(None))
    )
    return int(session.scalar(q) or 0)


class WebhookSender:
    """Writes case events to the outbox and delivers them from one background thread."""

    def __init__(
        self,
        db: Database,
        urls: Sequence[str],
        secret: str | None,
        retries: int,
        timeout_s: float = 5.0,
    ) -> None:
        """Prepare the sender (start() runs the thread)."""
        self.db = db
        self.urls = list(urls)
        self._secret = secret.encode() if secret else None
        self.retries = retries
        self._timeout_s = timeout_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned = time.monotonic()
        self.delivered = 0
        self.failed = 0

    def enqueue(
        self, session: Session, event_name: str, payload: dict[str, Any], case_id: int | None = None
    ) -> str | None:
        """Add the event's rows to `session` (sent after its commit); return the delivery id."""
        if not self.urls:
            return None
        doc = {"event": event_name, **payload}
        body = json.dumps(doc, ensure_ascii=False, sort_keys=True, default=str)
        delivery_id = str(uuid.uuid4())
        now = utcnow()
        for url in self.urls:
            session.add(
                WebhookDelivery(
                    delivery_id=delivery_id, event=event_name, case_id=case_id, url=url,
                    body=body, created=now, attempts=0, next_attempt=now, last_error="",
                )
            )  # fmt: skip
        if not event.contains(session, "after_commit", self._after_commit):
            event.listen(session, "after_commit", self._after_commit)
        return delivery_id

    def _after_commit(self, _session: Session) -> None:
        """Wake the thread once rows are committed."""
        self._wake.set()

    def wake(self) -> None:
        """Make the thread look for due rows now."""
        self._wake.set()

    def send(self, event_name: str, payload: dict[str, Any], case_id: int | None = None) -> None:
        """Store an event in its own transaction (for events outside a case change)."""
        if not self.urls:
            return
        with self.db.session() as session:
            self.enqueue(session, event_name, payload, case_id)
            session.commit()

    def start(self) -> None:
        """Retry every undelivered row now and start the thread (when there is anything to do)."""
        if self._thread is not None:
            return
        now = utcnow()
        self._prune()
        with self.db.session() as session:
            revived = session.execute(
                update(WebhookDelivery)
                .where(_undelivered())
                .values(gave_up=None, attempts=0, next_attempt=now)
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
        if revived:
            log.info("%d webhook deliveries pending from before the start: sending them", revived)
        if not self.urls and not revived:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="case-webhook", daemon=True)
        self._thread.start()

    def _prune(self) -> None:
        """Delete the rows delivered more than KEEP_DELIVERED ago."""
        self._pruned = time.monotonic()
        with self.db.session() as session:
            session.execute(
                delete(WebhookDelivery).where(WebhookDelivery.delivered < utcnow() - KEEP_DELIVERED)
            )
            session.commit()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; undelivered rows stay in the table for the next start."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        with self.db.session() as session:
            left = pending_deliveries(session)
        if left:
            log.warning("%d webhook deliveries not delivered yet; sent at the next start", left)

    def _headers(self, row: WebhookDelivery, body: bytes) -> dict[str, str]:
        """Return the request headers of a delivery."""
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            EVENT_HEADER: row.event,
            DELIVERY_HEADER: row.delivery_id,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        return headers

    def _post(self, http: httpx.Client, row: WebhookDelivery, attempt: int) -> str | None:
        """Post once; return None on a 2xx answer, else why it failed."""
        body = row.body.encode()
        try:
            resp = http.post(row.url, content=body, headers=self._headers(row, body))
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= resp.status_code < 300:
                return None
            why = f"HTTP {resp.status_code}"
        log.warning(
            "webhook %s to %s failed (attempt %d): %s", row.event, redact(row.url), attempt, why
        )
        return why[:500]

    def _claim(self, row: WebhookDelivery) -> bool:
        """Count the attempt and hold the row for this try; False if another sender has it."""
        hold = utcnow() + timedelta(seconds=self._timeout_s + 5)
        with self.db.session() as session:
            done = session.execute(
                update(WebhookDelivery)
                .where(
                    (WebhookDelivery.id == row.id)
                    & (WebhookDelivery.attempts == row.attempts)
                    & _waiting()
                )
                .values(attempts=row.attempts + 1, next_attempt=hold)
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
        return bool(done)

    def _record(self, row: WebhookDelivery, attempt: int, error: str | None) -> None:
        """Mark the row delivered, due again after the backoff, or given up."""
        now = utcnow()
        values: dict[str, Any]
        if error is None:
            values = {"delivered": now, "last_error": ""}
            self.delivered += 1
        elif attempt > self.retries:
            values = {"gave_up": now, "last_error": error}
            self.failed += 1
            log.error(
                "webhook %s to %s given up after %d attempts (retried at the next start)",
                row.event, redact(row.url), attempt,
            )  # fmt: skip
        else:
            values = {
                "next_attempt": now + timedelta(seconds=backoff_s(attempt)),
                "last_error": error,
            }
        with self.db.session() as session:
            session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == row.id).values(**values)
            )
            session.commit()

    def _pass(self, http: httpx.Client) -> float:
        """Send every due row; return the seconds until the next one is due."""
        if time.monotonic() - self._pruned >= PRUNE_EVERY_S:
            self._prune()
        now = utcnow()
        with self.db.session() as session:
            due = session.scalars(
                select(WebhookDelivery)
                .where(_waiting() & (WebhookDelivery.next_attempt <= now))
                .order_by(WebhookDelivery.id)
                .limit(BATCH)
            ).all()
        for row in due:
            if self._stop.is_set():
                return 0.0
            if not self._claim(row):
                continue
            attempt = row.attempts + 1
            self._record(row, attempt, self._post(http, row, attempt))
        if len(due) == BATCH:
            return 0.0
        with self.db.session() as session:
            nxt: datetime | None = session.scalar(
                select(func.min(WebhookDelivery.next_attempt)).where(_waiting())
            )
        if nxt is None:
            return IDLE_S
        return max(0.0, min(IDLE_S, (nxt - utcnow()).total_seconds()))

    def _run(self) -> None:
        """Send due rows until stopped; a database error is logged and retried."""
        with httpx.Client(timeout=self._timeout_s) as http:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    wait = self._pass(http)
                except SQLAlchemyError as exc:
                    log.warning("webhook outbox unavailable, retrying in 5 s: %s", exc)
                    wait = 5.0
                if wait > 0:
                    self._wake.wait(wait)
