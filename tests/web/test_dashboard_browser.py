"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real
`actioncage serve` process, the real sandbox and a real HTTP server on loopback."""

from __future__ import annotations

import os
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

pytestmark = [pytest.mark.browser, pytest.mark.docker]


@pytest.fixture(scope="session")
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
        ACTIONCAGE_DEFAULT_EGRESS="127.0.0.1",  # the API action's local upstream
    ) as base:
        yield base


BROKEN = """def execute_action(context):
    name = context["args"]["name"]
    return {"hello": name
"""

FIXED = """def execute_action(context):
    name = context["args"]["name"]
    add_conversation_tag(context, "greeted")
    return {"hello": name, "conversation": context["conversation"]["id"]}
"""


def _order_route(req: Request) -> tuple[int, dict[str, Any]]:
    return 200, {"path": req.path, "key": req.headers.get("x-api-key"), "lang": req.query}


def test_sign_in_edit_test_and_see_history(browser: Any, server: str) -> None:
    from playwright.sync_api import expect

    h = {"Authorization": f"Bearer {KEY}"}
    conv = http.post(f"{server}/v1/conversations", headers=h, json={"id": "conv-1"}, timeout=10)
    assert conv.status_code == 201

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        # Sign in: the key goes in a form, never the URL.
        page.goto(server + "/")
        expect(page).to_have_url(server + "/login")
        page.fill("#api-key", KEY)
        page.click("#sign-in")
        expect(page.locator("#no-actions")).to_be_visible()
        assert KEY not in page.url

        # A Python action with a syntax error: the error shows on its line.
        page.click("#new-python")
        page.fill("#name", "greet")
        page.fill("#code", BROKEN)
        page.click("#save")
        expect(page.locator("#editor-error")).to_contain_text("line 3")
        expect(page.locator("#gutter .error-line")).to_have_text("3")

        # Fix it and save: version 1 is stored, the test panel detects the argument.
        page.fill("#code", FIXED)
        expect(page.locator("#gutter .error-line")).to_have_count(0)
        page.click("#save")
        expect(page.locator("#saved")).to_have_text("Saved version 1.")
        page.fill('[data-arg="name"]', "Ada")
        page.fill("#test-conversation", "conv-1")
        page.click("#test-run")
        expect(page.locator("#result-status")).to_have_text("ok", timeout=60_000)
        expect(page.locator("#result-output")).to_contain_text('"hello": "Ada"')
        expect(page.locator("#result-output")).to_contain_text('"conversation": "conv-1"')
        expect(page.locator("#result-effects")).to_contain_text('"tag": "greeted"')
        expect(page.locator("#result-applied")).to_have_text("(not applied)")
        # A dry run: the conversation is untouched.
        after = http.get(f"{server}/v1/conversations/conv-1", headers=h, timeout=10).json()
        assert after["tags"] == []
        # Ticking "apply effects" applies them.
        page.check("#apply-effects")
        page.click("#test-run")
        expect(page.locator("#result-applied")).to_have_text("(applied)", timeout=60_000)
        after = http.get(f"{server}/v1/conversations/conv-1", headers=h, timeout=10).json()
        assert after["tags"] == ["greeted"]

        # An API action against a real local server, tested from the panel.
        with serve(_order_route) as (upstream, seen):
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
            # The secret header is write-only; the variables became test inputs.
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

            # Saving again with the masked header keeps the secret.
            page.fill("#description", "Gets an order")
            page.click("#save")
            expect(page.locator("#saved")).to_have_text("Saved version 2.")
            page.fill('[data-arg="orderId"]', "B")
            page.fill('[data-arg="lang"]', "de")
            page.click("#test-run")
            expect(page.locator("#result-output")).to_contain_text('"path": "/orders/B"')
            expect(page.locator("#result-output")).to_contain_text('"key": "k-secret"')

        # History: both API runs, the status filters, and one run's record.
        page.click("#runs-link")
        expect(page.locator("#runs tbody tr")).to_have_count(2)
        page.click('[data-filter="error"]')
        expect(page.locator("#no-runs")).to_be_visible()
        page.click('[data-filter="ok"]')
        expect(page.locator("#runs tbody tr")).to_have_count(2)
        page.locator("#runs tbody tr a").first.click()
        expect(page.locator("#run-status")).to_have_text("ok")
        expect(page.locator("#run-output")).to_contain_text('"path": "/orders/B"')

        # Signing out ends the session.
        page.click("#sign-out")
        expect(page).to_have_url(server + "/login")
        page.goto(server + "/")
        expect(page).to_have_url(server + "/login")
    finally:
        context.close()
