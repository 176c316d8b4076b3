"""Every front door maps the run service's error kinds with one meaning."""

from __future__ import annotations

from actioncage import errors
from actioncage.web.errors import KINDS, NATIVE, kind_of
from actioncage.web.frontdoors.botpress import _TYPES as BOTPRESS
from actioncage.web.frontdoors.mcp import _CODES as MCP
from actioncage.web.frontdoors.rasa import _STATUS as RASA


def test_every_kind_has_an_answer_on_every_front_door() -> None:
    kinds = {kind for _, kind in KINDS}
    assert kinds == set(NATIVE) == set(RASA) == set(BOTPRESS) == set(MCP)


def test_front_doors_agree_on_limits_busy_and_no_run() -> None:
    for kind in ("overloaded", "rate_limited", "busy"):
        assert NATIVE[kind] == RASA[kind] == BOTPRESS[kind][0] == MCP[kind][0] == 429, kind
    for kind in ("sandbox_error", "engine_unavailable"):
        assert NATIVE[kind] == RASA[kind] == BOTPRESS[kind][0] == MCP[kind][0] == 503, kind
    for kind in ("not_found", "unauthorized", "conflict"):
        assert NATIVE[kind] == RASA[kind] == BOTPRESS[kind][0], kind
    # MCP: an unknown tool is the spec's invalid-params error (HTTP 400), not a 404.
    for kind in ("unauthorized", "conflict"):
        assert NATIVE[kind] == MCP[kind][0], kind


def test_most_specific_class_decides_the_kind() -> None:
    assert kind_of(errors.OverloadedError("full")) == "overloaded"
    assert kind_of(errors.RateLimitedError("slow down", 3)) == "rate_limited"
    assert kind_of(errors.BusyError("busy")) == "busy"
    assert kind_of(errors.EngineUnavailableError("down")) == "engine_unavailable"
    assert kind_of(errors.ActionNotFoundError("no action")) == "not_found"


def test_shared_state_down_is_503_on_every_front_door() -> None:
    assert kind_of(errors.SharedStateError("redis down")) == "shared_state_unavailable"
    kind = "shared_state_unavailable"
    assert NATIVE[kind] == RASA[kind] == BOTPRESS[kind][0] == 503
