"""HMAC-SHA256 over dead-letter envelopes, so a redrive can tell our letters from forged ones.

Anyone who may SendMessage to the queue (the daemon's own role can) can write a message that
looks like a dead letter; with `dead_letter.signing_key` set, only holders of the key can
write one that `dlq redrive` accepts (threat model: docs/failures.md). The signature covers a
canonical serialization of the whole envelope (sorted keys, no spaces, as orjson writes it),
so a letter re-serialized by any JSON tool still verifies, and any changed field does not.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from consumer.aws_errors import RESOURCE_NOT_FOUND, error_code
from consumer.errors import ConfigError, MissingResourceError
from consumer.observability.redact import register_secret

SIGNATURE = "signature"
ALGORITHM = "HMAC-SHA256"
SECRETS_MANAGER = "secretsmanager:"
# 256 bits, as RFC 2104 recommends for HMAC-SHA256 (a shorter key is easier to guess offline
# from one signed letter).
MIN_KEY_BYTES = 32
SETTING = "dead_letter.signing_key"
ENV = "STREAM_PROJECTOR_DEAD_LETTER__SIGNING_KEY"


def canonical(envelope: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: the envelope without its signature, keys sorted, compact."""
    return orjson.dumps(
        {k: v for k, v in envelope.items() if k != SIGNATURE}, option=orjson.OPT_SORT_KEYS
    )


class Signer:
    """Signs and verifies envelopes with one key; its repr never shows the key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        # Names the key in a letter without revealing it: a letter signed with an older key
        # says so instead of looking tampered with.
        self.key_id = hashlib.sha256(b"stream-projector key id\x00" + key).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"

    def _mac(self, envelope: Mapping[str, Any]) -> str:
        return hmac.new(self._key, canonical(envelope), hashlib.sha256).hexdigest()

    def sign(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """The envelope with its signature (the envelope must be plain JSON values)."""
        signed = {k: v for k, v in envelope.items() if k != SIGNATURE}
        signed[SIGNATURE] = {"alg": ALGORITHM, "key_id": self.key_id, "mac": self._mac(signed)}
        return signed

    def problem(self, envelope: Mapping[str, Any]) -> str | None:
        """Why the envelope's signature is not good, or None when it is."""
        signature = envelope.get(SIGNATURE)
        if signature is None:
            return "unsigned, and dead_letter.signing_key is set"
        if not isinstance(signature, dict) or signature.get("alg") != ALGORITHM:
            return f"signature is not {ALGORITHM}"
        if signature.get("key_id") != self.key_id:
            return f"signed with another key (key id {signature.get('key_id')!r})"
        if not hmac.compare_digest(str(signature.get("mac", "")), self._mac(envelope)):
            return "bad signature: the envelope was changed after it was signed"
        return None


def signer_from_setting(setting: SecretStr, secrets_client: Callable[[], Any]) -> Signer | None:
    """The Signer for `dead_letter.signing_key`, or None when it is not set.

    A value `secretsmanager:<arn-or-name>` is fetched once (SecretString, or SecretBinary)
    with the client `secrets_client()` makes; errors name the setting, never the key.
    """
    value = setting.get_secret_value()
    if not value:
        return None
    if value.startswith(SECRETS_MANAGER):
        key = _from_secrets_manager(value.removeprefix(SECRETS_MANAGER), secrets_client)
    else:
        key = value.encode()
    # Masked in every line this process writes, also when it came from Secrets Manager.
    register_secret(key.decode(errors="replace"))
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{SETTING}: the key is {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes, "
            f"e.g. `openssl rand -base64 48` [env {ENV}]"
        )
    return Signer(key)


def _from_secrets_manager(secret_id: str, secrets_client: Callable[[], Any]) -> bytes:
    if not secret_id:
        raise ConfigError(f"{SETTING}: name the secret after 'secretsmanager:' [env {ENV}]")
    try:
        response = secrets_client().get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = error_code(exc)
        if code == RESOURCE_NOT_FOUND:
            raise MissingResourceError(
                f"{SETTING}: no secret {secret_id!r} in Secrets Manager (check the name or ARN "
                "and the region)"
            ) from None
        raise ConfigError(
            f"{SETTING}: cannot read secret {secret_id!r} from Secrets Manager: {code} "
            "(the role needs secretsmanager:GetSecretValue on it)"
        ) from None
    except BotoCoreError as exc:
        raise ConfigError(
            f"{SETTING}: cannot reach Secrets Manager for secret {secret_id!r}: "
            f"{type(exc).__name__}"
        ) from None
    if "SecretString" in response:
        return str(response["SecretString"]).encode()
    return bytes(response["SecretBinary"])
