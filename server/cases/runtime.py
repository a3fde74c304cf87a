"""Start and stop the case machinery with the app: the webhook sender and the rating poller."""

import logging

from fastapi import FastAPI

from server.cases.poller import NegativeRatingPoller
from server.cases.webhook import WebhookSender
from server.settings import ServerSettings

log = logging.getLogger(__name__)


def start_cases(app: FastAPI, cfg: ServerSettings) -> None:
    """Start the webhook outbox sender and (unless disabled) the poller; needs app.state.influx."""
    secret = cfg.cases.webhook_secret.get_secret_value() if cfg.cases.webhook_secret else None
    if cfg.cases.webhook_urls and secret is None:
        log.warning("case webhooks are sent unsigned: WR_SERVER_CASES__WEBHOOK_SECRET is not set")
    sender = WebhookSender(app.state.db, cfg.cases.webhook_urls, secret, cfg.cases.webhook_retries)
    sender.start()
    app.state.case_webhooks = sender
    app.state.case_poller = None
    if cfg.cases.poller:
        poller = NegativeRatingPoller(app.state.db, app.state.influx, cfg, sender)
        poller.start()
        app.state.case_poller = poller
        log.info("case poller started (every %.1f s)", cfg.cases.poll_s)


async def stop_cases(app: FastAPI) -> None:
    """Stop the poller after its current scan, then the webhook sender."""
    poller: NegativeRatingPoller | None = getattr(app.state, "case_poller", None)
    if poller is not None:
        await poller.stop()
    sender: WebhookSender | None = getattr(app.state, "case_webhooks", None)
    if sender is not None:
        sender.stop()
