"""The key cache: a key that authenticated is trusted for ``key_cache_s``; misses always ask
the database, so a new key works at once and an unknown one never does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import delete

from actioncage import create_app
from actioncage.store import repo
from actioncage.store.schema import ApiKeyRow
from tests.conftest import make_settings, wait_for


@pytest.fixture
def cached_app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Flask]:
    app = create_app(make_settings(tmp_path, key_cache_s=getattr(request, "param", 60.0)))
    yield app
    app.extensions["actioncage"].close()


def _new_key(app: Flask) -> str:
    with app.extensions["actioncage"].store.session() as s:
        _, secret = repo.create_key(s, "org-c")
    return secret


def _drop_keys(app: Flask) -> None:
    with app.extensions["actioncage"].store.session() as s:
        s.execute(delete(ApiKeyRow).where(ApiKeyRow.org_id == "org-c"))


def _status(app: Flask, secret: str) -> int:
    resp = app.test_client().get("/v1/actions", headers={"Authorization": f"Bearer {secret}"})
    return resp.status_code


def test_a_key_that_authenticated_is_trusted_for_the_ttl(cached_app: Flask) -> None:
    secret = _new_key(cached_app)
    assert _status(cached_app, secret) == 200
    _drop_keys(cached_app)
    assert _status(cached_app, secret) == 200  # from the cache, no database lookup


@pytest.mark.parametrize("cached_app", [0.0], indirect=True)
def test_with_the_cache_off_every_request_asks_the_database(cached_app: Flask) -> None:
    secret = _new_key(cached_app)
    assert _status(cached_app, secret) == 200
    _drop_keys(cached_app)
    assert _status(cached_app, secret) == 401


@pytest.mark.parametrize("cached_app", [0.2], indirect=True)
def test_a_cached_key_is_asked_for_again_after_the_ttl(cached_app: Flask) -> None:
    secret = _new_key(cached_app)
    assert _status(cached_app, secret) == 200
    _drop_keys(cached_app)
    cache = cached_app.extensions["actioncage"].keys
    # Wait for the entry to expire (a condition, checked without a request).
    assert wait_for(lambda: cache.find(secret) is None, timeout=10)
    assert _status(cached_app, secret) == 401


def test_unknown_keys_are_not_cached_so_a_new_key_works_at_once(cached_app: Flask) -> None:
    assert _status(cached_app, "not-yet-known") == 401
    with cached_app.extensions["actioncage"].store.session() as s:
        repo.create_key(s, "org-c", secret="not-yet-known")
    assert _status(cached_app, "not-yet-known") == 200
    assert _status(cached_app, "never-a-key") == 401
