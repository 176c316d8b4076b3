"""runs/: handover tickets: what another control plane needs to record a run handed to an
executor worker when the process that dispatched it is gone, carried by the run's task and
sent back with its outcome. Signed with a key only control planes hold (the database's):
the worker carries it but can neither read a secret from it nor forge or alter one, so an
outcome it hands over lands on the run, org, action and conversation the control plane
dispatched, never on one the worker names.

The same key signs a run's *start grant*: the dispatching process's yes to one worker's start
claim, naming the run and that worker. The worker sends it with the run's host calls and
outcome, and with an outcome it hands over, so that only the worker that won the claim
answers for the run (one that merely holds the task's ticket is ignored), and the process
that records a handed-over run knows which worker the dead one let start it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from actioncage.errors import ActioncageError

# The name of the deployment's shared secret the tickets' key is derived from.
SECRET_NAME = "handover-tickets"
# A ticket carries the run's args; bounded like a request body is.
MAX_TICKET_BYTES = 4 * 1024 * 1024
# A start grant is an HMAC-SHA256, base64: 43 characters.
MAX_GRANT_CHARS = 64


class TicketInvalidError(ActioncageError):
    """A handover ticket that is malformed, not signed by this deployment, or for another
    run; the outcome that came with it is dropped."""


@dataclass(frozen=True)
class Ticket:
    """A run on an executor worker, as its dispatching process knew it."""

    run_id: str
    org_id: str
    action_id: str
    key_id: str | None
    conversation_id: str | None
    front_door: str | None
    args: dict[str, Any]
    started_at: datetime
    # The dispatching process's instance id: the run is adopted only once it is dead.
    dispatcher: str
    # After this, nobody completes the run from an outcome any more.
    deadline_at: datetime


class Tickets:
    """Issues and reads the deployment's tickets (HMAC-SHA256 over the JSON)."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"actioncage handover ticket v1", "sha256").digest()
        self._grant_key = hmac.new(secret.encode(), b"actioncage start grant v1", "sha256").digest()

    def grant(self, run_id: str, worker: str) -> str:
        """The start grant of ``run_id`` to ``worker``."""
        return _b64(self._granted(run_id, worker))

    def granted(self, token: object, run_id: str, worker: str) -> bool:
        """Whether ``token`` is this deployment's start grant of ``run_id`` to ``worker``."""
        if not isinstance(token, str) or len(token) > MAX_GRANT_CHARS:
            return False
        try:
            mac = _unb64(token)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(mac, self._granted(run_id, worker))

    def _granted(self, run_id: str, worker: str) -> bytes:
        message = json.dumps([run_id, worker], separators=(",", ":")).encode()
        return hmac.new(self._grant_key, message, hashlib.sha256).digest()

    def issue(self, ticket: Ticket) -> str:
        payload = json.dumps(
            {
                "runId": ticket.run_id,
                "orgId": ticket.org_id,
                "actionId": ticket.action_id,
                "keyId": ticket.key_id,
                "conversationId": ticket.conversation_id,
                "frontDoor": ticket.front_door,
                "args": ticket.args,
                "startedAt": ticket.started_at.isoformat(),
                "dispatcher": ticket.dispatcher,
                "deadlineAt": ticket.deadline_at.isoformat(),
            },
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def read(self, token: object, run_id: str) -> Ticket:
        """The ticket in ``token``, checked: signed here, and for ``run_id``. Raises
        TicketInvalidError."""
        if not isinstance(token, str) or len(token) > MAX_TICKET_BYTES or token.count(".") != 1:
            raise TicketInvalidError("the handover ticket is missing or malformed")
        body, signature = token.split(".")
        try:
            payload, mac = _unb64(body), _unb64(signature)
        except (binascii.Error, ValueError) as exc:
            raise TicketInvalidError("the handover ticket is not base64") from exc
        if not hmac.compare_digest(mac, self._sign(payload)):
            raise TicketInvalidError("the handover ticket is not signed by this deployment")
        try:
            d = json.loads(payload)
            ticket = Ticket(
                run_id=d["runId"],
                org_id=d["orgId"],
                action_id=d["actionId"],
                key_id=d["keyId"],
                conversation_id=d["conversationId"],
                front_door=d["frontDoor"],
                args=d["args"],
                started_at=datetime.fromisoformat(d["startedAt"]),
                dispatcher=d["dispatcher"],
                deadline_at=datetime.fromisoformat(d["deadlineAt"]),
            )
        except (ValueError, KeyError, TypeError) as exc:  # signed by us: a version mismatch
            raise TicketInvalidError(f"the handover ticket does not parse: {exc}") from exc
        if ticket.run_id != run_id:
            raise TicketInvalidError(f"the handover ticket is for another run ({ticket.run_id})")
        return ticket

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
