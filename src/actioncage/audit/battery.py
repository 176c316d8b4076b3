"""audit/: The self-audit runner; its attack scripts are data files: this module runs them.

``actioncage audit`` runs every attack of the catalogue (``catalogue.py`` loads it from
``attacks/``) through the real executor and engine and prints a table; ``tests/security/`` runs
the same catalogue through HTTP.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any, TextIO

from actioncage.audit.catalogue import (
    AUDIT_EGRESS_CEILING,
    CATALOGUE,
    DAEMON_MARKER,
    Attack,
    Check,
    Observed,
    no_survivors,
)
from actioncage.models import OrgPolicy, Policy
from actioncage.settings import Settings

__all__ = [
    "AUDIT_EGRESS_CEILING",
    "CATALOGUE",
    "DAEMON_MARKER",
    "Attack",
    "AuditResult",
    "Check",
    "Observed",
    "no_survivors",
    "print_table",
    "run_battery",
]


@dataclass(frozen=True)
class AuditResult:
    attack: Attack
    observed: str
    passed: bool


def run_battery(settings: Settings, attacks: tuple[Attack, ...] = CATALOGUE) -> list[AuditResult]:
    """Run every attack through the real executor and engine, in a throwaway store.

    Each run gets the live settings (limits, runtime, image), so a configuration change shows
    here. Returns one AuditResult per attack.
    """
    from dataclasses import replace

    from actioncage.components import build
    from actioncage.models import FrontDoor, RunResult
    from actioncage.runs.service import Caller, ConversationRef, RunRequest
    from actioncage.store import repo

    results = []
    caller = Caller("audit", None, FrontDoor.AUDIT)
    with tempfile.TemporaryDirectory(prefix="actioncage-audit-") as tmp:
        settings = replace(
            settings, database_url=f"sqlite:///{tmp}/audit.db", api_key=None, pool_size=0
        )
        components = build(settings, role="audit")
        store, service = components.store, components.service
        with store.session() as s:
            repo.set_org_policy(s, "audit", OrgPolicy(egress=AUDIT_EGRESS_CEILING))
        try:
            for i, attack in enumerate(attacks):
                with store.session() as s:
                    conversation = (
                        repo.create_conversation(s, "audit", f"conv-{i}", [], {}, [])
                        if attack.needs_conversation
                        else None
                    )
                if attack.before is not None:
                    before = _action(store, f"{i}_before", attack.before)
                    service.run(RunRequest(caller, before, {}))
                action = _action(store, str(i), attack.code, attack.policy)
                ref = None if conversation is None else ConversationRef(conversation.id)
                run = service.run(RunRequest(caller, action, {}, ref))
                assert isinstance(run, RunResult)  # no waitMs: never pending
                observed = Observed.from_run(run)
                passed = attack.check(observed)
                note = observed.summary()
                if passed and attack.after is not None and not attack.after():
                    passed, note = False, note + "; something outlived the run"
                results.append(AuditResult(attack, note, passed))
        finally:
            components.close()
    return results


def _action(store: Any, suffix: str, code: str, policy: Policy | None = None) -> Any:
    from actioncage.store import repo

    with store.session() as s:
        return repo.create_action(
            s,
            "audit",
            "audit",
            {
                "name": f"audit_{suffix}",
                "type": "python",
                "code": code,
                "parameters": None,
                "description": None,
                "policy": policy or Policy(),
            },
        )


def print_table(results: list[AuditResult], out: TextIO) -> None:
    """The results as a fixed-width table, then a one-line verdict."""
    rows = [("attempt", "category", "expected", "observed", "result")]
    for r in results:
        rows.append(
            (
                r.attack.name,
                r.attack.category,
                r.attack.expected,
                r.observed,
                "pass" if r.passed else "FAIL",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    failed = sum(not r.passed for r in results)
    out.write(f"\n{len(results) - failed}/{len(results)} attempts contained")
    out.write(f"; {failed} FAILED\n" if failed else "\n")
