"""Keep secrets out of every line the program writes: logs, error messages, /readyz bodies.

Two layers, because neither alone is enough. Patterns catch the shapes secrets travel in (the
password of a URL such as a PostgreSQL DSN, `password=...` in a libpq string, AWS secret keys
and session tokens named as such), whoever formats them: libpq echoes a DSN it cannot parse,
botocore logs headers. Registered values catch the secrets this process knows (the AWS keys
of its environment, the DSN's password, the dead-letter signing key) wherever they appear,
even in a shape no pattern foresaw.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from structlog.typing import EventDict

MASK = "***"
# Shorter values would mask ordinary words; a real secret is longer than this.
MIN_SECRET_LENGTH = 6
# Environment variables that hold a secret in their value.
SECRET_ENVIRONMENT = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

# scheme://user:password@host: the password ends at the last "@" before a blank or a quote.
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@'\"]*:)([^\s'\"]*)(@)")
_SECRET_NAME = (
    r"(?:aws_)?secret(?:_?access)?_?key|secret|password|passwd|pwd|sslpassword|"
    r"(?:aws_|x-amz-)?(?:session|security)[-_]?token|signing_?key|private_?key|api_?key"
)
# name=value, name: value, "name": "value", name='quoted value' (libpq), in any case.
_NAMED_SECRET = re.compile(
    rf"(?i)(\b(?:{_SECRET_NAME})\b['\"]?\s*[=:]\s*)"
    r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,;&'\"})\]]+)"
)
_SECRET_KEY = re.compile(rf"(?i)^(?:{_SECRET_NAME}|dsn|.*_dsn|database_url)$")
_CONNECTION_NAME = re.compile(r"(?i)(?:^|_)(?:dsn|database_url)$")

_known: set[str] = set()
_known_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask `value` wherever it appears from now on (too short values are ignored)."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _known_lock:
            _known.add(value)
            # A URL carries its password percent-encoded; mask that spelling too.
            _known.add(value.replace("%", "%25").replace("@", "%40").replace(":", "%3A"))


def register_environment_secrets(environ: Mapping[str, str]) -> None:
    """Register the secrets of the environment: AWS keys and tokens, the password of every URL
    (DATABASE_URL, a DSN override), settings with a secret's name (STREAM_PROJECTOR_...)."""
    for name, value in environ.items():
        if name in SECRET_ENVIRONMENT:
            register_secret(value)
        else:
            register_named(name.rsplit("__", 1)[-1], value)


def register_named(name: str, value: str) -> None:
    """Register what is secret in a setting called `name`: all of it for a secret's name, the
    password for a connection string (its host and database are worth showing), the password
    of any URL whatever its name."""
    if _SECRET_KEY.match(name) and not _CONNECTION_NAME.search(name):
        register_secret(value)
    elif "://" in value or _CONNECTION_NAME.search(name):
        register_dsn_password(value)


def register_dsn_password(dsn: str | None) -> None:
    """Register the password of a PostgreSQL DSN (URL or key=value form), if it has one."""
    if not dsn:
        return
    if "://" in dsn:
        try:
            password = urlsplit(dsn).password
        except ValueError:
            password = None  # unparsable: the URL pattern still masks it in messages
        register_secret(unquote(password) if password else None)
        return
    for match in _NAMED_SECRET.finditer(dsn):
        register_secret(match.group(2).strip("'\""))


def is_secret_name(name: str) -> bool:
    """Whether a setting or field called `name` holds a secret (its value is never shown)."""
    return bool(_SECRET_KEY.match(name))


def redact(text: str) -> str:
    """`text` with every secret it contains replaced by ***."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)
    text = _NAMED_SECRET.sub(_mask_named, text)
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    return text


def _mask_named(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}{MASK}{quote}"


def redact_value(value: Any, key: str = "") -> Any:
    """A copy of a log field's value with secrets masked (strings, and inside dicts/lists)."""
    if key and is_secret_name(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def redact_event(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets in every field of a log line."""
    return {key: redact_value(value, key) for key, value in event_dict.items()}


def registered() -> Iterable[str]:
    """The registered values (for tests)."""
    with _known_lock:
        return frozenset(_known)
