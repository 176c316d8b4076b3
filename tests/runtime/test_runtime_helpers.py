"""The conversation, experiment and holiday helpers as a script sees them, and their effects."""

from __future__ import annotations

import hashlib

import pytest

from tests.runtime.harness import conversation, run_action


def test_metadata_reads_see_the_runs_own_writes() -> None:
    out = run_action(
        """
        def execute_action(context):
            seen = [get_conversation_metadata(context, "plan")]
            set_conversation_metadata(context, "plan", "pro")
            seen.append(get_conversation_metadata(context, "plan"))
            delete_conversation_metadata(context, "plan")
            seen.append(get_conversation_metadata(context, "plan"))
            seen.append(get_conversation_metadata(context, "missing"))
            return seen
        """,
        conversation_data=conversation(metadata={"plan": "free"}),
    )
    assert out.output == ["free", "pro", None, None]
    assert out.result["effects"] == [
        {"kind": "set_metadata", "key": "plan", "value": "pro"},
        {"kind": "delete_metadata", "key": "plan"},
    ]


def test_recorded_values_are_copies() -> None:
    out = run_action(
        """
        def execute_action(context):
            value = {"items": [1]}
            set_conversation_metadata(context, "cart", value)
            value["items"].append(2)
            read = get_conversation_metadata(context, "cart")
            read["items"].append(3)
            event = {"name": "checkout"}
            add_conversation_event(context, event)
            event["name"] = "changed"
            return get_conversation_metadata(context, "cart")
        """
    )
    assert out.output == {"items": [1]}
    assert out.result["effects"] == [
        {"kind": "set_metadata", "key": "cart", "value": {"items": [1]}},
        {"kind": "add_event", "event": {"name": "checkout"}},
    ]


def test_metadata_value_is_stored_as_json_would_read_it() -> None:
    out = run_action(
        """
        def execute_action(context):
            set_conversation_metadata(context, "k", {"t": (1, 2), 3: None})
            return get_conversation_metadata(context, "k")
        """
    )
    assert out.output == {"t": [1, 2], "3": None}


def test_script_changes_to_context_metadata_do_not_leak_into_reads() -> None:
    out = run_action(
        """
        def execute_action(context):
            context["conversation"]["metadata"]["plan"] = "hacked"
            return get_conversation_metadata(context, "plan")
        """,
        conversation_data=conversation(metadata={"plan": "free"}),
    )
    assert out.output == "free"


def test_tags_events_and_hand_off_are_recorded_in_order() -> None:
    out = run_action(
        """
        def execute_action(context):
            add_conversation_tag(context, "refunded")
            add_conversation_tag(context, "refunded")
            add_conversation_event(context, "refund issued")
            add_conversation_event(context, {"type": "refund", "amount": 12.5})
            hand_off_conversation(context)
            hand_off_conversation(context, reason="customer asked for a human")
            return "done"
        """
    )
    assert out.result["effects"] == [
        {"kind": "add_tag", "tag": "refunded"},
        {"kind": "add_event", "event": "refund issued"},
        {"kind": "add_event", "event": {"type": "refund", "amount": 12.5}},
        {"kind": "hand_off", "reason": None},
        {"kind": "hand_off", "reason": "customer asked for a human"},
    ]


def test_tag_limit_counts_distinct_tags() -> None:
    out = run_action(
        """
        def execute_action(context):
            add_conversation_tag(context, "a")
            add_conversation_tag(context, "b")
            add_conversation_tag(context, "a")
            add_conversation_tag(context, "c")
        """,
        maxTags=2,
    )
    assert out.error["message"] == "ValueError: add_conversation_tag: at most 2 tags per run"


def test_event_limit() -> None:
    out = run_action(
        """
        def execute_action(context):
            for i in range(4):
                add_conversation_event(context, f"event {i}")
        """,
        maxEvents=3,
    )
    assert out.error["message"] == "ValueError: add_conversation_event: at most 3 events per run"


def test_errors_can_be_caught_and_leave_no_effect() -> None:
    out = run_action(
        """
        def execute_action(context):
            try:
                set_conversation_metadata(context, "k", {1, 2})
            except TypeError as exc:
                return str(exc)
        """
    )
    assert out.output == "set_conversation_metadata: value is not JSON-serialisable: set at $"
    assert out.result["effects"] == []


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            "get_conversation_metadata({}, 'k')",
            "TypeError: get_conversation_metadata: context must be the context passed to "
            "execute_action",
        ),
        (
            "set_conversation_metadata(dict(context), 'k', 1)",
            "TypeError: set_conversation_metadata: context must be the context",
        ),
        (
            "get_conversation_metadata(context, 5)",
            "TypeError: get_conversation_metadata: key must be a str, not int",
        ),
        (
            "get_conversation_metadata(context, '')",
            "ValueError: get_conversation_metadata: key must be 1-256 characters, got 0",
        ),
        (
            "set_conversation_metadata(context, 'k' * 257, 1)",
            "key must be 1-256 characters, got 257",
        ),
        (
            "delete_conversation_metadata(context, None)",
            "TypeError: delete_conversation_metadata: key must be a str",
        ),
        (
            "set_conversation_metadata(context, 'k', object())",
            "TypeError: set_conversation_metadata: value is not JSON-serialisable: object at $",
        ),
        (
            "set_conversation_metadata(context, 'k', [float('nan')])",
            "ValueError: set_conversation_metadata: value is not valid JSON: nan at $[0]",
        ),
        (
            "set_conversation_metadata(context, 'k', 'x' * 70000)",
            "set_conversation_metadata: value is 70002 bytes serialised; the limit is 65536",
        ),
        (
            "add_conversation_tag(context, '')",
            "ValueError: add_conversation_tag: tag must be 1-128 characters, got 0",
        ),
        ("add_conversation_tag(context, 't' * 129)", "tag must be 1-128 characters, got 129"),
        (
            "add_conversation_tag(context, ['vip'])",
            "TypeError: add_conversation_tag: tag must be a str, not list",
        ),
        (
            "add_conversation_event(context, 5)",
            "TypeError: add_conversation_event: event must be a str or a dict, not int",
        ),
        ("add_conversation_event(context, ['a'])", "event must be a str or a dict, not list"),
        (
            "add_conversation_event(context, {'when': __import__('datetime').date.today()})",
            'TypeError: add_conversation_event: event is not JSON-serialisable: date at $["when"]',
        ),
        (
            "add_conversation_event(context, 'e' * 70000)",
            "add_conversation_event: event is 70002 bytes serialised; the limit is 65536",
        ),
        (
            "hand_off_conversation(context, reason=3)",
            "TypeError: hand_off_conversation: reason must be a str, not int",
        ),
        (
            "hand_off_conversation(context, 'r' * 2049)",
            "ValueError: hand_off_conversation: reason must be at most 2048 characters, got 2049",
        ),
        (
            "get_ab_test_variant(context, '', ['a'])",
            "ValueError: get_ab_test_variant: test_name must be 1-200 characters, got 0",
        ),
        (
            "get_ab_test_variant(context, 't' * 201, ['a'])",
            "test_name must be 1-200 characters, got 201",
        ),
        (
            "get_ab_test_variant(context, 't', [])",
            "ValueError: get_ab_test_variant: possible_variants must have 1-100 items, got 0",
        ),
        (
            "get_ab_test_variant(context, 't', ['v'] * 101)",
            "possible_variants must have 1-100 items, got 101",
        ),
        (
            "get_ab_test_variant(context, 't', 'ab')",
            "TypeError: get_ab_test_variant: possible_variants must be a list of str, not str",
        ),
        (
            "get_ab_test_variant(context, 't', ['a', 2])",
            "TypeError: get_ab_test_variant: possible_variants[1] must be a str, not int",
        ),
        ("is_holiday(1)", "TypeError: is_holiday: country must be a str, not int"),
        ("is_holiday('US', state=5)", "TypeError: is_holiday: state must be a str, not int"),
        (
            "is_holiday('US', check_date=20240704)",
            "TypeError: is_holiday: check_date must be a date, a datetime or an ISO date string",
        ),
        (
            "is_holiday('US', check_date='July 4th')",
            "ValueError: is_holiday: check_date 'July 4th' is not an ISO date like 2024-07-04",
        ),
        ("is_holiday('XX')", "ValueError: is_holiday: unknown country 'XX'"),
        (
            "is_holiday('US', state='ZZ')",
            "ValueError: is_holiday: country 'US' has no subdivision 'ZZ'",
        ),
    ],
)
def test_helpers_reject_bad_arguments(call: str, expected: str) -> None:
    out = run_action(f"def execute_action(context):\n    return {call}\n")
    assert out.error["type"] == "exception"
    assert out.error["message"].startswith(expected) or expected in out.error["message"]
    assert out.result["effects"] == []


@pytest.mark.parametrize(
    "call",
    [
        "get_conversation_metadata(context, 'k')",
        "set_conversation_metadata(context, 'k', 1)",
        "delete_conversation_metadata(context, 'k')",
        "add_conversation_tag(context, 't')",
        "add_conversation_event(context, 'e')",
        "hand_off_conversation(context)",
        "get_ab_test_variant(context, 't', ['a', 'b'])",
    ],
)
def test_conversation_helpers_need_a_conversation(call: str) -> None:
    out = run_action(f"def execute_action(context):\n    return {call}\n", conversation_data=None)
    helper = call.split("(")[0]
    assert out.error["message"] == (
        f"ValueError: {helper}: no conversation: this action was called without a conversationId"
    )


def expected_variant(conversation_id: str, test_name: str, variants: list[str]) -> str:
    digest = hashlib.sha256(f"{conversation_id}:{test_name}".encode()).hexdigest()
    return variants[int(digest, 16) % len(variants)]


def test_ab_test_variant_is_deterministic_and_recorded() -> None:
    code = """
        def execute_action(context):
            first = get_ab_test_variant(context, "checkout", ["a", "b", "c"])
            again = get_ab_test_variant(context, "checkout", ["a", "b", "c"])
            return [first, again]
        """
    variant = expected_variant("conv-42", "checkout", ["a", "b", "c"])
    for _ in range(2):
        out = run_action(code, conversation_data=conversation("conv-42"))
        assert out.output == [variant, variant]
        assert out.result["effects"] == [
            {"kind": "set_metadata", "key": "ab_test.checkout", "value": variant}
        ]


def test_ab_test_variant_is_sticky() -> None:
    code = """
        def execute_action(context):
            return get_ab_test_variant(context, "checkout", ["a", "b", "c"])
        """
    metadata = {"ab_test.checkout": "c"}
    assert expected_variant("conv-1", "checkout", ["a", "b", "c"]) != "c"
    out = run_action(code, conversation_data=conversation("conv-1", metadata))
    assert out.output == "c"
    assert out.result["effects"] == []


def test_ab_test_variant_repicks_when_the_stored_one_is_not_offered() -> None:
    code = """
        def execute_action(context):
            return get_ab_test_variant(context, "checkout", ["x", "y"])
        """
    out = run_action(code, conversation_data=conversation("conv-1", {"ab_test.checkout": "c"}))
    assert out.output == expected_variant("conv-1", "checkout", ["x", "y"])
    assert out.result["effects"] == [
        {"kind": "set_metadata", "key": "ab_test.checkout", "value": out.output}
    ]


def test_ab_test_variant_spreads_conversations_evenly() -> None:
    code = """
        def execute_action(context):
            return get_ab_test_variant(context, "banner", ["control", "treatment"])
        """
    picks = [
        run_action(code, conversation_data=conversation(f"conv-{i}")).output for i in range(2000)
    ]
    share = picks.count("control") / len(picks)
    assert 0.45 <= share <= 0.55
    assert set(picks) == {"control", "treatment"}


def test_ab_test_variant_reads_its_own_pending_choice_through_metadata() -> None:
    out = run_action(
        """
        def execute_action(context):
            variant = get_ab_test_variant(context, "t", ["a", "b"])
            return variant == get_conversation_metadata(context, "ab_test.t")
        """
    )
    assert out.output is True


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("is_holiday('US', check_date='2024-07-04')", True),
        ("is_holiday('US', check_date='2024-07-05')", False),
        ("is_holiday('us', check_date=date(2024, 12, 25))", True),
        ("is_holiday('US', check_date=datetime(2024, 7, 4, 15, 30))", True),
        ("is_holiday('US', check_date='2024-07-04T09:00:00+00:00')", True),
        ("is_holiday('DE', state='BY', check_date='2024-01-06')", True),
        ("is_holiday('DE', state='BE', check_date='2024-01-06')", False),
        ("is_holiday('DE', region='by', check_date='2024-01-06')", True),
        ("isinstance(is_holiday('US'), bool)", True),
    ],
)
def test_is_holiday(call: str, expected: bool) -> None:
    out = run_action(
        f"from datetime import date, datetime\ndef execute_action(context):\n    return {call}\n",
        conversation_data=None,
    )
    assert out.output is expected


def test_get_secret_reads_only_declared_available_secrets() -> None:
    code = """
    def execute_action(context):
        out = {"value": get_secret("erpKey")}
        for name in ("missing", "unset"):
            try:
                get_secret(name)
            except SecretError as exc:
                out[name] = str(exc)
        return out
    """
    out = run_action(code, secrets={"erpKey": "s3cret-value", "unset": None}).output
    assert out["value"] == "s3cret-value"
    assert out["missing"] == (
        "get_secret('missing'): this action does not declare that secret "
        "(declared: erpKey, unset); add it to the action's secrets"
    )
    assert "the secret is not available" in out["unset"]
    bare = run_action("def execute_action(context):\n    return get_secret('x')\n").result
    assert bare["error"]["type"] == "exception"
    assert "declared: none" in bare["error"]["message"]


def test_an_envelope_with_malformed_secrets_is_refused() -> None:
    from tests.runtime.harness import envelope_line, run_stdin

    refused = run_stdin(envelope_line("def execute_action(c):\n    return 1\n", secrets=[1]))
    assert refused.exit_code == 2 and "envelope.secrets" in refused.logs
