"""web/: the dashboard's secrets page at /secrets: the org's secrets by name and the actions
that use them, a form to set one (the value is write-only) and a button to delete one. A
page of its own (template secrets.html) beside the dashboard, sharing its sign-in, CSRF check
and security headers."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from actioncage.errors import SecretsDisabledError, ValidationFailedError
from actioncage.web import calls, dashboard
from actioncage.web.auth import current_key
from actioncage.web.native import secret_users

bp = Blueprint("dashboard_secrets", __name__, template_folder="templates")
# The dashboard's own sign-in and CSRF check, and its security headers (CSP).
bp.before_request(dashboard._guard)
bp.after_request(dashboard._headers)


def _page(error: str | None = None, status: int = 200) -> tuple[str, int]:
    c, key = calls.components(), current_key()
    used_by = secret_users(c, key.org_id)
    records = c.vault.list(key.org_id)
    rows = [(r, used_by.get(r.name, [])) for r in records]
    html = render_template(
        "secrets.html",
        rows=rows,
        enabled=c.vault.enabled,
        error=error,
        saved=request.args.get("saved"),
        section="dashboard_secrets.secrets_page",
    )
    return html, status


@bp.get("/secrets")
def secrets_page() -> tuple[str, int]:
    return _page()


@bp.post("/secrets")
def set_secret() -> BaseResponse | tuple[str, int]:
    c, key = calls.components(), current_key()
    name = request.form.get("name", "")
    try:
        c.vault.put(key.org_id, name, request.form.get("value", ""))
    except (ValidationFailedError, SecretsDisabledError) as exc:
        return _page(str(exc), 422 if isinstance(exc, ValidationFailedError) else 409)
    return redirect(url_for("dashboard_secrets.secrets_page", saved=name), 303)


@bp.post("/secrets/<name>/delete")
def delete_secret(name: str) -> BaseResponse:
    c, key = calls.components(), current_key()
    c.vault.delete(key.org_id, name)
    return redirect(url_for("dashboard_secrets.secrets_page"), 303)
