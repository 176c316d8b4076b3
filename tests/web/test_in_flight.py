"""A POST request holds background engine work back until its response is written."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from werkzeug.test import EnvironBuilder

from tests.conftest import wait_for


def _call(app: Flask, **request: Any) -> tuple[Any, list[str]]:
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    environ = EnvironBuilder(**request).get_environ()
    return app.wsgi_app(environ, start_response), statuses


def test_a_post_is_in_flight_until_its_response_is_written(
    app: Flask, auth_headers: dict[str, str]
) -> None:
    foreground = app.extensions["actioncage"].runner.foreground
    body, statuses = _call(
        app, method="POST", path="/v1/actions", json={"name": ""}, headers=auth_headers
    )
    quiet: list[bool] = []
    waiter = threading.Thread(target=lambda: quiet.append(foreground.wait_quiet()))
    waiter.start()
    assert wait_for(lambda: foreground.deferred == 1, timeout=30)
    # The handler has returned; background work still waits for the response to be written.
    assert statuses[0].startswith("422") and foreground.active == 1 and not quiet
    assert b"error" in b"".join(body)
    waiter.join(timeout=10)
    assert quiet == [True] and foreground.active == 0
    body.close()  # what a server does next changes nothing
    assert foreground.active == 0


def test_a_post_whose_response_is_closed_unread_is_released(
    app: Flask, auth_headers: dict[str, str]
) -> None:
    foreground = app.extensions["actioncage"].runner.foreground
    body, _ = _call(app, method="POST", path="/v1/actions", json={}, headers=auth_headers)
    assert foreground.active == 1
    body.close()
    assert foreground.active == 0


def test_reads_and_failing_handlers_hold_nothing(app: Flask) -> None:
    foreground = app.extensions["actioncage"].runner.foreground
    body, statuses = _call(app, method="GET", path="/health")
    assert foreground.active == 0
    body.close()
    body, statuses = _call(app, method="POST", path="/v1/actions", data=b"{not json")
    b"".join(body)
    body.close()
    assert statuses[0][:3] in ("400", "401") and foreground.active == 0
