"""The helper globals: they record effects and ask the control plane for host calls over stdio."""

from __future__ import annotations

from actioncage_runtime import jsoncodec
from actioncage_runtime.guards import JSONValueError, NotJSONError, SizeLimitError, dump_json

# Every sandbox pays for the runtime's imports before it can run anything, so modules only some
# runs need (copy, datetime, hashlib) are imported where they are used, and names used only in
# annotations are imported for type checkers alone.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable
    from typing import Any, TextIO

MAX_KEY_CHARS = 256
MAX_TAG_CHARS = 128
MAX_EVENT_BYTES = 64 * 1024
MAX_REASON_CHARS = 2048
MAX_TEST_NAME_CHARS = 200
MAX_CHOICES = 100
MAX_CHOICE_CHARS = 256
MAX_PROMPT_CHARS = 32 * 1024
MAX_SHEET_ID_CHARS = 256
MAX_SHEET_ROW_BYTES = 64 * 1024
MAX_REPLY_CHARS = 1024 * 1024
NO_CONVERSATION = "no conversation: this action was called without a conversationId"

HELPER_NAMES = (
    "get_conversation_metadata",
    "set_conversation_metadata",
    "delete_conversation_metadata",
    "add_conversation_tag",
    "add_conversation_event",
    "hand_off_conversation",
    "get_ab_test_variant",
    "is_holiday",
    "llm_classify_binary",
    "llm_classify_category",
    "add_google_sheets_row",
    "get_secret",
)

_LIMIT_FIELDS = {
    "max_output_bytes": "maxOutputBytes",
    "max_host_calls": "maxHostCalls",
    "max_tags": "maxTags",
    "max_events": "maxEvents",
    "max_metadata_value_bytes": "maxMetadataValueBytes",
}


class HostCallError(Exception):
    """A host call (LLM, Google Sheets) failed and the script gave no fallback."""


class SecretError(Exception):
    """get_secret asked for a secret the action does not declare, or one not available."""


class Limits:
    """The per-run limits from the envelope's ``limits`` object."""

    __slots__ = tuple(_LIMIT_FIELDS)

    def __init__(
        self,
        max_output_bytes: int,
        max_host_calls: int,
        max_tags: int,
        max_events: int,
        max_metadata_value_bytes: int,
    ) -> None:
        self.max_output_bytes = max_output_bytes
        self.max_host_calls = max_host_calls
        self.max_tags = max_tags
        self.max_events = max_events
        self.max_metadata_value_bytes = max_metadata_value_bytes

    @classmethod
    def from_json(cls, raw: Any) -> Limits:
        """Parse the envelope's ``limits``; raises ValueError naming the missing or bad field."""
        if not isinstance(raw, dict):
            raise ValueError("limits must be an object")
        values: dict[str, int] = {}
        for field, wire in _LIMIT_FIELDS.items():
            value = raw.get(wire)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"limits.{wire} must be a non-negative integer, got {value!r}")
            values[field] = value
        return cls(**values)


def write_frame(out: TextIO, line: str) -> None:
    """Write one serialised frame and its newline, and flush so the control plane sees it now."""
    out.write(line + "\n")
    out.flush()


class HostChannel:
    """The stdio channel for host calls: a host_call frame out, then its host_result line in."""

    def __init__(self, replies: TextIO, frames_out: TextIO) -> None:
        self._replies = replies
        self._frames_out = frames_out

    def call(
        self, call_id: int, name: str, args: dict[str, Any], is_valid: Callable[[Any], bool]
    ) -> tuple[bool, Any]:
        """Ask the control plane and wait for its reply.

        Returns ``(True, value)`` for a well-formed ok reply whose value passes ``is_valid``,
        else ``(False, message)``: a failure reply, a malformed reply and a closed channel are
        all failures.
        """
        frame = {"type": "host_call", "id": call_id, "name": name, "args": args}
        write_frame(self._frames_out, jsoncodec.dumps(frame))
        line = self._read_line()
        if line is None:
            return False, "the control plane sent no reply"
        try:
            reply = jsoncodec.loads(line)
        except (ValueError, RecursionError):
            return False, "malformed reply from the control plane"
        if (
            not isinstance(reply, dict)
            or reply.get("type") != "host_result"
            or type(reply.get("id")) is not int
            or reply["id"] != call_id
            or not isinstance(reply.get("ok"), bool)
        ):
            return False, "malformed reply from the control plane"
        if not reply["ok"]:
            error = reply.get("error")
            return False, error if isinstance(error, str) and error else "host call failed"
        value = reply.get("value")
        if not is_valid(value):
            return False, f"unexpected reply value {_short_repr(value)}"
        return True, value

    def _read_line(self) -> str | None:
        """The next reply line, None at end of input, or "" for a line too long to be a reply."""
        line = self._replies.readline(MAX_REPLY_CHARS + 1)
        if not line:
            return None
        if len(line) > MAX_REPLY_CHARS:
            # Skip the rest of the oversized line so the next reply starts in the right place.
            while line and not line.endswith("\n"):
                line = self._replies.readline(MAX_REPLY_CHARS)
            return ""
        return line


class Helpers:
    """The helper functions of one run, sharing its pending effects and working metadata.

    ``effects`` lists what the helpers recorded, in order, as the contract's effect objects.
    Reads see the run's own pending writes: ``_metadata`` is a working copy of the
    conversation's metadata that the set/delete helpers update.
    """

    def __init__(
        self,
        context: dict[str, Any],
        limits: Limits,
        channel: HostChannel,
        secrets: dict[str, str | None] | None = None,
    ) -> None:
        self.effects: list[dict[str, Any]] = []
        # Only the action's declared secrets of its own org (None: declared, not available).
        self._secrets = dict(secrets or {})
        self._context = context
        self._limits = limits
        self._channel = channel
        self._conversation_id: str | None = None
        self._metadata: dict[str, Any] = {}
        conversation = context.get("conversation")
        if isinstance(conversation, dict):
            self._conversation_id = str(conversation.get("id"))
            metadata = conversation.get("metadata")
            if isinstance(metadata, dict):
                import copy

                self._metadata = copy.deepcopy(metadata)
        self._tags: set[str] = set()
        self._event_count = 0
        self._host_call_count = 0

    def script_globals(self) -> dict[str, Any]:
        """The names injected into the script: the helpers and HostCallError."""
        names: dict[str, Any] = {name: getattr(self, name) for name in HELPER_NAMES}
        names["HostCallError"] = HostCallError
        names["SecretError"] = SecretError
        return names

    # Secrets

    def get_secret(self, name: str) -> str:
        """Return the value of the org's secret ``name``, which the action must declare.

        Raises SecretError when it is not declared or not set; the value is masked as
        ``***`` in everything the run leaves (logs, output, errors, effects).
        """
        if not isinstance(name, str):
            raise TypeError(f"get_secret: name must be a string, not {_type(name)}")
        if name not in self._secrets:
            declared = ", ".join(sorted(self._secrets)) or "none"
            raise SecretError(
                f"get_secret({name!r}): this action does not declare that secret "
                f"(declared: {declared}); add it to the action's secrets"
            )
        value = self._secrets[name]
        if value is None:
            raise SecretError(
                f"get_secret({name!r}): the secret is not available: the org has not set it "
                "(or the server has no ACTIONCAGE_SECRETS_KEY)"
            )
        return value

    # Conversation data

    def get_conversation_metadata(self, context: dict[str, Any], key: str) -> Any:
        """Return a copy of the metadata value under ``key``, or None when there is none.

        Sees this run's own earlier set/delete calls. Raises TypeError/ValueError for bad
        arguments or when the action was called without a conversation.
        """
        helper = "get_conversation_metadata"
        self._require_conversation(helper, context)
        _check_str(helper, "key", key, MAX_KEY_CHARS)
        import copy

        return copy.deepcopy(self._metadata.get(key))

    def set_conversation_metadata(self, context: dict[str, Any], key: str, value: Any) -> None:
        """Record setting metadata ``key`` to a JSON ``value``; applied if the run succeeds.

        Raises TypeError/ValueError for bad arguments, a value that is not JSON or is larger
        than the limit, or when the action was called without a conversation.
        """
        helper = "set_conversation_metadata"
        self._require_conversation(helper, context)
        _check_str(helper, "key", key, MAX_KEY_CHARS)
        stored = _json_copy(helper, "value", value, self._limits.max_metadata_value_bytes)
        self._record_set(key, stored)

    def delete_conversation_metadata(self, context: dict[str, Any], key: str) -> None:
        """Record deleting metadata ``key``; applied if the run succeeds.

        Raises TypeError/ValueError for bad arguments or without a conversation.
        """
        helper = "delete_conversation_metadata"
        self._require_conversation(helper, context)
        _check_str(helper, "key", key, MAX_KEY_CHARS)
        self._metadata.pop(key, None)
        self.effects.append({"kind": "delete_metadata", "key": key})

    def add_conversation_tag(self, context: dict[str, Any], tag: str) -> None:
        """Record adding ``tag`` to the conversation; adding the same tag again does nothing.

        Raises TypeError/ValueError for bad arguments, past the per-run tag limit, or without
        a conversation.
        """
        helper = "add_conversation_tag"
        self._require_conversation(helper, context)
        _check_str(helper, "tag", tag, MAX_TAG_CHARS)
        if tag in self._tags:
            return
        if len(self._tags) >= self._limits.max_tags:
            raise ValueError(f"{helper}: at most {self._limits.max_tags} tags per run")
        self._tags.add(tag)
        self.effects.append({"kind": "add_tag", "tag": tag})

    def add_conversation_event(self, context: dict[str, Any], event: str | dict[str, Any]) -> None:
        """Record an event (a str or a JSON object) in the conversation timeline.

        Raises TypeError/ValueError for bad arguments, an event over 64 KiB serialised, past
        the per-run event limit, or without a conversation.
        """
        helper = "add_conversation_event"
        self._require_conversation(helper, context)
        if not isinstance(event, str | dict):
            raise TypeError(f"{helper}: event must be a str or a dict, not {type(event).__name__}")
        if self._event_count >= self._limits.max_events:
            raise ValueError(f"{helper}: at most {self._limits.max_events} events per run")
        stored = _json_copy(helper, "event", event, MAX_EVENT_BYTES)
        self._event_count += 1
        self.effects.append({"kind": "add_event", "event": stored})

    def hand_off_conversation(self, context: dict[str, Any], reason: str | None = None) -> None:
        """Record handing the conversation off to a human agent, with an optional reason.

        Raises TypeError/ValueError for bad arguments or without a conversation.
        """
        helper = "hand_off_conversation"
        self._require_conversation(helper, context)
        if reason is not None:
            _check_str(helper, "reason", reason, MAX_REASON_CHARS, min_chars=0)
        self.effects.append({"kind": "hand_off", "reason": reason})

    # Experimentation

    def get_ab_test_variant(
        self, context: dict[str, Any], test_name: str, possible_variants: list[str]
    ) -> str:
        """Return this conversation's sticky variant of A/B test ``test_name``.

        A variant already stored under metadata key ``ab_test.<test_name>`` is kept; otherwise
        one is picked from a hash of the conversation id and test name (so conversations spread
        evenly) and recorded as a set_metadata effect. Raises TypeError/ValueError for bad
        arguments or without a conversation.
        """
        helper = "get_ab_test_variant"
        self._require_conversation(helper, context)
        _check_str(helper, "test_name", test_name, MAX_TEST_NAME_CHARS)
        variants = _check_choices(helper, "possible_variants", possible_variants)
        key = f"ab_test.{test_name}"
        current = self._metadata.get(key)
        if isinstance(current, str) and current in variants:
            return current
        seed = f"{self._conversation_id}:{test_name}".encode("utf-8", "surrogatepass")
        import hashlib

        variant = variants[int(hashlib.sha256(seed).hexdigest(), 16) % len(variants)]
        self._record_set(key, variant)
        return variant

    # Utilities

    def is_holiday(
        self,
        country: str,
        state: str | None = None,
        region: str | None = None,
        check_date: dt.date | str | None = None,
    ) -> bool:
        """Return whether ``check_date`` (default today, UTC) is a public holiday.

        ``country`` is an ISO 3166 code such as "US"; ``state`` or ``region`` names a
        subdivision such as "CA". ``check_date`` is a date, a datetime or an ISO date string.
        Raises ValueError for an unknown country or subdivision or a bad date, and TypeError for
        arguments of the wrong type.
        """
        helper = "is_holiday"
        _check_str(helper, "country", country, 16)
        for name, value in (("state", state), ("region", region)):
            if value is not None:
                _check_str(helper, name, value, 64)
        day = _parse_date(helper, check_date)
        subdiv = state or region

        import holidays  # Imported on first use: it is slow to import and most runs skip it.

        code = country.strip().upper()
        try:
            calendar = holidays.country_holidays(code, years=day.year)
        except NotImplementedError:
            raise ValueError(f"{helper}: unknown country {country!r}") from None
        if subdiv:
            for candidate in dict.fromkeys((subdiv, subdiv.strip().upper())):
                try:
                    calendar = holidays.country_holidays(code, subdiv=candidate, years=day.year)
                    break
                except NotImplementedError:
                    continue
            else:
                raise ValueError(f"{helper}: country {code!r} has no subdivision {subdiv!r}")
        return day in calendar

    # Host calls

    def llm_classify_binary(self, prompt: str, input: str, fallback: bool | None = None) -> bool:
        """Ask the control plane's LLM whether ``input`` matches ``prompt``; returns a bool.

        On failure returns ``fallback`` when given, else raises HostCallError; past the
        per-run host-call limit always raises HostCallError. Raises TypeError/ValueError for
        bad arguments.
        """
        helper = "llm_classify_binary"
        _check_str(helper, "prompt", prompt, MAX_PROMPT_CHARS)
        _check_str(helper, "input", input, MAX_PROMPT_CHARS, min_chars=0)
        if fallback is not None and not isinstance(fallback, bool):
            raise TypeError(f"{helper}: fallback must be a bool or None, not {_type(fallback)}")
        args = {"prompt": prompt, "input": input}
        result = self._host_call(helper, args, fallback, lambda value: isinstance(value, bool))
        return bool(result)

    def llm_classify_category(
        self, prompt: str, input: str, options: list[str], fallback: str | None = None
    ) -> str:
        """Ask the control plane's LLM which of ``options`` fits ``input``; returns one of them.

        On failure returns ``fallback`` when given, else raises HostCallError; past the
        per-run host-call limit always raises HostCallError. Raises TypeError/ValueError for
        bad arguments.
        """
        helper = "llm_classify_category"
        _check_str(helper, "prompt", prompt, MAX_PROMPT_CHARS)
        _check_str(helper, "input", input, MAX_PROMPT_CHARS, min_chars=0)
        choices = _check_choices(helper, "options", options)
        if fallback is not None and not isinstance(fallback, str):
            raise TypeError(f"{helper}: fallback must be a str or None, not {_type(fallback)}")
        args = {"prompt": prompt, "input": input, "options": choices}
        result = self._host_call(
            helper, args, fallback, lambda value: isinstance(value, str) and value in choices
        )
        return str(result)

    def add_google_sheets_row(self, sheet_id: str, data: list[Any] | dict[str, Any]) -> Any:
        """Append a row to a Google Sheet through the control plane; returns the host's reply.

        ``data`` is a list of cells or a dict of column name to cell; cells are str, int,
        float, bool or None. Raises HostCallError when the call fails or past the per-run
        host-call limit, and TypeError/ValueError for bad arguments.
        """
        helper = "add_google_sheets_row"
        _check_str(helper, "sheet_id", sheet_id, MAX_SHEET_ID_CHARS)
        if isinstance(data, dict):
            for column, cell in data.items():
                if not isinstance(column, str):
                    raise TypeError(f"{helper}: data keys must be str, not {_type(column)}")
                _check_cell(helper, f"data[{column!r}]", cell)
        elif isinstance(data, list | tuple):
            for index, cell in enumerate(data):
                _check_cell(helper, f"data[{index}]", cell)
        else:
            raise TypeError(f"{helper}: data must be a list or a dict, not {_type(data)}")
        if not data:
            raise ValueError(f"{helper}: data must not be empty")
        row = _json_copy(helper, "data", data, MAX_SHEET_ROW_BYTES)
        return self._host_call(helper, {"sheetId": sheet_id, "data": row}, None, lambda _: True)

    # Internals

    def _require_conversation(self, helper: str, context: Any) -> None:
        if context is not self._context:
            raise TypeError(f"{helper}: context must be the context passed to execute_action")
        if self._conversation_id is None:
            raise ValueError(f"{helper}: {NO_CONVERSATION}")

    def _record_set(self, key: str, value: Any) -> None:
        self._metadata[key] = value
        self.effects.append({"kind": "set_metadata", "key": key, "value": value})

    def _host_call(
        self, helper: str, args: dict[str, Any], fallback: Any, is_valid: Callable[[Any], bool]
    ) -> Any:
        if self._host_call_count >= self._limits.max_host_calls:
            raise HostCallError(
                f"{helper}: host call limit reached ({self._limits.max_host_calls} per run)"
            )
        self._host_call_count += 1
        ok, result = self._channel.call(self._host_call_count, helper, args, is_valid)
        if ok:
            return result
        if fallback is not None:
            return fallback
        raise HostCallError(f"{helper}: {result}")


def _type(value: Any) -> str:
    return type(value).__name__


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_str(helper: str, name: str, value: Any, max_chars: int, min_chars: int = 1) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{helper}: {name} must be a str, not {_type(value)}")
    if not min_chars <= len(value) <= max_chars:
        wanted = f"at most {max_chars}" if min_chars == 0 else f"{min_chars}-{max_chars}"
        raise ValueError(f"{helper}: {name} must be {wanted} characters, got {len(value)}")
    return value


def _check_choices(helper: str, name: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"{helper}: {name} must be a list of str, not {_type(value)}")
    if not 1 <= len(value) <= MAX_CHOICES:
        raise ValueError(f"{helper}: {name} must have 1-{MAX_CHOICES} items, got {len(value)}")
    for index, item in enumerate(value):
        _check_str(helper, f"{name}[{index}]", item, MAX_CHOICE_CHARS)
    return list(value)


def _check_cell(helper: str, name: str, cell: Any) -> None:
    if not (cell is None or isinstance(cell, str | int | float)):
        raise TypeError(
            f"{helper}: {name} must be a str, int, float, bool or None, not {_type(cell)}"
        )


def _json_copy(helper: str, name: str, value: Any, max_bytes: int) -> Any:
    """A deep copy of ``value`` as the control plane will see it; raises plain TypeError or
    ValueError so the script's traceback names no runtime class."""
    try:
        text = dump_json(value, f"{helper}: {name}", max_bytes)
    except NotJSONError as exc:
        raise TypeError(str(exc)) from None
    except (JSONValueError, SizeLimitError) as exc:
        raise ValueError(str(exc)) from None
    return jsoncodec.loads(text)


def _parse_date(helper: str, check_date: Any) -> dt.date:
    import datetime as dt

    if check_date is None:
        return dt.date.today()
    if isinstance(check_date, dt.datetime):
        return check_date.date()
    if isinstance(check_date, dt.date):
        return check_date
    if isinstance(check_date, str):
        try:
            return dt.datetime.fromisoformat(check_date).date()
        except ValueError:
            raise ValueError(
                f"{helper}: check_date {check_date!r} is not an ISO date like 2024-07-04"
            ) from None
    raise TypeError(
        f"{helper}: check_date must be a date, a datetime or an ISO date string, "
        f"not {_type(check_date)}"
    )
