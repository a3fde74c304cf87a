"""Keep secrets in URLs out of the logs: query values named like token, code, key are masked."""

import logging
import re
from typing import Any

# A query parameter whose name suggests a secret, up to the next & or white space / quote.
SECRET_QUERY = re.compile(
    r"(?P<name>[?&][^=&\s\"']*(?:token|code|pass|pw|secret|key|sig|auth|session|csrf)"
    r"[^=&\s\"']*=)[^&\s\"']*",
    re.IGNORECASE,
)
# user:password@ in a URL (database and broker URLs).
URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@", re.IGNORECASE)
# Loggers that print request URLs: the HTTP client and the web server's access log.
URL_LOGGERS = ("httpx", "httpcore", "uvicorn.access", "uvicorn.error")
MASK = "***"


def redact(text: str) -> str:
    """Return `text` with secret query values and URL passwords masked."""
    text = SECRET_QUERY.sub(lambda m: m.group("name") + MASK, text)
    return URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}:{MASK}@", text)


def _clean(value: Any) -> Any:
    """Return a log argument with secrets masked (URLs are formatted to text first)."""
    if isinstance(value, str):
        return redact(value)
    if type(value).__name__ == "URL":  # httpx.URL
        return redact(str(value))
    return value


class RedactUrls(logging.Filter):
    """Mask secret query values and URL passwords in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drop it."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        return True


_FILTER = RedactUrls()


def install() -> None:
    """Add the filter to the loggers that print URLs (once; later calls do nothing)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
