"""Compact JSON in and out through the interpreter's C codec (``_json``), as json.loads and
json.dumps(separators=(",", ":")) do, without importing ``json``.

``json`` imports ``re``, and ``re`` imports ``enum``, ``functools`` and ``collections``:
about 3.5 ms of CPU that every fresh sandbox paid before it could run anything, whether or not
the script uses them. The C scanner and encoder are the ones json.loads and json.dumps use
themselves, so values, output and errors are the same; every error path goes through ``json``
itself (imported then), so its messages are too.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    from _json import encode_basestring_ascii as _ascii
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner
except ImportError:  # an interpreter without the accelerator: json's own pure-Python code
    _ascii = _make_encoder = _make_scanner = None  # type: ignore[assignment]

_WHITESPACE = " \t\n\r"


class _Decoding:
    """What the C scanner reads off json.JSONDecoder(): its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {
        "-Infinity": float("-inf"),
        "Infinity": float("inf"),
        "NaN": float("nan"),
    }.__getitem__


_scan = _make_scanner(_Decoding()) if _make_scanner is not None else None


def loads(text: str) -> Any:
    """json.loads(text). Raises what it raises (json.JSONDecodeError, a ValueError, and
    RecursionError)."""
    if _scan is not None:
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = _scan(text, start)
        except Exception:  # json says what is wrong below, in its own words (the scanner
            pass  # raises JSONDecodeError only once json.decoder is imported; else SystemError)
        else:
            if not text[end:].strip(_WHITESPACE):
                return value
    import json

    return json.loads(text)


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def dumps(value: Any, allow_nan: bool = True) -> str:
    """json.dumps(value, allow_nan=allow_nan, separators=(",", ":")): compact, ASCII only.
    Raises TypeError (not serialisable), ValueError (NaN or infinity without allow_nan,
    circular references) and RecursionError as it does."""
    if _make_encoder is None or _ascii is None:
        import json

        return json.dumps(value, allow_nan=allow_nan, separators=(",", ":"))
    if isinstance(value, str):
        return _ascii(value)
    encode = _make_encoder({}, _not_json, _ascii, None, ":", ",", False, False, allow_nan)
    return "".join(encode(value, 0))
