"""Restricted mode: compile and run the script with RestrictedPython and an import allowlist.

Defence in depth on top of the container, for orgs the operator marks ``restricted``: no
names or attributes starting with ``_``, no exec/eval/compile/open, no imports outside the
allowlist the control plane sends in the envelope, and no reaching a module outside it
through an attribute of an allowed one.
"""

from __future__ import annotations

import builtins
import operator
import types
from collections.abc import Callable
from typing import Any

_EXTRA_BUILTINS = (
    "dict",
    "list",
    "tuple",
    "set",
    "frozenset",
    "sorted",
    "min",
    "max",
    "sum",
    "enumerate",
    "zip",
    "map",
    "filter",
    "any",
    "all",
    "reversed",
    "next",
    "iter",
    "isinstance",
    "format",
)
_INPLACE = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "|=": operator.ior,
    "^=": operator.ixor,
}


class RestrictedCodeError(Exception):
    """The script uses a construct restricted mode forbids; the message lists each by line."""


class _PrintToLogs:
    """RestrictedPython's ``_print_``: print goes to the logs, as in normal mode."""

    def __init__(self, _getattr_: Any = None) -> None:
        pass

    def _call_print(self, *objects: Any, **kwargs: Any) -> None:
        kwargs.pop("file", None)
        print(*objects, **kwargs)

    def __call__(self) -> str:
        return ""


def _allowed(name: str, allowlist: frozenset[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowlist)


def compile_restricted(code: str, filename: str) -> Any:
    """The code object; raises RestrictedCodeError listing every forbidden construct."""
    from RestrictedPython import compile_restricted_exec

    result = compile_restricted_exec(code, filename=filename)
    if result.errors or result.code is None:
        raise RestrictedCodeError("restricted mode: " + "; ".join(result.errors))
    return result.code


def restricted_globals(allowlist: frozenset[str]) -> dict[str, Any]:
    """The globals a restricted script runs with (the helpers are added by the caller)."""
    from RestrictedPython import limited_builtins, safe_builtins, utility_builtins
    from RestrictedPython.Eval import default_guarded_getitem, default_guarded_getiter
    from RestrictedPython.Guards import (
        full_write_guard,
        guarded_iter_unpack_sequence,
        guarded_unpack_sequence,
        safer_getattr,
    )

    def guarded_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if level != 0 or not _allowed(name, allowlist):
            raise ImportError(f"restricted mode: import of {name!r} is not allowed")
        module = builtins.__import__(name, globals, locals, fromlist, level)
        for item in fromlist or ():
            value = getattr(module, item, None)
            if item.startswith("_") or (
                isinstance(value, types.ModuleType) and not _allowed(value.__name__, allowlist)
            ):
                raise ImportError(f"restricted mode: import of {name}.{item} is not allowed")
        return module

    def guarded_getattr(obj: Any, name: str, default: Any = None) -> Any:
        value = safer_getattr(obj, name, default)
        if isinstance(value, types.ModuleType) and not _allowed(value.__name__, allowlist):
            raise AttributeError(f"restricted mode: module {value.__name__!r} is not allowed")
        return value

    def inplacevar(op: str, x: Any, y: Any) -> Any:
        function: Callable[[Any, Any], Any] | None = _INPLACE.get(op)
        if function is None:
            raise SyntaxError(f"restricted mode: {op} is not supported")
        return function(x, y)

    script_builtins = {**safe_builtins, **limited_builtins, **utility_builtins}
    script_builtins.update({name: getattr(builtins, name) for name in _EXTRA_BUILTINS})
    script_builtins["__import__"] = guarded_import
    script_builtins["_getattr_"] = guarded_getattr
    return {
        "__builtins__": script_builtins,
        "_getattr_": guarded_getattr,
        "_getitem_": default_guarded_getitem,
        "_getiter_": default_guarded_getiter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": full_write_guard,
        "_print_": _PrintToLogs,
        "_inplacevar_": inplacevar,
        "__metaclass__": type,
    }
