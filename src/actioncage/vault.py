"""vault.py: the orgs' secrets, Fernet-encrypted at rest with ACTIONCAGE_SECRETS_KEY (a
MultiFernet: the first key encrypts, every key decrypts, ``rotate`` re-encrypts with the first);
the one module that imports ``cryptography``. The database only ever holds ciphertext."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from actioncage.errors import ConfigError, SecretsDisabledError, ValidationFailedError
from actioncage.models import SecretRecord
from actioncage.store import Store, repo

log = logging.getLogger(__name__)

SECRET_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# Shorter values would be masked inside ordinary text (runs/masking.py masks every form).
MIN_VALUE_CHARS = 8
MAX_VALUE_CHARS = 16 * 1024


def new_key() -> str:
    """A fresh key for ACTIONCAGE_SECRETS_KEY."""
    return Fernet.generate_key().decode()


def check_name(name: object) -> str:
    """A secret's name. Raises ValidationFailedError."""
    if not isinstance(name, str) or not SECRET_NAME_RE.match(name):
        raise ValidationFailedError(
            "name must start with a letter and hold only letters, digits and underscores, "
            "at most 64 characters",
            "name",
        )
    return name


def check_value(value: object) -> str:
    """A secret's value. Raises ValidationFailedError (never echoing it)."""
    if not isinstance(value, str) or not MIN_VALUE_CHARS <= len(value) <= MAX_VALUE_CHARS:
        raise ValidationFailedError(
            f"value must be a string of {MIN_VALUE_CHARS}-{MAX_VALUE_CHARS} characters", "value"
        )
    return value


class Vault:
    """Stores, lists and reads the orgs' secrets in ``store``, encrypted with ``keys``
    (newest first). Without keys secrets are off: storing or reading one raises
    SecretsDisabledError."""

    def __init__(self, store: Store, keys: Sequence[str]) -> None:
        self._store = store
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys]) if keys else None

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def _cipher(self) -> MultiFernet:
        if self._fernet is None:
            raise SecretsDisabledError("secrets are off: the server has no ACTIONCAGE_SECRETS_KEY")
        return self._fernet

    def check_readable(self) -> None:
        """Refuse to start over secrets this process cannot read: stored secrets and no key,
        or keys none of which opens them. Raises ConfigError."""
        with self._store.session() as s:
            stored = repo.all_secret_ciphertexts(s)
        if not stored:
            return
        if self._fernet is None:
            raise ConfigError(
                f"the database holds {len(stored)} org secret(s) but ACTIONCAGE_SECRETS_KEY "
                "is not set: set it to the key they were stored with"
            )
        org, name, ciphertext = stored[0]
        try:
            self._fernet.decrypt(ciphertext.encode())
        except InvalidToken:
            raise ConfigError(
                f"ACTIONCAGE_SECRETS_KEY cannot decrypt the stored secrets (org {org}, "
                f"secret {name}): keep the old key after the new one until `actioncage "
                "secrets rotate` has run"
            ) from None

    def put(self, org_id: str, name: str, value: str) -> SecretRecord:
        """Store (or replace) a secret. Raises ValidationFailedError, SecretsDisabledError."""
        token = self._cipher().encrypt(check_value(value).encode()).decode()
        with self._store.session() as s:
            return repo.put_secret(s, org_id, check_name(name), token)

    def list(self, org_id: str) -> list[SecretRecord]:
        """The org's secrets by name, without values."""
        with self._store.session() as s:
            return repo.list_secrets(s, org_id)

    def delete(self, org_id: str, name: str) -> None:
        """Remove a secret. Raises SecretNotFoundError."""
        with self._store.session() as s:
            repo.delete_secret(s, org_id, name)

    def values(self, org_id: str, names: Sequence[str]) -> dict[str, str | None]:
        """The plaintext of each of ``names`` in the org (None: not set). Raises
        SecretsDisabledError when there is no key; a value no key opens is None (logged)."""
        if not names:
            return {}
        cipher = self._cipher()
        with self._store.session() as s:
            stored = repo.secret_ciphertexts(s, org_id, tuple(names))
        out: dict[str, str | None] = {}
        for name in names:
            token = stored.get(name)
            if token is None:
                out[name] = None
                continue
            try:
                out[name] = cipher.decrypt(token.encode()).decode()
            except InvalidToken:
                log.error("secret %s of org %s: no configured key decrypts it", name, org_id)
                out[name] = None
        return out

    def rotate(self) -> int:
        """Re-encrypt every secret with the first key. Returns how many."""
        cipher = self._cipher()
        with self._store.session() as s:
            stored = repo.all_secret_ciphertexts(s)
            for org, name, token in stored:
                fresh = cipher.rotate(token.encode()).decode()
                repo.replace_secret_ciphertext(s, org, name, fresh)
        return len(stored)
