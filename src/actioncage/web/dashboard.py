"""web/: the dashboard at ``/``: sign in with an API key; actions (a CodeMirror editor, the
action's policy within the org's ceiling, a test panel), runs across actions, one run's record,
conversations, keys and the org's policy; HTML error pages.

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
from datetime import timedelta
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
from actioncage.errors import AuthError, KeyNotFoundError, ValidationFailedError
from actioncage.models import Action, ActionType, ErrorType, FrontDoor, Isolation, RunResult
from actioncage.runs.executor import LOGS_CUT_MARKER
from actioncage.runs.service import ConversationRef, RunRequest
from actioncage.sandbox.limits import policy_description
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
# The innermost frame of the script in a run's traceback.
_FRAME_RE = re.compile(r'File "action\.py", line (\d+)')
RUN_FILTERS = ("ok", "error", *(str(t) for t in ErrorType))
# The runs page's time filter: label -> how far back.
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}

# The navigation, in order: (label, endpoint).
NAV: list[tuple[str, str]] = [
    ("Actions", "dashboard.index"),
    ("Runs", "dashboard.runs"),
    ("Conversations", "dashboard.conversations"),
    ("Secrets", "dashboard_secrets.secrets_page"),
    ("Keys", "dashboard.keys"),
    ("Policy", "dashboard.policy"),
]
# Paths whose errors stay JSON whatever the client accepts: APIs, front doors, the pages'
# JSON endpoints.
_API_PREFIXES = ("/v1/", "/ui/", "/webhook", "/health", "/metrics", "/openapi.json", "/mcp")
# Plain form posts: a browser gets an error page from these too.
_FORM_PATHS = ("/login", "/logout", "/keys", "/secrets")
# Styles: our sheet, plus the code editor's own style elements, which carry this response's
# nonce (CodeMirror's cspNonce); scripts only from our static folder.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; img-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def register(app: Flask, settings: Settings) -> None:
    """Mount the dashboard and configure the signed session cookie (``app.extensions``
    must hold the components already). Browsers get HTML error pages."""
    if settings.secret_key:
        app.secret_key = settings.secret_key
    else:
        # Made once and kept in the database: every process accepts every other's sessions,
        # and they survive restarts.
        with app.extensions["actioncage"].store.session() as s:
            app.secret_key = shared_secret(s, SESSION_KEY)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    app.extensions["actioncage.error_page"] = error_page
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
    return {"csrf_token": csrf_token, "style_nonce": style_nonce, "nav": NAV}


@bp.app_template_filter("pretty")
def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@bp.app_template_filter("when")
def _when(value: Any) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@bp.before_request
def _guard() -> BaseResponse | None:
    if request.method not in _SAFE_METHODS:
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf") or ""
        if not hmac.compare_digest(sent, session.get("csrf") or "x"):
            raise Forbidden("missing or wrong CSRF token; reload the page")
    if request.endpoint in _OPEN_ENDPOINTS:
        return None
    key = _session_key()
    if key is None:
        if request.method in _SAFE_METHODS:
            return redirect(url_for("dashboard.login"))
        raise AuthError("signed out: sign in again")
    g.api_key = key
    return None


def _session_key() -> Any:
    key_id = session.get("key_id")
    if not isinstance(key_id, str):
        return None
    with _components().store.session() as s:
        return repo.find_key_by_id(s, key_id)


@bp.after_request
def _headers(response: Response) -> Response:
    return _secure(response)


def style_nonce() -> str:
    """This response's nonce for the code editor's style elements."""
    if "style_nonce" not in g:
        g.style_nonce = secrets.token_urlsafe(16)
    nonce: str = g.style_nonce
    return nonce


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _CSP.format(nonce=style_nonce())
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# --- HTML error pages ----------------------------------------------------------------------

_TITLES = {
    400: "Bad request",
    401: "Signed out",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Not valid",
    500: "Something went wrong",
}


def error_page(status: int, message: str) -> Response | None:
    """An HTML page for an error a browser asked a page for, or None (the caller answers
    JSON): API paths, non-GET JSON calls and clients preferring JSON get JSON."""
    if request.path.startswith(_API_PREFIXES) or request.path == "/actions":
        return None  # the APIs, and the Rasa action list at /actions
    if request.method not in _SAFE_METHODS and not request.path.startswith(_FORM_PATHS):
        return None  # the pages' JSON calls
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) != "text/html":
        return None
    if "api_key" not in g:
        try:
            key = _session_key()
        except Exception:  # noqa: BLE001 - an error page must render even with no database
            key = None
        if key is not None:
            g.api_key = key
    shown = message if status < 500 else "The error was logged; nothing you sent is shown here."
    html = render_template(
        "error.html", status=status, title=_TITLES.get(status, "Error"), message=shown
    )
    return _secure(Response(html, status=status, mimetype="text/html"))


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
        error = "That API key matches nothing (or it was revoked)."
    return render_template("login.html", error=error), 401 if error else 200


@bp.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("dashboard.login"))


# --- actions -------------------------------------------------------------------------------


@bp.get("/")
def index() -> str:
    key = current_key()
    with _components().store.session() as s:
        actions = repo.list_actions(s, key.org_id)
        last = {a.id: repo.list_runs(s, key.org_id, a.id, limit=1) for a in actions}
    return render_template(
        "actions.html",
        actions=actions,
        last={k: v[0] if v else None for k, v in last.items()},
        section="dashboard.index",
    )


@bp.get("/actions/new")
def new_action() -> str:
    type_ = ActionType.API if request.args.get("type") == "api" else ActionType.PYTHON
    return render_template(
        "action.html",
        action=None,
        data=_editor_data(None, type_),
        ceiling=_ceiling(),
        section="dashboard.index",
    )


@bp.get("/actions/<action_id>")
def edit_action(action_id: str) -> str:
    key = current_key()
    with _components().store.session() as s:
        action = repo.get_action(s, key.org_id, action_id)
    return render_template(
        "action.html",
        action=action,
        data=_editor_data(action, action.type),
        ceiling=_ceiling(),
        saved=request.args.get("saved"),
        section="dashboard.index",
    )


def _ceiling() -> dict[str, Any]:
    """The org's ceilings an action's policy must fit: maxima and the egress ceiling."""
    c, key = _components(), current_key()
    with c.store.session() as s:
        org = repo.find_org_policy(s, key.org_id)
    description = policy_description(c.settings, org)
    return {
        "maxima": description["maxima"],
        "defaults": {
            "timeout_ms": c.settings.default_timeout_ms,
            "memory_mb": c.settings.default_memory_mb,
            "cpus": c.settings.default_cpus,
        },
        "egress": description["egress_ceiling"],
    }


# --- runs ----------------------------------------------------------------------------------


@bp.get("/runs")
def runs() -> str:
    """Runs across the org's actions, filtered by action, status and time."""
    key = current_key()
    wanted = request.args.get("status") or None
    if wanted is not None and wanted not in RUN_FILTERS:
        raise ValidationFailedError(f"status must be one of {', '.join(RUN_FILTERS)}", "status")
    since_label = request.args.get("since") or None
    if since_label is not None and since_label not in SINCE:
        raise ValidationFailedError(f"since must be one of {', '.join(SINCE)}", "since")
    action_ref = request.args.get("action") or None
    status = wanted if wanted in ("ok", "error") else None
    error_type = wanted if wanted not in (None, "ok", "error") else None
    since = None if since_label is None else repo.now() - SINCE[since_label]
    with _components().store.session() as s:
        actions = repo.list_actions(s, key.org_id)
        action = None if action_ref is None else repo.get_action(s, key.org_id, action_ref)
        found = repo.list_runs(
            s,
            key.org_id,
            None if action is None else action.id,
            status,
            limit=100,
            error_type=error_type,
            since=since,
        )
        names = _names(s, key.org_id, found, actions)
    return render_template(
        "runs.html",
        runs=found,
        names=names,
        actions=actions,
        action=action,
        wanted=wanted,
        since=since_label,
        filters=RUN_FILTERS,
        since_choices=list(SINCE),
        section="dashboard.runs",
    )


@bp.get("/actions/<action_id>/runs")
def action_runs(action_id: str) -> BaseResponse:
    """The action's runs: the runs page, filtered to it."""
    args: dict[str, Any] = {k: v for k, v in request.args.items() if k in ("status", "since")}
    return redirect(url_for("dashboard.runs", action=action_id, **args))


def _names(s: Any, org_id: str, runs: list[RunResult], actions: list[Action]) -> dict[str, str]:
    """Action id -> name for these runs (a deleted action's name from its saved versions)."""
    names = {a.id: a.name for a in actions}
    for run in runs:
        if run.action_id not in names:
            saved = repo.find_action_version(s, org_id, run.action_id, run.action_version)
            names[run.action_id] = saved.name if saved else run.action_id
    return names


@bp.get("/runs/<run_id>")
def run_page(run_id: str) -> str:
    key = current_key()
    with _components().store.session() as s:
        run = repo.get_run(s, key.org_id, run_id)
        saved = repo.find_action_version(s, key.org_id, run.action_id, run.action_version)
        live = repo.find_action(s, key.org_id, run.action_id)
    out = wire.run_out(run)
    tb = run.error.traceback if run.error else None
    frames = _FRAME_RE.findall(tb or "")
    failing_line = int(frames[-1]) if frames else None
    code = saved.code if saved is not None and saved.type is ActionType.PYTHON else None
    data = {"code": code, "failingLine": failing_line}
    return render_template(
        "run.html",
        run=out,
        record=run,
        action=saved,
        live=live,
        data=data,
        logs_cut=LOGS_CUT_MARKER in run.logs,
        section="dashboard.runs",
    )


# --- conversations -------------------------------------------------------------------------


@bp.get("/conversations")
def conversations() -> str:
    key = current_key()
    with _components().store.session() as s:
        found = repo.list_conversations(s, key.org_id, limit=200)
    return render_template(
        "conversations.html", conversations=found, section="dashboard.conversations"
    )


@bp.get("/conversations/<conversation_id>")
def conversation_page(conversation_id: str) -> str:
    key = current_key()
    with _components().store.session() as s:
        conversation = repo.get_conversation(s, key.org_id, conversation_id)
        in_it = repo.list_runs(s, key.org_id, limit=50, conversation_id=conversation.id)
        names = _names(s, key.org_id, in_it, repo.list_actions(s, key.org_id))
    return render_template(
        "conversation.html",
        c=conversation,
        runs=in_it,
        names=names,
        section="dashboard.conversations",
    )


# --- keys and policy -----------------------------------------------------------------------


@bp.get("/keys")
def keys() -> str:
    return _keys_page()


def _keys_page(secret: str | None = None, notice: str | None = None) -> str:
    key = current_key()
    with _components().store.session() as s:
        found = repo.list_keys(s, key.org_id)
    return render_template(
        "keys.html",
        keys=found,
        current=key.id,
        secret=secret,
        notice=notice,
        section="dashboard.keys",
    )


@bp.post("/keys")
def create_key() -> str:
    """A new key for the org; its secret is shown on this page once."""
    key = current_key()
    with _components().store.session() as s:
        made, secret = repo.create_key(s, key.org_id)
    return _keys_page(secret=secret, notice=f"Key {made.id} created.")


@bp.post("/keys/<key_id>/revoke")
def revoke_key(key_id: str) -> BaseResponse | str:
    """Revoke one of the org's keys: every process stops accepting it (the key cache hears
    of it through the shared revocations). Revoking the session's own key signs out."""
    c, key = _components(), current_key()
    with c.store.session() as s:
        if not any(k.id == key_id for k in repo.list_keys(s, key.org_id)):
            raise KeyNotFoundError(f"no API key with id {key_id!r} in this org")
        revoked = repo.revoke_key(s, key_id)
    c.shared.revocations.revoked(revoked.id)  # every other process, within a second
    c.keys.start_afresh()  # this one, at once
    if revoked.id == key.id:
        session.clear()
        return redirect(url_for("dashboard.login"))
    return _keys_page(notice=f"Key {revoked.id} revoked.")


@bp.get("/policy")
def policy() -> str:
    c, key = _components(), current_key()
    with c.store.session() as s:
        org = repo.find_org_policy(s, key.org_id)
    tiers = [c.runner.tier(isolation) for isolation in Isolation]
    digest = c.runner.image_digest() if c.dispatcher is None else c.dispatcher.image_digest()
    out = wire.policy_out(policy_description(c.settings, org), org, digest or "unknown", tiers)
    return render_template("policy.html", policy=out, section="dashboard.policy")


# --- JSON endpoints the pages' script calls --------------------------------------------------


# Saving goes through the API's own views: the same rules and answers, only the auth
# (session cookie plus CSRF token) differs.


@bp.post("/ui/actions")
def ui_create() -> tuple[Response, int]:
    return native.create_action()


@bp.patch("/ui/actions/<action_id>")
def ui_update(action_id: str) -> Response:
    return native.update_action(action_id)


@bp.post("/ui/conversations")
def ui_create_conversation() -> tuple[Response, int]:
    """The test panel's "create this conversation"."""
    return native.create_conversation()


@bp.post("/ui/actions/<action_id>/test")
def ui_test(action_id: str) -> Response:
    """One test run: a dry run (effects shown, not applied) unless ``applyEffects``."""
    c = _components()
    body = wire.json_body()
    args, conversation_id = wire.execute_request(body, "DashboardTestRequest")
    apply = bool(body.get("applyEffects", False))
    run = c.service.run(
        RunRequest(
            calls.caller(FrontDoor.DASHBOARD),
            action_id,
            args,
            None if conversation_id is None else ConversationRef(conversation_id),
            dry_run=not apply,
        )
    )
    assert isinstance(run, RunResult)  # no waitMs: never pending
    return jsonify(wire.run_out(run, logs_tail_bytes=c.settings.response_logs_bytes))


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
