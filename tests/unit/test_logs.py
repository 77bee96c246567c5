"""whk.logs: the JSON and text formatters, the format choice, the last-line scrubbing of credentials."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from whk.logs import JsonFormatter, TextFormatter, configure_logging, resolve_format, scrub
from whk.settings import load_settings


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("whk.dispatcher.delivery", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_formatter_emits_extra_fields_as_keys() -> None:
    line = JsonFormatter().format(
        _record(
            "delivery %s",
            "delivered",
            event_id="0b8e…",
            webhook_id=7,
            delivery_id=42,
            attempt=2,
            dispatcher_id="host-1",
            request_headers={"X-Tenant": "acme"},
        )
    )
    out = json.loads(line)
    assert out["msg"] == "delivery delivered"
    assert out["level"] == "INFO"
    assert out["logger"] == "whk.dispatcher.delivery"
    assert out["ts"].endswith("Z")
    fields = (out["webhook_id"], out["delivery_id"], out["attempt"], out["dispatcher_id"])
    assert fields == (7, 42, 2, "host-1")
    assert out["request_headers"] == {"X-Tenant": "acme"}
    assert "args" not in out and "levelno" not in out


def test_json_formatter_keeps_tracebacks_and_odd_values() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed", thing=object())
        record.exc_info = __import__("sys").exc_info()
    out = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in out["exc"]
    assert out["thing"].startswith("<object object")


def test_text_formatter_appends_fields() -> None:
    line = TextFormatter().format(_record("round", sql_ms=1.5, dispatcher_id="d 1"))
    assert ' INFO whk.dispatcher.delivery: round sql_ms=1.5 dispatcher_id="d 1"' in line


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw here", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("key whk_abcdefghij12_Zm9vYmFyYmF6cXV4", "Zm9vYmFyYmF6cXV4"),
        ("postgresql://whk:Pa55w0rd@db.example:5432/whk", "Pa55w0rd"),
        ("host=db user=whk password=Pa55w0rd dbname=whk", "Pa55w0rd"),
        ("amqp://guest:guestpw@127.0.0.1/", "guestpw"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("POST https://hooks.example/in?x=1&access_token=tok123abc&y=2", "tok123abc"),
        ('{"request_url":"https://h.example/in?api_key=k3y9"}', "k3y9"),
    ],
)
def test_scrub_masks_credentials(text: str, secret: str) -> None:
    assert secret not in scrub(text)
    assert "***" in scrub(text)


def test_scrub_leaves_ordinary_text() -> None:
    text = "http://127.0.0.1:8080/hook?x=1 whk_03_entregas webhook 5 delivered"
    assert scrub(text) == text


def test_both_formatters_scrub() -> None:
    record = _record("dsn %s", "postgresql://u:hunter22@h/db", url="https://u:hunter22@h/")
    assert "hunter22" not in JsonFormatter().format(record)
    assert "hunter22" not in TextFormatter().format(record)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_format_is_text_on_a_terminal_else_json() -> None:
    assert resolve_format("auto", _Tty()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    assert resolve_format("json", _Tty()) == "json"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    whk_level = logging.getLogger("whk").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("whk").setLevel(whk_level)


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_once_and_debug_lowers_only_whk() -> None:
    out = io.StringIO()
    settings = load_settings({"WHK_LOG_FORMAT": "json", "WHK_DEBUG": "1", "WHK_LOG_LEVEL": "WARNING"})
    configure_logging(settings, stream=out)
    configure_logging(settings, stream=out)  # replaces its own handler, never stacks a second one
    logging.getLogger("whk.dispatcher").debug("seen", extra={"webhook_id": 3})
    logging.getLogger("aiohttp.client").info("not seen")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["msg"], x["webhook_id"]) for x in lines] == [("seen", 3)]


def test_log_format_setting_is_checked() -> None:
    from whk.errors import SettingsError

    with pytest.raises(SettingsError, match="WHK_LOG_FORMAT"):
        load_settings({"WHK_LOG_FORMAT": "xml"})
