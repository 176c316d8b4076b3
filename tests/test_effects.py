from __future__ import annotations

from datetime import UTC, datetime

import pytest

from actioncage.models import Conversation, EffectKind
from actioncage.runs.effects import EffectsInvalid, apply_effects, parse_effects


def _conversation() -> Conversation:
    ts = datetime.now(UTC)
    return Conversation("c1", "o", {"keep": 1, "drop": 2}, ("old",), (), (), False, None, ts, ts)


def test_effects_apply_in_order() -> None:
    effects = parse_effects(
        [
            {"kind": "set_metadata", "key": "a", "value": {"x": [1]}},
            {"kind": "delete_metadata", "key": "drop"},
            {"kind": "add_tag", "tag": "old"},
            {"kind": "add_tag", "tag": "new"},
            {"kind": "add_event", "event": {"type": "refund"}},
            {"kind": "hand_off", "reason": "angry"},
        ]
    )
    assert [e.kind for e in effects][:2] == [EffectKind.SET_METADATA, EffectKind.DELETE_METADATA]
    after = apply_effects(_conversation(), effects)
    assert after.metadata == {"keep": 1, "a": {"x": [1]}}
    assert after.tags == ("old", "new")
    assert after.events == ({"type": "refund"},)
    assert (after.handed_off, after.hand_off_reason) == (True, "angry")


@pytest.mark.parametrize(
    "raw",
    [
        "nope",
        [{"kind": "rm_rf"}],
        [{"kind": "add_tag"}],
        [{"kind": "add_tag", "tag": "x", "extra": 1}],
        [{"kind": "add_tag", "tag": ""}],
        [{"kind": "set_metadata", "key": "k", "value": "x" * 70_000}],
        [{"kind": "add_tag", "tag": f"t{i}"} for i in range(101)],
        [{"kind": "add_event", "event": 5}],
        [{"kind": "hand_off", "reason": 7}],
    ],
)
def test_untrusted_effects_that_break_the_contract_are_refused(raw: object) -> None:
    with pytest.raises(EffectsInvalid):
        parse_effects(raw)
