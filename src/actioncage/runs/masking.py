"""runs/: masking a run's secret values as ``***`` in everything it leaves (logs, output, error
message and traceback, effects, and so the run record and its callback), whether a value
appears as is or base64-, hex-, URL- or JSON-string-encoded."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"


def _base64_cores(raw: bytes) -> set[str]:
    """The part of a base64 encoding that depends only on ``raw``, at each of the three
    alignments ``raw`` can have inside longer encoded data (``user:secret`` in Basic auth),
    in the standard and URL-safe alphabets."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = -(-offset * 8 // 6)  # the first character past the prefix's bits
        end = (offset + len(raw)) * 8 // 6  # the last character holding only raw's bits
        core = encoded[start:end]
        cores.update({core, core.replace("+", "-").replace("/", "_")})
    return cores


def forms(value: str) -> set[str]:
    """Every encoding of ``value`` that is masked."""
    raw = value.encode()
    found = {
        value,
        raw.hex(),
        raw.hex().upper(),
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    found |= _base64_cores(raw)
    return {f for f in found if len(f) >= 4}


class Masker:
    """Replaces the forms of some secret values. With no values it changes nothing."""

    def __init__(self, values: Iterable[str]) -> None:
        every = set().union(*(forms(v) for v in values if v))
        # Longest first, so a value is masked whole before any shorter form inside it.
        self._pattern = (
            re.compile("|".join(re.escape(f) for f in sorted(every, key=len, reverse=True)))
            if every
            else None
        )

    def text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """A JSON value with every string (and object key) masked."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value
