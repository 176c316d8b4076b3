"""/health, /metrics and /openapi.json."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

import actioncage
from actioncage.metrics import CONTENT_TYPE
from actioncage.web import calls, openapi

bp = Blueprint("meta", __name__)


@bp.get("/health")
def health() -> tuple[Response, int]:
    runner = calls.components().runner
    engine = runner.ping()
    body = {
        "status": "ok" if engine else "degraded",
        "engine": engine,
        "version": actioncage.__version__,
    }
    return jsonify(body), 200 if engine else 503


@bp.get("/metrics")
def metrics() -> Response:
    components = calls.components()
    return Response(components.metrics.render(), mimetype=None, content_type=CONTENT_TYPE)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(openapi.document())
