"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real
`actioncage serve` process, the real sandbox and a real HTTP server on loopback: a day's work
at 1440 px, then every page again at 390 px.

With ACTIONCAGE_SCREENSHOTS set to a directory (`make screenshots`), each page is saved there
as ``<width>-<page>.png``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Request, serve
from tests.served import http, served

CHROMIUM = "/usr/bin/chromium"
KEY = "dashboard-test-key"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDE = {"width": 1440, "height": 900}
NARROW = {"width": 390, "height": 844}

pytestmark = [pytest.mark.browser, pytest.mark.docker]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium through Playwright. Skips locally without it; fails when CI is set."""
    problem = None
    if not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} is missing (run `make browser`)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[test]')"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the browser tests: {problem}")
        pytest.skip(problem)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with served(
        tmp_path,
        ACTIONCAGE_API_KEY=KEY,
        ACTIONCAGE_EGRESS_ALLOWED_CIDRS="127.0.0.0/8",
        ACTIONCAGE_DEFAULT_EGRESS="127.0.0.1",  # the local upstreams
        ACTIONCAGE_MAX_OUTPUT_BYTES="65536",  # a small cap, quickly reached
    ) as base:
        yield base


def _shot(page: Any, name: str) -> None:
    where = os.environ.get("ACTIONCAGE_SCREENSHOTS")
    if where:
        width = page.viewport_size["width"]
        page.screenshot(path=str(Path(where) / f"{width}-{name}.png"), full_page=True)


def _set_code(page: Any, code: str) -> None:
    page.evaluate("code => window.actioncageEditor.setValue(code)", code)


BROKEN = """def execute_action(context):
    name = context["args"]["name"]
    return {"hello": name
"""

FIXED = """def execute_action(context):
    name = context["args"]["name"]
    add_conversation_tag(context, "greeted")
    return {"hello": name, "conversation": context["conversation"]["id"]}
"""

RAISES = """def execute_action(context):
    order = context["args"].get("order", "")
    return {"total": 10 / len(order)}
"""

FETCHES = """import requests

def execute_action(context):
    print("x" * 2000 + "\\n" * 40)
    response = requests.get(context["args"]["url"], timeout=5)
    response.raise_for_status()
    return response.status_code
"""


def _order_route(req: Request) -> tuple[int, dict[str, Any]]:
    return 200, {"path": req.path, "key": req.headers.get("x-api-key"), "lang": req.query}


def _no_sideways_scroll(page: Any) -> None:
    overflow = page.evaluate(
        "document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth"
    )
    assert overflow <= 1, f"{page.url} scrolls sideways by {overflow}px"


def test_a_day_with_the_dashboard_at_1440_then_390_px(browser: Any, server: str) -> None:
    from playwright.sync_api import expect

    h = {"Authorization": f"Bearer {KEY}"}
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    page.set_default_timeout(30_000)
    pages: dict[str, str] = {}
    try:
        # Sign in: the key goes in a form, never the URL. An empty org shows what to do.
        page.goto(server + "/")
        expect(page).to_have_url(server + "/login")
        _shot(page, "login")
        page.fill("#api-key", KEY)
        page.click("#sign-in")
        expect(page.locator("#no-actions")).to_be_visible()
        expect(page.locator("#nav a.active")).to_have_text("Actions")
        assert KEY not in page.url
        _shot(page, "actions-empty")

        # A Python action with a syntax error: the error shows on its line in CodeMirror.
        page.click("#new-python")
        expect(page.locator("#code-editor .cm-content")).to_be_visible()
        page.fill("#name", "greet")
        _set_code(page, BROKEN)
        page.click("#save")
        expect(page.locator("#editor-error")).to_contain_text("line 3")
        expect(page.locator('#code-editor .cm-marked-line[data-marked-line="3"]')).to_be_visible()
        expect(page.locator("#code-editor .cm-lineNumbers .cm-marked-gutter")).to_have_text("3")
        _shot(page, "editor-save-error")

        # Fix it and save: the mark goes, version 1 is stored, the argument is detected.
        _set_code(page, FIXED)
        expect(page.locator("#code-editor .cm-marked-line")).to_have_count(0)
        page.click("#save")
        expect(page.locator("#saved")).to_have_text("Saved version 1.")
        expect(page.locator("h1")).to_contain_text("greet")
        expect(page.locator("h1")).to_contain_text("v1")
        pages["action"] = page.url

        # A conversation that does not exist: refused, with the offer to create it; accepting
        # creates it and runs again. Only the current result shows.
        page.fill('[data-arg="name"]', "Ada")
        page.fill("#test-conversation", "conv-1")
        page.click("#test-run")
        expect(page.locator("#result-status")).to_have_text("refused")
        expect(page.locator("#conversation-offer")).to_be_visible()
        expect(page.locator("#result-link")).to_be_hidden()
        expect(page.locator("#result-meta")).to_have_text("")
        page.click("#create-conversation")
        expect(page.locator("#result-status")).to_have_text("ok", timeout=60_000)
        expect(page.locator("#conversation-offer")).to_be_hidden()
        expect(page.locator("#result-error")).to_be_hidden()
        expect(page.locator("#result-meta")).to_have_text(re.compile(r"^v1 · \d+ ms$"))
        expect(page.locator("#result-output")).to_contain_text('"hello": "Ada"')
        expect(page.locator("#result-effects")).to_contain_text('"tag": "greeted"')
        expect(page.locator("#result-applied")).to_have_text("(not applied)")
        after = http.get(f"{server}/v1/conversations/conv-1", headers=h, timeout=10).json()
        assert after["tags"] == []
        page.check("#apply-effects")
        page.click("#test-run")
        expect(page.locator("#result-applied")).to_have_text("(applied)", timeout=60_000)
        after = http.get(f"{server}/v1/conversations/conv-1", headers=h, timeout=10).json()
        assert after["tags"] == ["greeted"]
        _shot(page, "editor-test-ok")

        # A runtime exception: the traceback, and its line marked in the editor...
        page.goto(server + "/actions/new?type=python")
        page.fill("#name", "total")
        _set_code(page, RAISES)
        page.click("#save")
        expect(page.locator("#saved")).to_be_visible()
        page.click("#test-run")
        expect(page.locator("#result-status")).to_have_text("exception", timeout=60_000)
        expect(page.locator("#result-error")).to_contain_text("ZeroDivisionError")
        expect(page.locator("#result-traceback")).to_contain_text('action.py", line 3')
        expect(page.locator('#code-editor .cm-marked-line[data-marked-line="3"]')).to_be_visible()
        _shot(page, "editor-test-exception")
        # ...and on the run's record, in that version's code.
        page.click("#result-link")
        expect(page.locator("#run-title")).to_contain_text("total")
        expect(page.locator("#run-version")).to_have_text("v1")
        expect(page.locator("#run-error")).to_contain_text("ZeroDivisionError")
        expect(page.locator('#run-code .cm-marked-line[data-marked-line="3"]')).to_be_visible()
        expect(page.locator("#run-traceback")).to_be_visible()
        pages["run-exception"] = page.url
        _shot(page, "run-exception")

        # A refused egress call with its reason, and logs cut at the cap with a marker.
        with serve(_order_route) as (upstream, seen):
            port = int(upstream.rsplit(":", 1)[1])
            page.goto(server + "/actions/new?type=python")
            page.fill("#name", "fetch")
            _set_code(page, FETCHES)
            page.fill("#policy-egress", f"127.0.0.1:{port}")
            page.click("#save")
            expect(page.locator("#saved")).to_be_visible()
            expect(page.locator("#policy-egress")).to_have_value(f"127.0.0.1:{port}")
            page.fill('[data-arg="url"]', f"http://127.0.0.1:{port + 1}/x")
            page.click("#test-run")
            expect(page.locator("#result-status")).to_have_text("exception", timeout=60_000)
            expect(page.locator("#result-error")).to_contain_text("the egress proxy refused")
            page.click("#result-link")
            refused = page.locator('#run-egress tr[data-allowed="no"]')
            expect(refused).to_contain_text(f"127.0.0.1:{port + 1}")
            expect(refused).to_contain_text("not on the egress allowlist")
            pages["run-refused"] = page.url
            _shot(page, "run-refused")

            # An egress beyond the org's ceiling is refused on save, on the policy's field.
            page.goto(pages["action"])
            page.fill("#policy-egress", "api.example.com")
            page.click("#save")
            expect(page.locator("#editor-error")).to_contain_text("egress")

            # An API action against a real local server, tested from the panel.
            page.goto(server + "/")
            page.click("#new-api")
            page.fill("#name", "getOrder")
            page.fill("#base-url", upstream)
            page.fill("#path", "/orders/$orderId")
            page.select_option("#method", "GET")
            page.fill("#headers", '{"X-Api-Key": "k-secret"}')
            page.fill("#query", '{"lang": "$lang"}')
            page.click("#save")
            expect(page.locator("#saved")).to_have_text("Saved version 1.")
            expect(page.locator("#headers")).to_have_value('{\n  "X-Api-Key": "***"\n}')
            assert "k-secret" not in page.content()
            page.fill('[data-arg="orderId"]', "A 1/2")
            page.fill('[data-arg="lang"]', "en")
            page.click("#test-run")
            expect(page.locator("#result-status")).to_have_text("ok", timeout=30_000)
            expect(page.locator("#result-output")).to_contain_text('"path": "/orders/A%201%2F2"')
            expect(page.locator("#result-output")).to_contain_text('"key": "k-secret"')
            expect(page.locator("#result-logs")).to_contain_text("-> 200")
            assert len(seen) == 1

        # Logs past the output cap: the run page says so and the cut is marked.
        flood = "def execute_action(context):\n    while True:\n        print('y' * 1000)\n"
        page.goto(server + "/actions/new?type=python")
        page.fill("#name", "flood")
        _set_code(page, flood)
        page.click("#save")
        expect(page.locator("#saved")).to_be_visible()
        page.click("#test-run")
        expect(page.locator("#result-status")).to_have_text("output_limit", timeout=60_000)
        page.click("#result-link")
        expect(page.locator("#logs-cut")).to_be_visible()
        expect(page.locator("#run-logs")).to_contain_text("[actioncage: logs cut here")

        # Runs across actions, by name, filtered by action and status.
        page.click('#nav a[data-nav="runs"]')
        expect(page.locator("#runs tbody tr").first).to_be_visible()
        assert page.locator("#runs tbody tr").count() >= 6
        expect(page.locator("#runs")).to_contain_text("getOrder")
        page.select_option("#filter-action", label="greet")
        page.select_option("#filter-status", "ok")
        page.click("#apply-filters")
        expect(page.locator("#runs tbody tr")).to_have_count(2)
        page.click('[data-filter="exception"]')
        expect(page.locator("#no-runs")).to_be_visible()
        page.goto(server + "/runs")
        pages["runs"] = page.url
        _shot(page, "runs")

        # Conversations: the list and one, with its tag and the runs in it.
        page.click('#nav a[data-nav="conversations"]')
        page.click('[data-conversation="conv-1"] a')
        expect(page.locator("#tags")).to_contain_text("greeted")
        expect(page.locator("#conversation-runs")).to_contain_text("greet v1")
        pages["conversation"] = page.url
        _shot(page, "conversation")

        # Keys: a new one is shown once; revoked, the API refuses it.
        page.click('#nav a[data-nav="keys"]')
        page.click("#create-key")
        secret = page.locator("#new-key-secret").inner_text().strip()
        assert http.get(f"{server}/v1/actions", headers=_bearer(secret), timeout=10).ok
        page.locator(".revoke-form button").last.click()
        expect(page.locator("#keys-notice")).to_contain_text("revoked")
        expect(page.locator('#keys tr[data-state="revoked"]')).to_have_count(1)
        refused_key = http.get(f"{server}/v1/actions", headers=_bearer(secret), timeout=10)
        assert refused_key.status_code == 401
        _shot(page, "keys")

        # The org's policy, and a page that does not exist.
        page.click('#nav a[data-nav="policy"]')
        expect(page.locator("#policy-egress")).to_contain_text("127.0.0.1")
        _shot(page, "policy")
        page.goto(server + "/runs/run_nope")
        expect(page.locator("#error-page")).to_have_attribute("data-status", "404")
        expect(page.locator("#error-message")).to_contain_text("run_nope")
        page.goto(server + "/no/such/page")
        expect(page.locator("#error-page h1")).to_have_text("Not found")
        _shot(page, "not-found")

        # Every page again at 390 px: what each must show is there, nothing scrolls sideways.
        page.set_viewport_size(NARROW)
        narrow = [
            ("actions", server + "/", "#actions"),
            ("action", pages["action"], "#code-editor .cm-content"),
            ("run-exception", pages["run-exception"], '.cm-marked-line[data-marked-line="3"]'),
            ("run-refused", pages["run-refused"], '#run-egress tr[data-allowed="no"]'),
            ("runs", pages["runs"], "#runs"),
            ("conversations", server + "/conversations", "#conversations"),
            ("conversation", pages["conversation"], "#tags"),
            ("keys", server + "/keys", '#keys tr[data-state="revoked"]'),
            ("policy", server + "/policy", "#policy-limits"),
            ("not-found", server + "/runs/run_nope", "#error-page"),
        ]
        for name, url, must_show in narrow:
            page.goto(url)
            expect(page.locator(must_show).first).to_be_visible()
            expect(page.locator("#nav")).to_be_visible()
            _no_sideways_scroll(page)
            _shot(page, name)

        # Signing out ends the session.
        page.click("#sign-out")
        expect(page).to_have_url(server + "/login")
        page.goto(server + "/")
        expect(page).to_have_url(server + "/login")
    finally:
        context.close()


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
