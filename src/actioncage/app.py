"""app.py: create_app(settings=None), the Flask app over the built components, with its
blueprints and error handlers."""

from __future__ import annotations

import logging

from flask import Flask

from actioncage.components import Components, build
from actioncage.settings import Settings
from actioncage.web import dashboard, dashboard_secrets, errors, meta, native
from actioncage.web.frontdoors import botpress, mcp, rasa
from actioncage.web.in_flight import hold_while_responding

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """The WSGI app. Reads the environment only when ``settings`` is None."""
    settings = settings or Settings.from_env()
    components = build(settings)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["actioncage"] = components
    errors.register(app)
    app.register_blueprint(meta.bp)
    app.register_blueprint(native.bp)
    dashboard.register(app, settings)
    app.register_blueprint(dashboard_secrets.bp)
    app.register_blueprint(rasa.bp)
    app.register_blueprint(botpress.bp)
    mcp.register(app, components)
    app.wsgi_app = hold_while_responding(  # type: ignore[method-assign,assignment]
        app.wsgi_app, components.runner.foreground
    )
    return app


def components_of(app: Flask) -> Components:
    """The components an app was built with."""
    components: Components = app.extensions["actioncage"]
    return components
