"""The dashboard at ``/``: sign in with an API key, list, create and edit actions, a test
panel, and run history from the audit trail.

The session cookie is Flask's signed cookie (``ACTIONCAGE_SECRET_KEY``, else a key made once
and shared through the database) and holds the key's id
and a CSRF token, never the key itself. Every POST/PATCH must carry the token (a form field or
the ``X-CSRF-Token`` header). Pages send a strict Content-Security-Policy: scripts come only
from our static folder, and page data reaches them as JSON, never inlined into code.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import Forbidden
from werkzeug.wrappers import Response as BaseResponse

from actioncage.components import Components
from actioncage.errors import AuthError, ValidationFailedError
from actioncage.models import Action, ActionType, ErrorType, FrontDoor, RunResult
from actioncage.runs.service import ConversationRef, RunRequest
from actioncage.settings import Settings
from actioncage.store import repo
from actioncage.store.secrets import SESSION_KEY, shared_secret
from actioncage.web import calls, native, wire
from actioncage.web.auth import current_key

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard-static",
)

_OPEN_ENDPOINTS = {"dashboard.login", "dashboard.static"}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Python actions without a schema: guess the arguments the code reads.
_ARG_RE = re.compile(r"""context\[\s*["']args["']\s*\]\s*(?:\[\s*|\.get\(\s*)["'](\w+)["']""")
RUN_FILTERS = ("ok", "error", *(str(t) for t in ErrorType))


def register(app: Flask, settings: Settings) -> None:
    """Mount the dashboard and configure the signed session cookie (``app.extensions``
    must hold the components already)."""
    if settings.secret_key:
        app.secret_key = settings.secret_key
    else:
        # Made once and kept in the database: every process accepts every other's sessions,
        # and they survive restarts.
        with app.extensions["actioncage"].store.session() as s:
            app.secret_key = shared_secret(s, SESSION_KEY)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    app.register_blueprint(bp)


def _components() -> Components:
    return calls.components()


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


@bp.app_template_filter("pretty")
def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@bp.before_request
def _guard() -> BaseResponse | None:
    if request.method not in _SAFE_METHODS:
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf") or ""
        if not hmac.compare_digest(sent, session.get("csrf") or "x"):
            raise Forbidden("missing or wrong CSRF token; reload the page")
    if request.endpoint in _OPEN_ENDPOINTS:
        return None
    key = None
    key_id = session.get("key_id")
    if isinstance(key_id, str):
        with _components().store.session() as s:
            key = repo.find_key_by_id(s, key_id)
    if key is None:
        if request.method in _SAFE_METHODS:
            return redirect(url_for("dashboard.login"))
        raise AuthError("signed out: sign in again")
    g.api_key = key
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# --- sign in and out -----------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int]:
    error = None
    if request.method == "POST":
        secret = request.form.get("api_key", "").strip()
        with _components().store.session() as s:
            key = repo.find_key(s, secret) if secret else None
        if key is not None:
            session.clear()
            session["key_id"] = key.id
            session["csrf"] = secrets.token_urlsafe(32)  # a fresh token per signed-in session
            return redirect(url_for("dashboard.index"))
        error = "That API key matches nothing."
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("dashboard.login"))


# --- pages ---------------------------------------------------------------------------------


@bp.get("/")
def index() -> str:
    key = current_key()
    with _components().store.session() as s:
        actions = repo.list_actions(s, key.org_id)
    return render_template("actions.html", actions=actions, org_id=key.org_id)


@bp.get("/actions/new")
def new_action() -> str:
    type_ = ActionType.API if request.args.get("type") == "api" else ActionType.PYTHON
    return render_template("action.html", action=None, data=_editor_data(None, type_))


@bp.get("/actions/<action_id>")
def edit_action(action_id: str) -> str:
    key = current_key()
    with _components().store.session() as s:
        action = repo.get_action(s, key.org_id, action_id)
    return render_template(
        "action.html",
        action=action,
        data=_editor_data(action, action.type),
        saved=request.args.get("saved"),
    )


@bp.get("/actions/<action_id>/runs")
def action_runs(action_id: str) -> str:
    key = current_key()
    wanted = request.args.get("status") or None
    if wanted is not None and wanted not in RUN_FILTERS:
        raise ValidationFailedError(f"status must be one of {', '.join(RUN_FILTERS)}", "status")
    status = wanted if wanted in ("ok", "error") else None
    error_type = wanted if wanted not in (None, "ok", "error") else None
    with _components().store.session() as s:
        action = repo.get_action(s, key.org_id, action_id)
        runs = repo.list_runs(s, key.org_id, action.id, status, limit=100, error_type=error_type)
    return render_template(
        "runs.html", action=action, runs=runs, wanted=wanted, filters=RUN_FILTERS
    )


@bp.get("/runs/<run_id>")
def run_page(run_id: str) -> str:
    key = current_key()
    with _components().store.session() as s:
        run = repo.get_run(s, key.org_id, run_id)
    return render_template("run.html", run=wire.run_out(run))


# --- JSON endpoints the pages' script calls --------------------------------------------------


# Saving goes through the API's own views: the same rules and answers, only the auth
# (session cookie plus CSRF token) differs.


@bp.post("/ui/actions")
def ui_create() -> tuple[Response, int]:
    return native.create_action()


@bp.patch("/ui/actions/<action_id>")
def ui_update(action_id: str) -> Response:
    return native.update_action(action_id)


@bp.post("/ui/actions/<action_id>/test")
def ui_test(action_id: str) -> Response:
    """One test run: a dry run (effects shown, not applied) unless ``applyEffects``."""
    service = _components().service
    body = wire.json_body()
    args, conversation_id = wire.execute_request(body, "DashboardTestRequest")
    apply = bool(body.get("applyEffects", False))
    run = service.run(
        RunRequest(
            calls.caller(FrontDoor.DASHBOARD),
            action_id,
            args,
            None if conversation_id is None else ConversationRef(conversation_id),
            dry_run=not apply,
        )
    )
    assert isinstance(run, RunResult)  # no waitMs: never pending
    return jsonify(wire.run_out(run))


def _editor_data(action: Action | None, type_: ActionType) -> dict[str, Any]:
    """What the editor and test panel need, as JSON for the page's script."""
    data: dict[str, Any] = {"type": str(type_), "id": None, "args": []}
    if action is None:
        return data
    out = wire.action_out(action)
    data.update(id=action.id, action=out, args=_test_args(action))
    if out["endpoint"] is not None:
        parts = urlsplit(out["endpoint"]["url"])
        data["baseUrl"] = f"{parts.scheme}://{parts.netloc}"
        data["path"] = out["endpoint"]["url"][len(data["baseUrl"]) :]
    return data


def _test_args(action: Action) -> list[dict[str, Any]]:
    """One test-panel input per argument: the schema's properties, or names the code reads."""
    props = (action.parameters or {}).get("properties")
    if isinstance(props, dict) and props:
        required = set((action.parameters or {}).get("required") or [])
        return [
            {
                "name": name,
                "type": spec.get("type", "string") if isinstance(spec, dict) else "string",
                "required": name in required,
            }
            for name, spec in props.items()
        ]
    names = dict.fromkeys(_ARG_RE.findall(action.code))
    return [{"name": n, "type": "any", "required": False} for n in names]
