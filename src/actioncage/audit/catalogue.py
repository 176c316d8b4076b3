"""audit/: The self-audit runner; its attack scripts are data files: this module loads them.

Each attack is a script in ``attacks/`` (``<id>.py``, sent to the sandbox as it stands) and one
``[[attack]]`` entry in ``attacks/catalogue.toml``, in the order the audit runs them. An entry
names the attack's category, the outcome a reader should expect, the policy the action asks
for, and the check that decides "contained" from a closed vocabulary:

``no_leaks``
    ok, and the output is ``[]``: most attacks are probes that try many things and return the
    list of those that worked.
``ok``
    ok, whatever the output (the ``after`` check on the host does the work).
``error``
    an error; with ``error_types``, one of those types.
``output`` / ``not_output``
    ok with exactly ``output`` / anything but ok with exactly ``output``.
``count``
    ok with an integer output of at most ``at_most``; with ``error_types``, an error of one
    of those types is contained too (a fork bomb that meets the memory limit before the pid
    cap, as under gVisor).

Two modifiers apply to any check: ``effects_at_most`` bounds the effects the run recorded, and
``or_error = true`` also accepts any error. ``before`` names a script run first as a separate
action (isolation between runs); ``after = "no_survivors"`` looks on the host for a daemon
child after the run.
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from actioncage.errors import ConfigError
from actioncage.models import ErrorType, Policy, RunResult

# The audit org's egress ceiling: a reserved name, so allowing it can reach nothing real.
AUDIT_EGRESS_CEILING = ("*.audit.invalid",)
# A daemon child's command line carries this, so the host can look for survivors.
DAEMON_MARKER = "4242.4242"
_SURVIVOR_WAIT_S = 10.0
MANIFEST = "catalogue.toml"


@dataclass(frozen=True)
class Observed:
    """What a run looked like from outside, from a RunResult or its wire form."""

    status: str
    error_type: str | None
    output: Any
    logs: str
    effects: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_run(cls, run: RunResult) -> Observed:
        return cls(
            status=str(run.status),
            error_type=None if run.error is None else str(run.error.type),
            output=run.output,
            logs=run.logs,
            effects=[{"kind": str(e.kind), **e.data} for e in run.effects],
        )

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Observed:
        error = body.get("error") or {}
        return cls(
            status=body["status"],
            error_type=error.get("type"),
            output=body.get("output"),
            logs=body.get("logs", ""),
            effects=list(body.get("effects", [])),
        )

    def summary(self) -> str:
        if self.status == "ok":
            text = json.dumps(self.output, default=str)
            return "ok " + (text if len(text) <= 60 else text[:57] + "...")
        return f"error {self.error_type}"


Check = Callable[[Observed], bool]


@dataclass(frozen=True)
class Attack:
    """One attempt: a script, the policy it asks for, and the outcome that means "safe"."""

    name: str
    category: str
    expected: str
    code: str
    check: Check
    policy: Policy = Policy()
    needs_conversation: bool = False
    # Run first as a separate action (isolation between runs).
    before: str | None = None
    # Checked on the host after the run: True when nothing survived.
    after: Callable[[], bool] | None = None


def no_survivors(marker: str = DAEMON_MARKER, wait_s: float = _SURVIVOR_WAIT_S) -> bool:
    """True once no host process has ``marker`` in its command line (waits a little: the
    engine reaps a removed container's processes asynchronously). Vacuously true when the
    engine runs on another host."""
    deadline = time.monotonic() + wait_s
    needle = marker.encode()
    while True:
        found = any(needle in _cmdline(pid) for pid in os.listdir("/proc") if pid.isdigit())
        if not found:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _cmdline(pid: str) -> bytes:
    try:
        return Path("/proc", pid, "cmdline").read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def attacks_folder() -> Traversable:
    """The packaged ``attacks/`` folder (found through importlib.resources, so from a wheel)."""
    return resources.files("actioncage.audit") / "attacks"


def load_catalogue(folder: Traversable | None = None) -> tuple[Attack, ...]:
    """Every attack of ``folder``'s manifest (default: the packaged one), in manifest order.

    Raises ConfigError naming the attack and the field when an entry is malformed, a script
    is missing, or two entries share an id.
    """
    folder = attacks_folder() if folder is None else folder
    try:
        manifest = tomllib.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{MANIFEST}: {exc}") from exc
    entries = manifest.get("attack")
    if set(manifest) != {"attack"} or not isinstance(entries, list):
        raise ConfigError(f"{MANIFEST}: expected only [[attack]] entries")
    attacks = tuple(_attack(folder, entry, n) for n, entry in enumerate(entries, 1))
    seen: set[str] = set()
    for attack in attacks:
        if attack.name in seen:
            raise ConfigError(f"{MANIFEST}: attack id {attack.name!r} appears twice")
        seen.add(attack.name)
    return attacks


_ENTRY_KEYS = frozenset(
    {
        "id",
        "category",
        "expected",
        "check",
        "error_types",
        "output",
        "at_most",
        "effects_at_most",
        "or_error",
        "policy",
        "needs_conversation",
        "before",
        "after",
    }
)
# The parameters each check takes: (required, optional).
_CHECK_PARAMS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "no_leaks": (frozenset(), frozenset()),
    "ok": (frozenset(), frozenset()),
    "error": (frozenset(), frozenset({"error_types"})),
    "output": (frozenset({"output"}), frozenset()),
    "not_output": (frozenset({"output"}), frozenset()),
    "count": (frozenset({"at_most"}), frozenset({"error_types"})),
}
_CHECK_PARAM_KEYS = frozenset({"error_types", "output", "at_most"})
_AFTER: dict[str, Callable[[], bool]] = {"no_survivors": no_survivors}


def _attack(folder: Traversable, entry: Any, n: int) -> Attack:
    where = f"{MANIFEST}, attack {n}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: not a table")
    name = _take(entry, "id", str, where)
    where = f"{where} ({name})"
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
    code = _script(folder, f"{name}.py", where)
    before_file = _take(entry, "before", str, where, optional=True)
    after_name = _take(entry, "after", str, where, optional=True)
    after = None
    if after_name is not None:
        after = _AFTER.get(after_name)
        if after is None:
            raise ConfigError(f"{where}: after: unknown host check {after_name!r}")
        if DAEMON_MARKER not in code:
            raise ConfigError(f"{where}: after: the script never names {DAEMON_MARKER}")
    return Attack(
        name=name,
        category=_take(entry, "category", str, where),
        expected=_take(entry, "expected", str, where),
        code=code,
        check=_check(entry, where),
        policy=_policy(entry.get("policy", {}), where),
        needs_conversation=_take(entry, "needs_conversation", bool, where, optional=True) or False,
        before=None if before_file is None else _script(folder, before_file, where),
        after=after,
    )


def _take(entry: dict[str, Any], key: str, kind: type, where: str, optional: bool = False) -> Any:
    if key not in entry:
        if optional:
            return None
        raise ConfigError(f"{where}: missing {key}")
    value = entry[key]
    # bool is an int, and an int where a bool belongs is a slip worth naming.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be a {kind.__name__}, not {value!r}")
    return value


def _script(folder: Traversable, filename: str, where: str) -> str:
    try:
        return (folder / filename).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the script {filename}: {exc}") from exc


def _policy(table: Any, where: str) -> Policy:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: policy must be a table")
    unknown = sorted(set(table) - {"timeout_ms", "memory_mb", "cpus", "egress"})
    if unknown:
        raise ConfigError(f"{where}: policy: unknown field {unknown[0]!r}")
    egress = table.get("egress", [])
    if not isinstance(egress, list) or not all(isinstance(e, str) for e in egress):
        raise ConfigError(f"{where}: policy.egress must be a list of host patterns")
    # The runner sets this ceiling on the audit org; a pattern outside it would be clamped away
    # and the attack would test something else than it says.
    outside = [e for e in egress if e not in AUDIT_EGRESS_CEILING]
    if outside:
        raise ConfigError(f"{where}: policy.egress {outside[0]!r} is outside the audit ceiling")
    cpus = table.get("cpus")
    if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int | float)):
        raise ConfigError(f"{where}: policy.cpus must be a number, not {cpus!r}")
    return Policy(
        timeout_ms=_take(table, "timeout_ms", int, where, optional=True),
        memory_mb=_take(table, "memory_mb", int, where, optional=True),
        cpus=None if cpus is None else float(cpus),
        egress=tuple(egress),
    )


def _check(entry: dict[str, Any], where: str) -> Check:
    kind = _take(entry, "check", str, where)
    if kind not in _CHECK_PARAMS:
        raise ConfigError(f"{where}: unknown check {kind!r} (one of {', '.join(_CHECK_PARAMS)})")
    required, optional = _CHECK_PARAMS[kind]
    given = set(entry) & _CHECK_PARAM_KEYS
    missing, extra = sorted(required - given), sorted(given - required - optional)
    if missing:
        raise ConfigError(f"{where}: check {kind!r} needs {missing[0]}")
    if extra:
        raise ConfigError(f"{where}: check {kind!r} takes no {extra[0]}")
    base = _base_check(kind, entry, where)
    effects_at_most = _take(entry, "effects_at_most", int, where, optional=True)
    or_error = _take(entry, "or_error", bool, where, optional=True) or False

    def check(o: Observed) -> bool:
        if or_error and o.status == "error":
            return True
        return base(o) and (effects_at_most is None or len(o.effects) <= effects_at_most)

    return check


def _base_check(kind: str, entry: dict[str, Any], where: str) -> Check:
    if kind == "no_leaks":
        return lambda o: o.status == "ok" and o.output == []
    if kind == "ok":
        return lambda o: o.status == "ok"
    if kind == "error":
        types = _error_types(entry, where)
        return lambda o: o.status == "error" and (types is None or o.error_type in types)
    if kind == "count":
        at_most = _take(entry, "at_most", int, where)
        stopped_by = _error_types(entry, where) or frozenset()
        return lambda o: (
            (o.status == "ok" and isinstance(o.output, int) and o.output <= at_most)
            or (o.status == "error" and o.error_type in stopped_by)
        )
    want = entry["output"]
    if kind == "output":
        return lambda o: o.status == "ok" and o.output == want
    return lambda o: not (o.status == "ok" and o.output == want)  # not_output


def _error_types(entry: dict[str, Any], where: str) -> frozenset[str] | None:
    if "error_types" not in entry:
        return None
    names = _take(entry, "error_types", list, where)
    try:
        return frozenset(str(ErrorType(name)) for name in names)
    except ValueError as exc:
        raise ConfigError(f"{where}: error_types: {exc}") from exc


CATALOGUE: tuple[Attack, ...] = load_catalogue()
