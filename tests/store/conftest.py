"""Store tests run on both databases, whatever ACTIONCAGE_TEST_DB says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from actioncage import create_app
from actioncage.store import Store
from tests.conftest import database_url, make_settings
from tests.servers import postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: an SQLite file, or a fresh database on the session's PostgreSQL."""
    if request.param == "postgresql":
        return postgres_url(tmp_path, "store")
    return database_url(tmp_path, "store", backend="sqlite")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A Store on ``db_url``, upgraded to the newest revision."""
    store = Store(db_url)
    store.upgrade()
    yield store
    store.dispose()


@pytest.fixture
def store_app(db_url: str, tmp_path: Path) -> Iterator[Flask]:
    """The app on ``db_url``."""
    app = create_app(make_settings(tmp_path, database_url=db_url))
    yield app
    app.extensions["actioncage"].close()


@pytest.fixture
def store_client(store_app: Flask) -> FlaskClient:
    return store_app.test_client()
