"""Structured logs for every WHK process: one configuration, made once by the composition root (``whk_cli``).

Standard library ``logging`` throughout; what varies is the formatter, chosen by ``WHK_LOG_FORMAT``:

* ``json`` — one JSON object per line (``ts``, ``level``, ``logger``, ``msg``, then every field passed
  with ``extra=``, e.g. ``event_id``, ``webhook_id``, ``delivery_id``, ``attempt``, ``dispatcher_id``;
  ``exc`` holds a traceback). For log shippers: fields, not text to parse.
* ``text`` — ``time LEVEL logger: message key=value …`` for a terminal.
* ``auto`` (the default) — ``text`` when stderr is a terminal, else ``json``.

``WHK_LOG_LEVEL`` sets the level of every logger; ``WHK_DEBUG=1`` lowers WHK's own loggers (``whk.*``)
to DEBUG (libraries stay at ``WHK_LOG_LEVEL``).

Both formatters pass their output through ``scrub``, which masks what looks like a credential (a
``whsec_`` signing secret, a ``whk_`` API key, a password in a connection URL or ``password=`` pair, a
credential-named URL query parameter, an ``Authorization`` value). That is the last line of defence:
code must not log secrets in the first place (request headers go through ``whk.redact`` before they are
logged, like before they are stored).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, Final, TextIO

import msgspec

from whk.settings import Settings

__all__ = [
    "DELIVERY_FIELDS",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "resolve_format",
    "scrub",
]

# The fields every line about one delivery carries (``extra=``).
DELIVERY_FIELDS: Final = ("event_id", "webhook_id", "delivery_id", "attempt", "dispatcher_id")

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_HANDLER_MARK: Final = "_whk_handler"

_SECRET_PATTERNS: Final = (
    # Standard Webhooks signing secrets and WHK API keys.
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]+"), "whsec_***"),
    (re.compile(r"\bwhk_([a-z0-9]{12})_[A-Za-z0-9_-]+"), r"whk_\1_***"),
    # user:password@ in a URL (postgresql://, amqp://, redis://, https://).
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1***@"),
    # password=… in a libpq keyword/value DSN or a query string.
    (re.compile(r"(\bpassword\s*=\s*)('[^']*'|[^\s&]+)", re.IGNORECASE), r"\1***"),
    # Credential-named query parameters in a URL (?token=…, &api_key=…, ?secret=…, ?access_token=…).
    (
        re.compile(
            r"([?&][A-Za-z0-9_.-]*(?:token|secret|passw|api[_-]?key|apikey|auth)[A-Za-z0-9_.-]*=)[^&\s\"']+",
            re.I,
        ),
        r"\1***",
    ),
    # An Authorization header value quoted inside a message.
    (re.compile(r"(\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
)


def scrub(text: str) -> str:
    """``text`` with credential-looking substrings masked (see the module docstring)."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def resolve_format(setting: str, stream: TextIO) -> str:
    """``json`` or ``text``: ``auto`` picks text for a terminal, JSON otherwise."""
    if setting != "auto":
        return setting
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _iso(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the ``extra=`` fields, exc."""

    def __init__(self) -> None:
        super().__init__()
        self._encoder = msgspec.json.Encoder(enc_hook=str)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        try:
            text = self._encoder.encode(out).decode()
        except (TypeError, ValueError, OverflowError):
            out = {k: v if isinstance(v, str | int | float | None) else repr(v) for k, v in out.items()}
            text = self._encoder.encode(out).decode()
        return scrub(text)


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"' if " " in value or not value else value
    return str(value) if isinstance(value, int | float) else repr(value)


class TextFormatter(logging.Formatter):
    """``2026-12-07 13:00:00,123 INFO whk.dispatcher: message key=value …`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _extras(record)
        if fields:
            head, sep, tail = text.partition("\n")
            pairs = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
            text = f"{head} {pairs}{sep}{tail}"
        return scrub(text)


def configure_logging(
    settings: Settings, *, stream: TextIO | None = None, overrides: Mapping[str, int] | None = None
) -> logging.Handler:
    """Install WHK's one log handler on the root logger (replacing one installed before) and set levels.

    Called once by the composition root (``whk_cli.main``); ``stream`` defaults to stderr."""
    out = sys.stderr if stream is None else stream
    fmt = resolve_format(settings.core.log_format, out)
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.core.log_level)
    logging.getLogger("whk").setLevel(logging.DEBUG if settings.core.debug else logging.NOTSET)
    for name, level in (overrides or {}).items():
        logging.getLogger(name).setLevel(level)
    return handler
