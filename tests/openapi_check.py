"""Every response the tests receive is checked against the OpenAPI document: its status must be
documented for the path and method, its content type among the documented ones, and a JSON
body must fit the documented schema. A response that does not fails the test that got it.

Flask test clients check through ``CheckedClient`` (conftest makes it every app's client
class); real HTTP against served processes checks through ``http`` (tests/served.py).
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import requests
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

from actioncage.web.openapi import document

_DOC_URI = "urn:actioncage:openapi"


@cache
def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = document()
    return doc


@cache
def _registry() -> Registry[Any]:
    resource = Resource.from_contents(_doc(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_DOC_URI, resource)
    return registry


@cache
def _routes() -> list[tuple[re.Pattern[str], str]]:
    """Path templates as patterns, literal ones first (``/actions/new`` before ``{id}``)."""
    routes = []
    for template in _doc()["paths"]:
        pattern = re.escape(template)
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern)
        routes.append((re.compile(f"^{pattern}$"), template))
    routes.sort(key=lambda r: (r[1].count("{"), -len(r[1])))
    return routes


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@cache
def _validator(pointer: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{_DOC_URI}#{pointer}"}, registry=_registry())


def _resolve(obj: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
    """A response object and its pointer, following a ``$ref`` into components."""
    while "$ref" in obj:
        pointer = obj["$ref"].removeprefix("#")
        obj = _doc()
        for part in pointer.strip("/").split("/"):
            obj = obj[part.replace("~1", "/").replace("~0", "~")]
    return obj, pointer


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def check_response(
    method: str, path: str, status: int, content_type: str | None, body: bytes
) -> None:
    """Raise AssertionError saying how a response departs from the document."""
    method = method.lower()
    if method == "options":
        return  # Flask's automatic answer, no operation of ours
    where = f"{method.upper()} {path} answered {status}"
    template = next((t for pattern, t in _routes() if pattern.match(path)), None)
    operation = None
    if template is not None:
        item = _doc()["paths"][template]
        operation = item.get("get" if method == "head" else method)
    if template is None or operation is None:
        # No such route or method: the app's 404/405 in our error shape.
        assert status in (404, 405), f"{where}, but the document has no {method} {path}"
        _check_json(where, _validator("/components/schemas/Error"), body)
        return
    op_pointer = _pointer("paths", template, "get" if method == "head" else method)
    responses = operation["responses"]
    if str(status) not in responses:
        raise AssertionError(
            f"{where}, which the document does not list for {template} "
            f"(it lists {', '.join(responses)}); body: {body[:300]!r}"
        )
    response, pointer = _resolve(responses[str(status)], f"{op_pointer}/responses/{status}")
    content = response.get("content")
    if not content or method == "head":
        assert not content or method == "head" or not body, f"{where} with a body; none documented"
        return
    media = _media(content_type)
    documented = {_media(k): k for k in content}
    assert media in documented, (
        f"{where} as {content_type!r}; the document says {', '.join(content)}"
    )
    if media == "application/json":
        schema_pointer = f"{pointer}/content/{_pointer(documented[media])[1:]}/schema"
        _check_json(where, _validator(schema_pointer), body)


def _check_json(where: str, validator: Draft202012Validator, body: bytes) -> None:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise AssertionError(f"{where} with a body that is not JSON: {body[:300]!r}") from exc
    error = best_match(validator.iter_errors(value))
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(the body)"
        raise AssertionError(
            f"{where} with a body the document does not describe: at {at}: {error.message}\n"
            f"body: {json.dumps(value)[:1000]}"
        )


class CheckedClient(FlaskClient):
    """Flask's test client, checking every response against the OpenAPI document."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        response = super().open(*args, **kwargs)
        for r in (*response.history, response):
            if r.request is None:
                continue
            check_response(
                r.request.method, r.request.path, r.status_code, r.content_type, r.get_data()
            )
        return response


def _check_http(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    request = response.request
    check_response(
        request.method or "GET",
        urlsplit(request.url or "").path,
        response.status_code,
        response.headers.get("Content-Type"),
        response.content,
    )


class CheckedHttp:
    """``requests`` for a served actioncage: every response is checked against the document."""

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("hooks", {"response": _check_http})
        return requests.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", url, **kwargs)


http = CheckedHttp()
