"""hostcalls/: Host calls a script asks for (LLM classification, Google Sheets rows), made with
our credentials, which never enter the container."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

import jwt
import requests

from actioncage.errors import HostCallError
from actioncage.sandbox import envelope
from actioncage.settings import Settings

log = logging.getLogger(__name__)

_SHEET_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SHEETS_SCOPE = "https://www.googleapis.com/auth/spreadsheets"
_MAX_TEXT = 32 * 1024
_MAX_OPTIONS = 100


class HostCalls:
    """Answers the host-call frames of runs. Thread-safe; one per app."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self._settings = settings
        self._http = session or requests.Session()
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()

    def answer(self, frame: dict[str, Any]) -> bytes:
        """The stdin line that answers ``frame``; every failure becomes an ``ok: false`` reply."""
        call_id = frame.get("id")
        if not isinstance(call_id, int):
            return envelope.host_reply(None, False, error="host call without an integer id")
        name, args = frame.get("name"), frame.get("args")
        try:
            if not isinstance(args, dict):
                raise HostCallError("host call args must be an object")
            if name == "llm_classify_binary":
                value: Any = self.classify_binary(_text(args, "prompt"), _text(args, "input"))
            elif name == "llm_classify_category":
                value = self.classify_category(
                    _text(args, "prompt"), _text(args, "input"), _options(args)
                )
            elif name == "add_google_sheets_row":
                value = self.append_sheet_row(args.get("sheetId"), args.get("data"))
            else:
                raise HostCallError(f"unknown host call {name!r}")
        except HostCallError as exc:
            return envelope.host_reply(call_id, False, error=str(exc))
        return envelope.host_reply(call_id, True, value=value)

    # --- LLM -------------------------------------------------------------------------------

    def _chat(self, system: str, user: str) -> str:
        s = self._settings
        if not s.llm_base_url or not s.llm_api_key:
            raise HostCallError("the LLM provider is not configured")
        try:
            resp = self._http.post(
                s.llm_base_url.rstrip("/") + "/chat/completions",
                headers={"Authorization": f"Bearer {s.llm_api_key}"},
                json={
                    "model": s.llm_model,
                    "temperature": 0,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": user},
                    ],
                },
                timeout=s.host_call_timeout_ms / 1000,
            )
            resp.raise_for_status()
            content = resp.json()["choices"][0]["message"]["content"]
        except requests.RequestException as exc:
            raise HostCallError(f"the LLM provider failed: {_safe(exc)}") from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise HostCallError("the LLM provider sent an unexpected answer") from exc
        if not isinstance(content, str):
            raise HostCallError("the LLM provider sent an unexpected answer")
        return content.strip()

    def classify_binary(self, prompt: str, text: str) -> bool:
        """True or False for ``text`` under ``prompt``. Raises HostCallError."""
        answer = (
            self._chat(f"{prompt}\n\nAnswer with exactly one word: true or false.", text)
            .lower()
            .strip(" .\"'")
        )
        if answer in {"true", "yes"}:
            return True
        if answer in {"false", "no"}:
            return False
        raise HostCallError("the LLM answered neither true nor false")

    def classify_category(self, prompt: str, text: str, options: list[str]) -> str:
        """One of ``options`` for ``text`` under ``prompt``. Raises HostCallError."""
        listed = "\n".join(f"- {o}" for o in options)
        answer = self._chat(
            f"{prompt}\n\nAnswer with exactly one of these options, nothing else:\n{listed}", text
        ).strip(" .\"'")
        for option in options:
            if answer.lower() == option.lower():
                return option
        raise HostCallError("the LLM answered with none of the options")

    # --- Google Sheets ---------------------------------------------------------------------

    def _service_account(self) -> dict[str, Any]:
        path = self._settings.sheets_credentials_file
        if not path:
            raise HostCallError("Google Sheets is not configured")
        try:
            with open(path, encoding="utf-8") as f:
                info: dict[str, Any] = json.load(f)
            info["client_email"], info["private_key"]  # noqa: B018 - presence check
        except (OSError, ValueError, KeyError) as exc:
            raise HostCallError("the Google service account file is unreadable") from exc
        return info

    def _access_token(self) -> str:
        with self._token_lock:
            if self._token and self._token[1] > time.time() + 60:
                return self._token[0]
            info = self._service_account()
            token_uri = info.get("token_uri", "https://oauth2.googleapis.com/token")
            issued = int(time.time())
            assertion = jwt.encode(
                {
                    "iss": info["client_email"],
                    "scope": _SHEETS_SCOPE,
                    "aud": token_uri,
                    "iat": issued,
                    "exp": issued + 3600,
                },
                info["private_key"],
                algorithm="RS256",
                headers={"kid": info.get("private_key_id")} if info.get("private_key_id") else None,
            )
            try:
                resp = self._http.post(
                    token_uri,
                    data={
                        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                        "assertion": assertion,
                    },
                    timeout=self._settings.host_call_timeout_ms / 1000,
                )
                resp.raise_for_status()
                body = resp.json()
                token = str(body["access_token"])
                expires = time.time() + int(body.get("expires_in", 3600))
            except requests.RequestException as exc:
                raise HostCallError(f"Google sign-in failed: {_safe(exc)}") from exc
            except (ValueError, KeyError, TypeError) as exc:
                raise HostCallError("Google sign-in sent an unexpected answer") from exc
            self._token = (token, expires)
            return token

    def append_sheet_row(self, sheet_id: Any, data: Any) -> dict[str, Any]:
        """Append one row; returns ``{updatedRange, updatedRows}``. Raises HostCallError."""
        if not isinstance(sheet_id, str) or not _SHEET_ID_RE.match(sheet_id):
            raise HostCallError("sheet_id must be a spreadsheet id (letters, digits, - and _)")
        row = list(data.values()) if isinstance(data, dict) else data
        if (
            not isinstance(row, list)
            or not 1 <= len(row) <= 1000
            or not all(v is None or isinstance(v, str | int | float | bool) for v in row)
        ):
            raise HostCallError("data must be a list (or object) of 1-1000 plain values")
        token = self._access_token()
        url = (
            f"{self._settings.sheets_base_url.rstrip('/')}/v4/spreadsheets/{sheet_id}"
            "/values/A1:append"
        )
        try:
            resp = self._http.post(
                url,
                params={"valueInputOption": "USER_ENTERED", "insertDataOption": "INSERT_ROWS"},
                headers={"Authorization": f"Bearer {token}"},
                json={"majorDimension": "ROWS", "values": [row]},
                timeout=self._settings.host_call_timeout_ms / 1000,
            )
            resp.raise_for_status()
            updates = resp.json().get("updates", {})
        except requests.RequestException as exc:
            raise HostCallError(f"Google Sheets failed: {_safe(exc)}") from exc
        except (ValueError, AttributeError) as exc:
            raise HostCallError("Google Sheets sent an unexpected answer") from exc
        return {
            "updatedRange": updates.get("updatedRange"),
            "updatedRows": updates.get("updatedRows"),
        }


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise HostCallError(f"{name} must be a string of at most {_MAX_TEXT} characters")
    return value


def _options(args: dict[str, Any]) -> list[str]:
    options = args.get("options")
    if (
        not isinstance(options, list)
        or not 1 <= len(options) <= _MAX_OPTIONS
        or not all(isinstance(o, str) and o for o in options)
    ):
        raise HostCallError(f"options must be a list of 1-{_MAX_OPTIONS} non-empty strings")
    return options


def _safe(exc: requests.RequestException) -> str:
    # Name the failure without echoing URLs or headers that could carry credentials.
    if exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__
