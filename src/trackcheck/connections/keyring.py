"""Encryption at rest for secrets trackcheck stores: connection options and literal secrets in plans.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with the key from ``TRACKCHECK_SECRET_KEY``
(``secret_key`` in trackcheck.toml). The setting may hold several keys separated by commas: the first
encrypts, every one decrypts, so a key is rotated by putting the new one first and re-saving. A key is
either a Fernet key (``Fernet.generate_key()``) or any passphrase of 16+ characters, stretched with HKDF.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trackcheck.errors import ConfigError

MIN_PASSPHRASE = 16


class Keyring:
    """Seals and opens text with the configured secret key(s)."""

    def __init__(self, setting: str) -> None:
        keys = [part.strip() for part in setting.split(",") if part.strip()]
        if not keys:
            raise ConfigError("the secret key is empty", field="secret_key")
        self._fernet = MultiFernet([Fernet(_fernet_key(key)) for key in keys])

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, token: str, *, what: str) -> str:
        """The text sealed in ``token``; ConfigError naming ``what`` when no configured key opens it."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise ConfigError(
                f"cannot decrypt {what}: it was stored with another secret key (put the old key after the new "
                "one in TRACKCHECK_SECRET_KEY, comma-separated, to read it)",
                field="secret_key",
            ) from exc


def _fernet_key(key: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(key.encode("ascii"))
        if len(raw) == 32 and len(key) == 44:
            return key.encode("ascii")
    except (binascii.Error, ValueError, UnicodeError):
        pass
    if len(key) < MIN_PASSPHRASE:
        raise ConfigError(
            f"the secret key is too short: use a Fernet key or a passphrase of at least {MIN_PASSPHRASE} "
            "characters (python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')",
            field="secret_key",
        )
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"trackcheck", info=b"secrets at rest").derive(
        key.encode("utf-8")
    )
    return base64.urlsafe_b64encode(derived)


def no_key_error(what: str) -> ConfigError:
    """The error for a secret that would be stored in clear because no key is configured."""
    return ConfigError(
        f"{what} holds a secret and the service has no secret key to encrypt it with: the operator sets "
        "TRACKCHECK_SECRET_KEY (or secret_key in trackcheck.toml), then it can be stored",
        field="secret_key",
    )
