"""web/: /health, /metrics and /openapi.json."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

import actioncage
from actioncage.metrics import CONTENT_TYPE
from actioncage.web import calls, openapi, wire

bp = Blueprint("meta", __name__)


@bp.get("/health")
def health() -> tuple[Response, int]:
    components = calls.components()
    if components.dispatcher is not None:
        # Sandboxes run on executor workers: healthy while the broker and a worker answer.
        workers = components.dispatcher.live_workers()
        broker = components.dispatcher.broker_connected
        up = broker and bool(workers)
        now = time.time()
        return jsonify(
            {
                "status": "ok" if up else "degraded",
                "engine": up,
                "version": actioncage.__version__,
                "broker": broker,
                "workers": [wire.worker_out(w, now) for w in workers],
            }
        ), 200 if up else 503
    runner = components.runner
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
