"""runs/: Validates the effects a sandbox reports and applies them to a Conversation. Pure."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from actioncage.models import Conversation, Effect, EffectKind
from actioncage.sandbox.envelope import (
    MAX_EVENT_BYTES,
    MAX_EVENTS_PER_RUN,
    MAX_METADATA_VALUE_BYTES,
    MAX_TAGS_PER_RUN,
)

MAX_EFFECTS_PER_RUN = 1000
_FIELDS: dict[EffectKind, set[str]] = {
    EffectKind.SET_METADATA: {"key", "value"},
    EffectKind.DELETE_METADATA: {"key"},
    EffectKind.ADD_TAG: {"tag"},
    EffectKind.ADD_EVENT: {"event"},
    EffectKind.HAND_OFF: {"reason"},
}


class EffectsInvalid(ValueError):
    """The sandbox reported effects that break the contract (its output is untrusted)."""


def _json_size(value: Any) -> int:
    try:
        return len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise EffectsInvalid(f"value is not JSON: {exc}") from exc


def _text(value: Any, name: str, max_len: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise EffectsInvalid(f"{name} must be a string of 1-{max_len} characters")
    return value


def parse_effects(raw: Any) -> tuple[Effect, ...]:
    """The validated effects from a result frame. Raises EffectsInvalid naming the problem."""
    if not isinstance(raw, list):
        raise EffectsInvalid("effects must be a list")
    if len(raw) > MAX_EFFECTS_PER_RUN:
        raise EffectsInvalid(f"at most {MAX_EFFECTS_PER_RUN} effects per run")
    effects = []
    counts = {EffectKind.ADD_TAG: 0, EffectKind.ADD_EVENT: 0}
    for i, item in enumerate(raw):
        where = f"effects[{i}]"
        if not isinstance(item, dict):
            raise EffectsInvalid(f"{where} must be an object")
        try:
            kind = EffectKind(str(item.get("kind")))
        except ValueError as exc:
            raise EffectsInvalid(f"{where}: unknown kind {item.get('kind')!r}") from exc
        data = {k: v for k, v in item.items() if k != "kind"}
        if set(data) != _FIELDS[kind]:
            raise EffectsInvalid(f"{where}: {kind} takes exactly {sorted(_FIELDS[kind])}")
        if "key" in data:
            _text(data["key"], f"{where}.key", 256)
        if kind is EffectKind.SET_METADATA and _json_size(data["value"]) > MAX_METADATA_VALUE_BYTES:
            raise EffectsInvalid(f"{where}.value is over {MAX_METADATA_VALUE_BYTES} bytes")
        if kind is EffectKind.ADD_TAG:
            _text(data["tag"], f"{where}.tag", 128)
        if kind is EffectKind.ADD_EVENT:
            event = data["event"]
            if not isinstance(event, str | dict) or _json_size(event) > MAX_EVENT_BYTES:
                raise EffectsInvalid(
                    f"{where}.event must be a string or object of at most {MAX_EVENT_BYTES} bytes"
                )
        if kind is EffectKind.HAND_OFF and data["reason"] is not None:
            _text(data["reason"], f"{where}.reason", 2048)
        if kind in counts:
            counts[kind] += 1
        effects.append(Effect(kind=kind, data=data))
    if counts[EffectKind.ADD_TAG] > MAX_TAGS_PER_RUN:
        raise EffectsInvalid(f"at most {MAX_TAGS_PER_RUN} tags per run")
    if counts[EffectKind.ADD_EVENT] > MAX_EVENTS_PER_RUN:
        raise EffectsInvalid(f"at most {MAX_EVENTS_PER_RUN} events per run")
    return tuple(effects)


def apply_effects(conversation: Conversation, effects: tuple[Effect, ...]) -> Conversation:
    """The conversation after ``effects``, in order. Tags stay unique."""
    metadata = dict(conversation.metadata)
    tags = list(conversation.tags)
    events = list(conversation.events)
    handed_off, reason = conversation.handed_off, conversation.hand_off_reason
    for effect in effects:
        data = effect.data
        if effect.kind is EffectKind.SET_METADATA:
            metadata[data["key"]] = data["value"]
        elif effect.kind is EffectKind.DELETE_METADATA:
            metadata.pop(data["key"], None)
        elif effect.kind is EffectKind.ADD_TAG:
            if data["tag"] not in tags:
                tags.append(data["tag"])
        elif effect.kind is EffectKind.ADD_EVENT:
            events.append(data["event"])
        elif effect.kind is EffectKind.HAND_OFF:
            handed_off, reason = True, data["reason"]
    return dataclasses.replace(
        conversation,
        metadata=metadata,
        tags=tuple(tags),
        events=tuple(events),
        handed_off=handed_off,
        hand_off_reason=reason,
    )
