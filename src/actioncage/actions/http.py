"""actions/: Runs ``type: "api"`` actions (a templated HTTP call).

An API action's ``endpoint`` is ``{url, method, headers, query, payload, timeoutMs}``. Every
``$variableName`` in the URL's path and query, the header values, the query values or the
payload is a required argument. Values are encoded for where they land: percent-encoded in the
URL, form-encoded in the query, JSON in the payload (a string that is exactly ``"$count"`` takes
the argument's JSON value; inside a longer string it is interpolated as text), and refused in a
header when they hold a line break. ``$secret.name`` stands for the org's secret ``name``, which
the action must declare in its ``secrets``; it is no argument, and the run masks its value.
The scheme, host and port are never templated. The host must be within the org's egress
ceiling (or the operator's default) and the action's own ``policy.egress`` when it lists any
(sandbox/limits.py decides), and the call goes through the EgressGuard: the host is resolved
once, every address checked, and the connection made to the checked address (Host header and
TLS name stay the real host name).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from actioncage.egress.guard import EgressGuard, HostPattern, guard_from_settings
from actioncage.errors import EgressRefusedError, PolicyError, ValidationFailedError
from actioncage.models import ErrorType, OrgPolicy, Policy, RunError
from actioncage.sandbox.limits import api_egress
from actioncage.settings import Settings

VARIABLE_RE = re.compile(r"\$([A-Za-z][A-Za-z0-9_]{0,63})")
# ``$secret.name`` (group 1) or ``$variable`` (group 2), in one pass: a value put in is never
# read as a template again.
_TEMPLATE_RE = re.compile(
    r"\$(?:secret\.([A-Za-z][A-Za-z0-9_]{0,63})|([A-Za-z][A-Za-z0-9_]{0,63}))"
)
METHODS = ("GET", "POST", "PUT", "DELETE")
MASK = "***"
ENDPOINT_FIELDS = ("url", "method", "headers", "query", "payload", "timeoutMs")
# Header names whose values are write-only: shown as MASK, kept on update when MASK comes back.
_SECRET_NAMES = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_WORDS = ("key", "token", "secret", "password", "auth", "session", "cookie")
# Headers the transport owns; an author setting them could desync the request.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"}
)
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_MAX_URL = 2048
_MAX_ITEMS = 50
_MAX_ERROR_BODY = 300


def is_secret_header(name: str) -> bool:
    """True when a header's value is a credential (Authorization, X-Api-Key, ...)."""
    lower = name.lower()
    return lower in _SECRET_NAMES or any(word in lower for word in _SECRET_WORDS)


# --- the definition, checked at save time ------------------------------------------------------


def check_endpoint(raw: Any, current: dict[str, Any] | None, max_timeout_ms: int) -> dict[str, Any]:
    """The endpoint an API action asks for, validated and normalised.

    ``current`` is the stored endpoint on update: a secret header sent back as ``"***"`` keeps
    its stored value. Raises ValidationFailedError naming the field (PolicyError for a timeout
    over the operator's maximum).
    """
    if not isinstance(raw, dict):
        raise ValidationFailedError("endpoint must be an object", "endpoint")
    extra = sorted(set(raw) - set(ENDPOINT_FIELDS))
    if extra:
        raise ValidationFailedError(f"unknown field 'endpoint.{extra[0]}'", f"endpoint.{extra[0]}")
    url = _check_url(raw.get("url"))
    method = raw.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ValidationFailedError(
            "endpoint.method must be GET, POST, PUT or DELETE", "endpoint.method"
        )
    headers = _string_map(raw.get("headers"), "endpoint.headers")
    stored = {k.lower(): v for k, v in ((current or {}).get("headers") or {}).items()}
    for name, value in list(headers.items()):
        if not _TOKEN_RE.match(name) or name.lower() in _RESERVED_HEADERS:
            raise ValidationFailedError(
                f"endpoint.headers: {name!r} is not a header name an action may set",
                "endpoint.headers",
            )
        if value == MASK and is_secret_header(name):
            if name.lower() not in stored:
                raise ValidationFailedError(
                    f"endpoint.headers.{name}: {MASK!r} keeps a stored secret, and there is none",
                    f"endpoint.headers.{name}",
                )
            headers[name] = stored[name.lower()]
        elif any(c in value for c in "\r\n\0"):
            raise ValidationFailedError(
                f"endpoint.headers.{name}: a line break or NUL", f"endpoint.headers.{name}"
            )
    query = _string_map(raw.get("query"), "endpoint.query")
    payload = raw.get("payload")
    timeout_ms = raw.get("timeoutMs")
    if timeout_ms is not None:
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 1:
            raise ValidationFailedError(
                "endpoint.timeoutMs must be a positive integer", "endpoint.timeoutMs"
            )
        if timeout_ms > max_timeout_ms:
            raise PolicyError(
                f"endpoint.timeoutMs {timeout_ms} is over the maximum {max_timeout_ms}",
                "endpoint.timeoutMs",
            )
    endpoint: dict[str, Any] = {"url": url, "method": method.upper(), "headers": headers}
    endpoint["query"] = query
    endpoint["payload"] = payload
    endpoint["timeoutMs"] = timeout_ms
    return endpoint


def _check_url(url: Any) -> str:
    if not isinstance(url, str) or not 0 < len(url) <= _MAX_URL:
        raise ValidationFailedError(
            f"endpoint.url must be a URL of at most {_MAX_URL} characters", "endpoint.url"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValidationFailedError(f"endpoint.url: {exc}", "endpoint.url") from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationFailedError(
            "endpoint.url must start with http:// or https://", "endpoint.url"
        )
    if VARIABLE_RE.search(parts.netloc) or "$" in parts.netloc:
        raise ValidationFailedError(
            "endpoint.url: $variables may not appear in the scheme, host or port", "endpoint.url"
        )
    if "@" in parts.netloc:
        raise ValidationFailedError(
            "endpoint.url: no user:password@ in the URL; send credentials in a header",
            "endpoint.url",
        )
    if parts.fragment:
        raise ValidationFailedError("endpoint.url: no #fragment", "endpoint.url")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValidationFailedError(f"endpoint.url: {exc}", "endpoint.url") from exc
    if not parts.hostname or any(c.isspace() for c in url) or port == 0:
        raise ValidationFailedError("endpoint.url has no valid host", "endpoint.url")
    return url


def _string_map(raw: Any, field: str) -> dict[str, str]:
    if raw is None:
        return {}
    if (
        not isinstance(raw, dict)
        or len(raw) > _MAX_ITEMS
        or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in raw.items())
    ):
        raise ValidationFailedError(
            f"{field} must be an object of at most {_MAX_ITEMS} string values", field
        )
    return dict(raw)


def _template_names(endpoint: dict[str, Any], group: int) -> list[str]:
    parts = urlsplit(endpoint["url"])
    texts = [parts.path, parts.query, *endpoint["headers"].values(), *endpoint["query"].values()]
    texts.extend(_payload_strings(endpoint["payload"]))
    found: dict[str, None] = {}
    for text in texts:
        for match in _TEMPLATE_RE.finditer(text):
            if match.group(group) is not None:
                found[match.group(group)] = None
    return list(found)


def endpoint_variables(endpoint: dict[str, Any]) -> list[str]:
    """Every ``$variable`` of the endpoint, in order of first appearance."""
    return _template_names(endpoint, 2)


def endpoint_secrets(endpoint: dict[str, Any]) -> list[str]:
    """Every ``$secret.name`` of the endpoint, in order of first appearance."""
    return _template_names(endpoint, 1)


def _payload_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _payload_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _payload_strings(v)]
    return []


def parameters_for(
    endpoint: dict[str, Any], refined: dict[str, Any] | None, current: dict[str, Any] | None
) -> dict[str, Any]:
    """The action's JSON Schema: one required property per variable, nothing else allowed.

    ``refined`` is the schema the author sent (it must describe every variable); otherwise a
    variable keeps its property from ``current`` (the stored schema) or becomes a string.
    Raises ValidationFailedError.
    """
    variables = endpoint_variables(endpoint)
    if refined is not None:
        props = refined.get("properties")
        if refined.get("type", "object") != "object" or not isinstance(props, dict):
            raise ValidationFailedError(
                "parameters of an API action must be an object schema with properties",
                "parameters",
            )
        missing = [v for v in variables if v not in props]
        if missing:
            raise ValidationFailedError(
                f"parameters must describe ${missing[0]}, which the endpoint uses", "parameters"
            )
        return {
            **refined,
            "type": "object",
            "required": variables,
            "additionalProperties": refined.get("additionalProperties", False),
        }
    known = (current or {}).get("properties") or {}
    return {
        "type": "object",
        "properties": {v: known.get(v, {"type": "string"}) for v in variables},
        "required": variables,
        "additionalProperties": False,
    }


def masked(endpoint: dict[str, Any] | None) -> dict[str, Any] | None:
    """The endpoint as readers see it: secret header values replaced by ``"***"``."""
    if endpoint is None:
        return None
    headers = {k: MASK if is_secret_header(k) else v for k, v in endpoint["headers"].items()}
    return {**endpoint, "headers": headers}


# --- a call, at run time ---------------------------------------------------------------------


class ArgsUnfitError(ValidationFailedError):
    """An argument cannot go where its variable stands (a line break into a header)."""


class _SecretMissingError(Exception):
    """A ``$secret.name`` whose value the run was not given."""


@dataclass(frozen=True)
class PreparedCall:
    method: str
    scheme: str
    host: str
    port: int
    target: str  # path and query, encoded
    headers: dict[str, str]
    body: bytes | None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _secret(secrets: dict[str, str | None], name: str) -> str:
    value = secrets.get(name)
    if value is None:
        raise _SecretMissingError(
            f"$secret.{name} is not available: the org has not set it (or the server has no "
            "ACTIONCAGE_SECRETS_KEY)"
        )
    return value


def _interpolate(
    template: str,
    args: dict[str, Any],
    encode: Any = None,
    secrets: dict[str, str | None] | None = None,
) -> str:
    def one(match: re.Match[str]) -> str:
        secret, name = match.group(1), match.group(2)
        if secret is not None:
            text = _secret(secrets or {}, secret)
        elif name not in args:
            raise ArgsUnfitError(f"{name}: missing argument", name)
        else:
            text = _text(args[name])
        return encode(text) if encode else text

    return _TEMPLATE_RE.sub(one, template)


def _fill_payload(value: Any, args: dict[str, Any], secrets: dict[str, str | None]) -> Any:
    if isinstance(value, str):
        whole = _TEMPLATE_RE.fullmatch(value)
        if whole and whole.group(2) in args:
            # Validated against the schema already: a string stays a string, 3 stays 3.
            return args[whole.group(2)]
        return _interpolate(value, args, secrets=secrets)
    if isinstance(value, dict):
        return {k: _fill_payload(v, args, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_payload(v, args, secrets) for v in value]
    return value


def prepare(
    endpoint: dict[str, Any],
    args: dict[str, Any],
    secrets: dict[str, str | None] | None = None,
) -> PreparedCall:
    """The request the endpoint makes with these (schema-checked) args and secret values.

    Raises ArgsUnfitError when an argument cannot be placed.
    """
    parts = urlsplit(endpoint["url"])
    secrets = secrets or {}

    def segment(text: str) -> str:
        return quote(text, safe="")

    path = _interpolate(parts.path, args, segment, secrets) or "/"
    query = _interpolate(parts.query, args, segment, secrets)
    extra = urlencode(
        [(k, _interpolate(v, args, secrets=secrets)) for k, v in endpoint["query"].items()]
    )
    query = "&".join(q for q in (query, extra) if q)
    headers: dict[str, str] = {}
    for name, template in endpoint["headers"].items():
        value = _interpolate(template, args, secrets=secrets)
        if any(c in value for c in "\r\n\0"):
            raise ArgsUnfitError(f"header {name}: an argument holds a line break or NUL", name)
        headers[name] = value
    body = None
    if endpoint["payload"] is not None:
        body = json.dumps(_fill_payload(endpoint["payload"], args, secrets)).encode()
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    scheme = parts.scheme
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    return PreparedCall(
        method=endpoint["method"],
        scheme=scheme,
        host=host,
        port=port,
        target=path + ("?" + query if query else ""),
        headers=headers,
        body=body,
    )


@dataclass(frozen=True)
class CallResult:
    """What one API call produced: ``output`` when ``error`` is None, and a log line."""

    output: Any
    error: RunError | None
    logs: str


class _TooLargeError(Exception):
    pass


class HttpActionRunner:
    """Makes API actions' calls through the egress guard."""

    def __init__(
        self,
        settings: Settings,
        guard: EgressGuard | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._guard = guard or guard_from_settings(settings)
        # Verifies the chain against the system CAs and the name we were given, not the IP.
        self._tls = tls or ssl.create_default_context()

    def call(
        self,
        endpoint: dict[str, Any],
        args: dict[str, Any],
        policy: Policy,
        org: OrgPolicy | None,
        secrets: dict[str, str | None] | None = None,
    ) -> CallResult:
        """Make the call if its host is within the org's egress (``org`` None: the operator's
        default ceiling) and the action's ``policy.egress``; failures are outcomes (``error``
        set), never raised. ``secrets``: the values ``$secret.name`` stands for."""
        try:
            req = prepare(endpoint, args, secrets)
        except ArgsUnfitError as exc:
            return CallResult(None, RunError(ErrorType.INVALID_ARGS, str(exc)), "")
        except _SecretMissingError as exc:
            return CallResult(None, RunError(ErrorType.EXCEPTION, str(exc)), "")
        timeout_ms = min(
            endpoint.get("timeoutMs") or self._settings.default_timeout_ms,
            self._settings.max_timeout_ms,
        )
        where = f"{req.method} {req.scheme}://{req.host}:{req.port}{req.target.split('?')[0]}"
        try:
            allowed = api_egress(policy, self._settings, org, req.host, req.port)
            deadline = time.monotonic() + timeout_ms / 1000
            status, content_type, body = self._send(req, allowed, deadline)
        except EgressRefusedError as exc:
            return _failed(ErrorType.EXCEPTION, f"egress refused: {exc}", where)
        except TimeoutError:
            return _failed(ErrorType.TIMEOUT, f"no full answer within {timeout_ms} ms", where)
        except _TooLargeError:
            limit = self._settings.max_api_response_bytes
            return _failed(ErrorType.OUTPUT_LIMIT, f"the response is over {limit} bytes", where)
        except (OSError, http.client.HTTPException) as exc:
            return _failed(ErrorType.EXCEPTION, f"request failed: {exc!r}", where)
        logs = f"{where} -> {status}, {len(body)} bytes\n"
        text = body.decode("utf-8", errors="replace")
        if not 200 <= status < 300:
            short = text[:_MAX_ERROR_BODY]
            message = f"HTTP {status} from {req.host}: {short}"
            return CallResult(None, RunError(ErrorType.EXCEPTION, message), logs)
        output: Any = text
        if "json" in content_type.lower() or text.lstrip()[:1] in ("{", "["):
            try:
                output = json.loads(text)
            except ValueError:
                output = text
        return CallResult(output, None, logs)

    def _send(
        self, req: PreparedCall, allowed: tuple[HostPattern, ...], deadline: float
    ) -> tuple[int, str, bytes]:
        address = self._guard.resolve(req.host, req.port, allowed)

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            return left

        sock = socket.create_connection((str(address), req.port), timeout=remaining())
        conn: http.client.HTTPConnection
        try:
            if req.scheme == "https":
                # Certificate and SNI are checked for the name, though we dialled the address.
                sock = self._tls.wrap_socket(sock, server_hostname=req.host)
                conn = http.client.HTTPSConnection(req.host, req.port, context=self._tls)
            else:
                conn = http.client.HTTPConnection(req.host, req.port)
            conn.sock = sock
            conn.request(req.method, req.target, body=req.body, headers=req.headers)
            sock.settimeout(remaining())
            resp = conn.getresponse()
            cap = self._settings.max_api_response_bytes
            chunks: list[bytes] = []
            size = 0
            while True:
                sock.settimeout(remaining())
                chunk = resp.read1(64 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise _TooLargeError
                chunks.append(chunk)
            return resp.status, resp.getheader("Content-Type") or "", b"".join(chunks)
        finally:
            sock.close()


def _failed(type_: ErrorType, message: str, where: str) -> CallResult:
    return CallResult(None, RunError(type_, message), f"{where} -> {message}\n")
