"""The bearer-key check."""

from __future__ import annotations

from flask import current_app, g, request

from actioncage.errors import AuthError
from actioncage.models import ApiKey
from actioncage.store import repo


def key_from_request() -> str | None:
    """The key from ``Authorization: Bearer``, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(secret: str | None) -> ApiKey:
    """The key whose secret this is, stored on ``g.api_key``. Raises AuthError."""
    if not secret:
        raise AuthError("missing API key: send Authorization: Bearer <key>")
    with current_app.extensions["actioncage"].store.session() as s:
        key = repo.find_key(s, secret)
    if key is None:
        raise AuthError("unknown API key")
    g.api_key = key
    return key


def require_key() -> None:
    """A ``before_request`` hook: every route of the blueprint needs a key."""
    authenticate(key_from_request())


def current_key() -> ApiKey:
    key: ApiKey = g.api_key
    return key
