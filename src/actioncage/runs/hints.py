"""runs/: outcome classification: plain words added to script errors about the network, which
a new user cannot otherwise read ("Temporary failure in name resolution", a proxy's 403)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actioncage.models import ErrorType, RunError

# What Python's socket, urllib3 and requests say when a host cannot be resolved or reached
# from a sandbox that has no network (only loopback).
_NO_NETWORK_SIGNS = (
    "name resolution",
    "Name or service not known",
    "nodename nor servname",
    "No address associated with hostname",
    "Network is unreachable",
    "gaierror",
)
NO_NETWORK_HINT = (
    "this action has no network: its sandbox reaches no host. To allow one, list it in the "
    'action\'s policy ("policy": {"egress": ["api.example.com"]}), within the org\'s egress '
    "ceiling (`actioncage org set-policy ORG --egress api.example.com`)"
)


def explain_network(
    error: RunError | None, egress_patterns: Sequence[str], attempts: Sequence[dict[str, Any]]
) -> RunError | None:
    """``error`` with a hint appended to an exception's message when the network is why:
    the action has no egress at all, or the egress proxy refused a host (with its reason).
    Any other error (or none) is returned unchanged."""
    if error is None or error.type is not ErrorType.EXCEPTION:
        return error
    hint = None
    if not egress_patterns:
        text = f"{error.message}\n{error.traceback or ''}"
        if any(sign in text for sign in _NO_NETWORK_SIGNS):
            hint = NO_NETWORK_HINT
    else:
        refused = [a for a in attempts if not a.get("allowed")]
        if refused:
            first = refused[0]
            hint = (
                f"the egress proxy refused {first['host']}:{first['port']}: {first['reason']}; "
                f"the action's policy allows {', '.join(egress_patterns)}"
            )
    if hint is None:
        return error
    return RunError(error.type, f"{error.message} ({hint})", error.traceback)
