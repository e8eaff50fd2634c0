"""Secrets are masked in every shape they travel in, and in every log line, ours or a library's."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator

import orjson
import pytest
import structlog

from consumer.observability import redact as redaction
from consumer.observability.log import configure_logging
from consumer.observability.redact import (
    MASK,
    is_secret_name,
    redact,
    redact_event,
    register_dsn_password,
    register_environment_secrets,
    register_secret,
)

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD6session"


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Each test starts with no registered secret, and leaves none behind."""
    saved = set(redaction._known)
    redaction._known.clear()
    yield
    redaction._known.clear()
    redaction._known.update(saved)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://reader:Pa55word@db:5432/shop", "Pa55word"),
        # Too broken for any parser; libpq quotes it whole in its error message.
        ('invalid URI: "postgresql://user:Pa55word@[fd00::1/db"', "Pa55word"),
        ("https://user:p@ss:w0rd@example.com/x", "p@ss:w0rd"),
        ("host=db password=Pa55word dbname=shop", "Pa55word"),
        ("host=db password='Pa55 word' dbname=shop", "Pa55 word"),
        ('{"SecretAccessKey": "abcdEFGH1234", "AccessKeyId": "AKIA..."}', "abcdEFGH1234"),
        ("aws_secret_access_key = abcdEFGH1234", "abcdEFGH1234"),
        ("X-Amz-Security-Token: FwoGZXIvYXdzEJr", "FwoGZXIvYXdzEJr"),
        ("?X-Amz-Security-Token=FwoGZXIvYXdzEJr&X-Amz-Date=1", "FwoGZXIvYXdzEJr"),
        ("dead_letter.signing_key=hmac-key-123", "hmac-key-123"),
    ],
)
def test_patterns_mask_the_secret_and_keep_the_rest(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert MASK in masked
    assert masked.split(MASK)[0] == text.split(secret)[0]


def test_registered_values_are_masked_in_any_shape() -> None:
    register_environment_secrets(
        {
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_SESSION_TOKEN": TOKEN,
            "DATABASE_URL": "postgresql://u:Env-Pa55word@h/db",
            "STREAM_PROJECTOR_DEAD_LETTER__SIGNING_KEY": "hmac-signing-key",
            "HOME": "/root",
        }
    )
    text = f"signed with {SECRET_KEY}; token {TOKEN}; pw Env-Pa55word; key hmac-signing-key"
    assert redact(text) == f"signed with {MASK}; token {MASK}; pw {MASK}; key {MASK}"
    assert redact("/root") == "/root"


def test_a_dsn_password_is_registered_percent_decoded_and_masked_both_ways() -> None:
    register_dsn_password("postgresql://u:p%40ss-word@h/db")
    assert redact("password is p@ss-word") == f"password is {MASK}"
    register_dsn_password("host=h password=kv-secret-1 dbname=x")
    assert redact("kv-secret-1 leaked") == f"{MASK} leaked"


def test_short_values_are_not_registered() -> None:
    register_secret("abc")
    assert redact("abc abc") == "abc abc"


def test_secret_names() -> None:
    for name in ("password", "dsn", "signing_key", "SecretAccessKey", "aws_session_token"):
        assert is_secret_name(name), name
    for name in ("table", "queue_url", "stream_name", "next_token"):
        assert not is_secret_name(name), name


def test_the_log_processor_masks_fields_by_name_and_by_content() -> None:
    register_secret(SECRET_KEY)
    event = redact_event(
        None,
        "info",
        {
            "event": f"calling with {SECRET_KEY}",
            "dsn": "postgresql://u:pw-123456@h/db",
            "signing_key": "k-123456",
            "nested": {"password": "pw-654321", "items": [f"x {SECRET_KEY}"]},
            "count": 3,
        },
    )
    assert event == {
        "event": f"calling with {MASK}",
        "dsn": MASK,
        "signing_key": MASK,
        "nested": {"password": MASK, "items": [f"x {MASK}"]},
        "count": 3,
    }


def test_our_lines_and_library_lines_are_json_and_masked_on_one_stream() -> None:
    stream = io.StringIO()
    # An earlier configure_logging may have left warnings captured towards a handler since
    # replaced (pytest swaps warnings.showwarning per test): start from a clean state.
    logging.captureWarnings(False)
    configure_logging("app", "worker-1", "INFO", stream=stream)
    register_secret(SECRET_KEY)
    try:
        structlog.get_logger("consumer.test").info("ours", secret=SECRET_KEY, dsn="x://u:pw@h")
        # What psycopg_pool writes when it cannot connect, DSN and all.
        logging.getLogger("psycopg.pool").warning(
            "error connecting in 'pool-1': connection to postgresql://u:Pa55word@db failed"
        )
        logging.getLogger("botocore.endpoint").info("request headers: %s", SECRET_KEY)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(f"deprecated, see {SECRET_KEY}", DeprecationWarning, stacklevel=1)
        try:
            raise RuntimeError(f"failed with {SECRET_KEY}")
        except RuntimeError:
            structlog.get_logger("consumer.test").exception("crashed")
    finally:
        logging.captureWarnings(False)
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert SECRET_KEY not in text and "Pa55word" not in text
    # botocore's INFO line is below its WARNING threshold; the warning comes via py.warnings.
    assert [line.get("logger") for line in lines] == [None, "psycopg.pool", "py.warnings", None]
    assert lines[0]["event"] == "ours" and lines[0]["dsn"] == MASK
    assert lines[0]["application"] == "app" and lines[0]["worker_id"] == "worker-1"
    assert lines[1]["level"] == "warning" and "postgresql://u:***@db" in lines[1]["event"]
    assert "DeprecationWarning: deprecated" in lines[2]["event"]
    assert lines[3]["event"] == "crashed" and "Traceback" in lines[3]["exception"]
