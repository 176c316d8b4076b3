"""Local stand-ins for paid outside services, speaking their real wire formats on loopback:
an OpenAI-compatible chat-completions API and Google's OAuth token + Sheets append API."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt

Route = Callable[["Request"], tuple[int, dict[str, Any]]]


class Request:
    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        self.method, self.path, self.query, self.headers, self.body = (
            method,
            path,
            query,
            headers,
            body,
        )

    def json(self) -> Any:
        return json.loads(self.body)


@contextmanager
def serve(route: Route) -> Iterator[tuple[str, list[Request]]]:
    """Serve ``route`` on 127.0.0.1; yields (base URL, requests seen)."""
    seen: list[Request] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            req = Request(
                self.command,
                url.path,
                parse_qs(url.query),
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length),
            )
            seen.append(req)
            status, body = route(req)
            data = json.dumps(body).encode()
            # A caller that died meanwhile (a killed process) has gone: nobody to answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        do_GET = do_POST = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


LLM_KEY = "sk-test-llm"


def chat_completions(answer: Callable[[str, str], str]) -> Route:
    """An OpenAI chat-completions endpoint answering ``answer(system, user)``."""

    def route(req: Request) -> tuple[int, dict[str, Any]]:
        if req.path != "/v1/chat/completions" or req.method != "POST":
            return 404, {"error": {"message": "not found", "type": "invalid_request_error"}}
        if req.headers.get("authorization") != f"Bearer {LLM_KEY}":
            return 401, {
                "error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            }
        body = req.json()
        messages = {m["role"]: m["content"] for m in body["messages"]}
        content = answer(messages["system"], messages["user"])
        return 200, {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return route


def google_sheets(public_key_pem: bytes, rows: dict[str, list[list[Any]]]) -> Route:
    """Google's token endpoint (JWT-bearer grant, RS256 checked) and values:append."""

    def route(req: Request) -> tuple[int, dict[str, Any]]:
        if req.path == "/token" and req.method == "POST":
            form = parse_qs(req.body.decode())
            if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
                return 400, {"error": "unsupported_grant_type"}
            try:
                claims = jwt.decode(
                    form["assertion"][0],
                    public_key_pem,
                    algorithms=["RS256"],
                    options={"verify_aud": False},
                )
            except jwt.InvalidTokenError:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Invalid JWT Signature.",
                }
            if not str(claims.get("aud", "")).endswith("/token") or "exp" not in claims:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Invalid JWT: aud or exp.",
                }
            if claims.get("scope") != "https://www.googleapis.com/auth/spreadsheets":
                return 400, {"error": "invalid_scope"}
            return 200, {"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"}
        prefix = "/v4/spreadsheets/"
        if (
            req.path.startswith(prefix)
            and req.path.endswith("/values/A1:append")
            and req.method == "POST"
        ):
            if req.headers.get("authorization") != "Bearer ya29.test":
                return 401, {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials.",
                        "status": "UNAUTHENTICATED",
                    }
                }
            sheet_id = req.path[len(prefix) : -len("/values/A1:append")]
            values = req.json()["values"]
            table = rows.setdefault(sheet_id, [])
            table.extend(values)
            n = len(table)
            return 200, {
                "spreadsheetId": sheet_id,
                "tableRange": f"Sheet1!A1:C{n - 1}",
                "updates": {
                    "spreadsheetId": sheet_id,
                    "updatedRange": f"Sheet1!A{n}:C{n}",
                    "updatedRows": 1,
                    "updatedColumns": len(values[0]),
                    "updatedCells": len(values[0]),
                },
            }
        return 404, {
            "error": {
                "code": 404,
                "message": "Requested entity was not found.",
                "status": "NOT_FOUND",
            }
        }

    return route


def held_code(output: str) -> str:
    """A script that asks the LLM once (so a HeldLlm holds it) and then returns ``output``."""
    return (
        "def execute_action(context):\n"
        "    llm_classify_binary('Hold?', 'until the test says so')\n"
        f"    return {output!r}\n"
    )


class HeldLlm:
    """A chat-completions stand-in whose answers wait until release(): a run that asks it is
    held in flight (holding its slot) for exactly as long as the test wants, no sleeps."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._calls = 0
        self._cond = threading.Condition()
        self._release = threading.Event()
        self.base_url = ""

    def settings(self) -> dict[str, Any]:
        """Settings fields pointing at this stand-in, with host calls and the default run
        deadline long enough for a run to be held."""
        return {
            "llm_base_url": self.base_url,
            "llm_api_key": LLM_KEY,
            "host_call_timeout_ms": 60_000,
            "default_timeout_ms": 60_000,
        }

    def serve_env(self) -> dict[str, str]:
        """The same as ``settings()``, as a served process's environment."""
        return {f"ACTIONCAGE_{k.upper()}": str(v) for k, v in self.settings().items()}

    def answer(self, system: str, user: str) -> str:
        with self._cond:
            self._calls += 1
            self._cond.notify_all()
        self.entered.set()
        if not self._release.wait(timeout=120):
            raise AssertionError("the test never released the held LLM call")
        return "yes"

    def wait_entered(self, count: int, timeout: float = 60) -> bool:
        """True once ``count`` calls are being held (or were)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._calls >= count, timeout=timeout)

    def release(self) -> None:
        self._release.set()


@contextmanager
def held_llm() -> Iterator[HeldLlm]:
    """A HeldLlm on loopback, released at the end. Point a process at it with its
    ``serve_env()``, an app with its ``settings()``."""
    llm = HeldLlm()
    with serve(chat_completions(llm.answer)) as (url, _):
        llm.base_url = url + "/v1"
        try:
            yield llm
        finally:
            llm.release()
