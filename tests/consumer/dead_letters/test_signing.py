"""HMAC of dead-letter envelopes: what verifies, what does not, and keys from Secrets Manager."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from consumer.dead_letters.signing import Signer, signer_from_setting
from consumer.errors import ConfigError, MissingResourceError

KEY = "k" * 40
ENVELOPE = {
    "version": 2,
    "application": "shop",
    "stream": "orders",
    "shard_id": "shardId-000000000001",
    "sequence_number": "49000",
    "record": {"Data": "eyJrIjogMX0=", "ApproximateArrivalTimestamp": 1743498000.5},
}


def test_a_signed_envelope_verifies_after_any_json_tool_rewrites_it() -> None:
    signer = Signer(KEY.encode())
    signed = signer.sign(dict(ENVELOPE))
    rewritten = json.loads(json.dumps(signed, indent=4, sort_keys=False))
    assert signer.problem(rewritten) is None
    assert signer.problem(orjson.loads(orjson.dumps(signed))) is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda e: e.update(sequence_number="9" * 60), "bad signature"),
        (lambda e: e["record"].update(Data="SElKQUNLRUQ="), "bad signature"),
        (lambda e: e.pop("signature"), "unsigned"),
        (lambda e: e["signature"].update(key_id="0" * 12), "another key"),
        (lambda e: e.update(signature="forged"), "not HMAC-SHA256"),
    ],
    ids=["changed-position", "changed-record", "unsigned", "other-key-id", "garbage"],
)
def test_a_changed_or_unsigned_envelope_is_refused_with_why(
    change: Callable[[dict[str, Any]], None], problem: str
) -> None:
    signer = Signer(KEY.encode())
    signed = orjson.loads(orjson.dumps(signer.sign(dict(ENVELOPE))))
    change(signed)
    assert problem in str(signer.problem(signed))


def test_a_letter_signed_with_another_key_says_so() -> None:
    signed = Signer(b"x" * 40).sign(dict(ENVELOPE))
    assert "signed with another key" in str(Signer(KEY.encode()).problem(signed))


def test_no_key_means_no_signer_and_a_short_key_is_refused_without_showing_it() -> None:
    nobody: Callable[[], Any] = lambda: pytest.fail("no Secrets Manager call expected")  # noqa: E731
    assert signer_from_setting(SecretStr(""), nobody) is None
    with pytest.raises(ConfigError) as refused:
        signer_from_setting(SecretStr("hunter2-is-short"), nobody)
    message = str(refused.value)
    assert (
        "dead_letter.signing_key" in message
        and "STREAM_PROJECTOR_DEAD_LETTER__SIGNING_KEY" in message
    )
    assert "hunter2" not in message
    assert KEY not in repr(Signer(KEY.encode()))


def test_a_key_from_secrets_manager_signs_like_the_same_key_given_directly(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    secrets = aws_client("secretsmanager")
    name = unique_name("dlq-key")
    arn = secrets.create_secret(Name=name, SecretString=KEY)["ARN"]

    for reference in (f"secretsmanager:{name}", f"secretsmanager:{arn}"):
        signer = signer_from_setting(SecretStr(reference), lambda: secrets)
        assert signer is not None
        assert signer.key_id == Signer(KEY.encode()).key_id

    from consumer.observability.redact import redact

    assert KEY not in redact(f"something printed the key {KEY} by mistake")

    with pytest.raises(MissingResourceError, match="no secret 'nope-") as missing:
        signer_from_setting(SecretStr(f"secretsmanager:{unique_name('nope')}"), lambda: secrets)
    assert KEY not in str(missing.value)
