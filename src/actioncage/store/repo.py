"""store/: Repositories: they take a session, return models and raise domain errors."""

from __future__ import annotations

import functools
import hashlib
import secrets
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from actioncage.errors import (
    ActionNotFoundError,
    ConflictError,
    ConversationNotFoundError,
    IdempotencyInProgressError,
    KeyNotFoundError,
    RunAlreadyEndedError,
    RunNotFoundError,
    SecretNotFoundError,
)
from actioncage.models import (
    Action,
    ActionType,
    ApiKey,
    Conversation,
    Effect,
    EffectKind,
    ErrorType,
    FrontDoor,
    IdempotentResponse,
    InvocationTrigger,
    Isolation,
    KeyRecord,
    OrgPolicy,
    Policy,
    RunError,
    RunResult,
    RunStatus,
    SecretRecord,
)
from actioncage.store import CHANGED
from actioncage.store.schema import (
    ActionRow,
    ActionVersionRow,
    ApiKeyRow,
    Base,
    ConversationRow,
    EpochRow,
    IdempotencyRow,
    OrgPolicyRow,
    OrgRow,
    OrgSecretRow,
    RunRow,
)


def now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _aware(value: datetime) -> datetime:
    # Schema columns read back aware UTC already (UTCDateTime); kept so callers stay simple.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _insert_new(session: Session, model: type[Base], values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING: whether this call inserted the row.

    Two transactions inserting the same key at once: the second waits for the first and
    then does nothing, where a plain INSERT would fail (and, on PostgreSQL, spoil the rest
    of its transaction).
    """
    stmt: Insert
    # Core, not ORM, insert: values are keyed by column name (conversations.metadata).
    table = cast(Table, model.__table__)
    if session.get_bind().dialect.name == "postgresql":
        stmt = postgresql.insert(table).values(values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).values(values).on_conflict_do_nothing()
    # RETURNING, not rowcount: drivers need not report a count for an INSERT.
    return session.execute(stmt.returning(*table.primary_key.columns)).first() is not None


# --- orgs and keys -------------------------------------------------------------------------


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_org(session: Session, org_id: str) -> None:
    """Create the org if it does not exist (concurrent first calls both succeed)."""
    if session.get(OrgRow, org_id) is None:
        _insert_new(session, OrgRow, {"id": org_id, "created_at": now()})


def create_key(session: Session, org_id: str, secret: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key for ``org_id`` (hashed). Returns the key and its secret, shown once."""
    ensure_org(session, org_id)
    secret = secret or "ac_" + secrets.token_urlsafe(32)
    # Two processes booting with the same ACTIONCAGE_API_KEY both get here: one inserts,
    # the other finds its row.
    _insert_new(
        session,
        ApiKeyRow,
        {"id": new_id("key"), "org_id": org_id, "key_hash": hash_key(secret), "created_at": now()},
    )
    row = session.execute(
        select(ApiKeyRow.id, ApiKeyRow.org_id).where(ApiKeyRow.key_hash == hash_key(secret))
    ).one()
    if row.org_id != org_id:
        raise ConflictError("that key already belongs to another org")
    return ApiKey(id=row.id, org_id=row.org_id), secret


def find_key(session: Session, secret: str) -> ApiKey | None:
    """The live (not revoked) key whose secret is ``secret``, or None."""
    # Columns, not the entity: every request asks, and there is nothing to track.
    row = session.execute(
        select(ApiKeyRow.id, ApiKeyRow.org_id).where(
            ApiKeyRow.key_hash == hash_key(secret), ApiKeyRow.revoked_at.is_(None)
        )
    ).first()
    return None if row is None else ApiKey(id=row.id, org_id=row.org_id)


def _key_record(row: ApiKeyRow) -> KeyRecord:
    revoked = None if row.revoked_at is None else _aware(row.revoked_at)
    return KeyRecord(row.id, row.org_id, _aware(row.created_at), revoked)


def list_keys(session: Session, org_id: str | None = None) -> list[KeyRecord]:
    """Every key (of ``org_id`` if given), oldest first, revoked ones included."""
    query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
    if org_id is not None:
        query = query.where(ApiKeyRow.org_id == org_id)
    return [_key_record(row) for row in session.scalars(query)]


def revoke_key(session: Session, key_id: str) -> KeyRecord:
    """Mark the key revoked (once; revoking again keeps the first time). Returns it.

    Raises KeyNotFoundError for an unknown id.
    """
    row = session.get(ApiKeyRow, key_id)
    if row is None:
        raise KeyNotFoundError(f"no API key with id {key_id!r} (see `actioncage keys list`)")
    if row.revoked_at is None:
        row.revoked_at = now()
        session.flush()
    return _key_record(row)


def revocation_epoch(session: Session) -> str:
    """Changes whenever a key is revoked: the count and latest time of revocations."""
    count, latest = session.execute(
        select(func.count(ApiKeyRow.revoked_at), func.max(ApiKeyRow.revoked_at))
    ).one()
    return f"{count}:{latest}"


# --- the definitions epoch: what each process caches of actions and org policies -----------

# The change a write to an action or an org policy makes (Store.after_commit).
DEFINITIONS = "definitions"
_EPOCHS = cast(Table, EpochRow.__table__)
_EPOCH_BY_NAME = select(_EPOCHS.c.value).where(_EPOCHS.c.name == bindparam("name"))


@functools.cache
def _bump_epoch(dialect_name: str) -> Any:
    """UPSERT value + 1 (built once per dialect; the first bump makes the row)."""
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(_EPOCHS).values(name=bindparam("name"), value=1)
    return stmt.on_conflict_do_update(
        index_elements=[_EPOCHS.c.name], set_={"value": _EPOCHS.c.value + 1}
    )


def _definitions_changed(session: Session) -> None:
    """Move the definitions epoch in the write's own transaction (it moves if and only if
    the write lands), and name the change on the session for this process's caches."""
    session.execute(_bump_epoch(session.get_bind().dialect.name), {"name": DEFINITIONS})
    session.info.setdefault(CHANGED, set()).add(DEFINITIONS)


def definitions_epoch(conn: Session | Connection) -> str:
    """A value that moves with every committed write to an action or an org policy."""
    value = conn.execute(_EPOCH_BY_NAME, {"name": DEFINITIONS}).scalar()
    return str(value or 0)


# --- actions -------------------------------------------------------------------------------


def _action(row: ActionRow | _Prefixed, version: ActionVersionRow | _Prefixed) -> Action:
    return Action(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        version=row.version,
        type=ActionType(version.type),
        code=version.code,
        parameters=version.parameters,
        policy=_policy(version.policy),
        description=version.description,
        created_by=row.created_by,
        created_at=_aware(row.created_at),
        updated_by=row.updated_by,
        updated_at=_aware(row.updated_at),
        endpoint=version.endpoint,
        user_waiting_text=version.user_waiting_text,
        user_success_text=version.user_success_text,
        user_error_text=version.user_error_text,
        invocation_trigger=InvocationTrigger(version.invocation_trigger or "user_query"),
        returns=version.returns,
        secrets=tuple(version.secrets or ()),
    )


def _policy(stored: dict[str, Any]) -> Policy:
    isolation = stored.get("isolation")
    return Policy(
        **{
            **stored,
            "egress": tuple(stored.get("egress") or ()),
            "isolation": None if isolation is None else Isolation(isolation),
        }
    )


def _version_row(
    action_id: str, version: int, org_id: str, key_id: str, fields: dict[str, Any]
) -> ActionVersionRow:
    policy: Policy = fields["policy"]
    return ActionVersionRow(
        action_id=action_id,
        version=version,
        org_id=org_id,
        name=fields["name"],
        type=str(fields["type"]),
        code=fields["code"],
        parameters=fields["parameters"],
        policy={
            "timeout_ms": policy.timeout_ms,
            "memory_mb": policy.memory_mb,
            "cpus": policy.cpus,
            "egress": list(policy.egress),
            "isolation": None if policy.isolation is None else str(policy.isolation),
        },
        description=fields["description"],
        created_by=key_id,
        created_at=now(),
        endpoint=fields.get("endpoint"),
        user_waiting_text=fields.get("user_waiting_text"),
        user_success_text=fields.get("user_success_text"),
        user_error_text=fields.get("user_error_text"),
        invocation_trigger=str(fields.get("invocation_trigger") or InvocationTrigger.USER_QUERY),
        returns=fields.get("returns"),
        secrets=list(fields.get("secrets") or ()) or None,
    )


def create_action(session: Session, org_id: str, key_id: str, fields: dict[str, Any]) -> Action:
    """Store version 1 of a new action. Raises ConflictError when the name is taken."""
    ts = now()
    row = ActionRow(
        id=new_id("act"),
        org_id=org_id,
        name=fields["name"],
        version=1,
        created_by=key_id,
        created_at=ts,
        updated_by=key_id,
        updated_at=ts,
    )
    version = _version_row(row.id, 1, org_id, key_id, fields)
    session.add_all([row, version])
    _flush_unique(session, fields["name"])
    _definitions_changed(session)
    return _action(row, version)


def _flush_unique(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise ConflictError(f"an action named {name!r} already exists") from exc


def _find_action_row(session: Session, org_id: str, id_or_name: str) -> ActionRow | None:
    row = session.get(ActionRow, id_or_name)
    if row is not None and row.org_id == org_id:
        return row
    return session.scalar(
        select(ActionRow).where(ActionRow.org_id == org_id, ActionRow.name == id_or_name)
    )


class _Prefixed:
    """The columns of one table in a joined Core row, by attribute (``_ACTION_BY_REF``)."""

    def __init__(self, mapping: Any, prefix: str) -> None:
        self._mapping, self._prefix = mapping, prefix

    def __getattr__(self, name: str) -> Any:
        return self._mapping[self._prefix + name]


def _labelled(table: Table, prefix: str) -> list[Any]:
    return [c.label(prefix + c.key) for c in table.columns]


_ACTIONS = cast(Table, ActionRow.__table__)
_VERSIONS = cast(Table, ActionVersionRow.__table__)
# Every call of an action starts here: one statement, built once, read through Core (no ORM
# objects to load: a quarter of the time).
_ACTION_BY_REF = (
    select(*_labelled(_ACTIONS, "a_"), *_labelled(_VERSIONS, "v_"))
    .join(
        _VERSIONS,
        (_VERSIONS.c.action_id == _ACTIONS.c.id) & (_VERSIONS.c.version == _ACTIONS.c.version),
    )
    .where(
        _ACTIONS.c.org_id == bindparam("org_id"),
        (_ACTIONS.c.id == bindparam("ref")) | (_ACTIONS.c.name == bindparam("ref")),
    )
)


def get_action(session: Session | Connection, org_id: str, id_or_name: str) -> Action:
    """The current version of the action with this id or name (an id wins over another
    action's equal name). Raises ActionNotFoundError."""
    row = _row_by_ref(session, _ACTION_BY_REF, org_id, id_or_name)
    return _action(_Prefixed(row, "a_"), _Prefixed(row, "v_"))


def _row_by_ref(session: Session | Connection, statement: Any, org_id: str, ref: str) -> Any:
    found = session.execute(statement, {"org_id": org_id, "ref": ref}).all()
    if not found:
        raise ActionNotFoundError(f"no action {ref!r}")
    return min(found, key=lambda r: r._mapping["a_id"] != ref)._mapping


def find_action(session: Session, org_id: str, id_or_name: str) -> Action | None:
    """The current version of the action with this id or name, or None."""
    try:
        return get_action(session, org_id, id_or_name)
    except ActionNotFoundError:
        return None


def find_action_version(
    session: Session, org_id: str, action_id: str, version: int
) -> Action | None:
    """The action as saved at ``version`` (kept after the action is deleted), or None.
    A deleted action's version carries its creator and time as its "updated" ones."""
    saved = session.get(ActionVersionRow, (action_id, version))
    if saved is None or saved.org_id != org_id:
        return None
    row = session.get(ActionRow, action_id)
    if row is None:
        row = ActionRow(
            id=action_id,
            org_id=org_id,
            name=saved.name,
            created_by=saved.created_by,
            created_at=saved.created_at,
            updated_by=saved.created_by,
            updated_at=saved.created_at,
        )
    action = _action(row, saved)
    return replace(action, name=saved.name, version=version)


def list_actions(session: Session, org_id: str) -> list[Action]:
    """Every live action of the org, by name."""
    rows = session.scalars(
        select(ActionRow).where(ActionRow.org_id == org_id).order_by(ActionRow.name)
    ).all()
    out = []
    for row in rows:
        version = session.get(ActionVersionRow, (row.id, row.version))
        assert version is not None
        out.append(_action(row, version))
    return out


def list_triggered_actions(
    session: Session, org_id: str, trigger: InvocationTrigger
) -> list[Action]:
    """The org's live actions whose invocation trigger is ``trigger``, by name."""
    return [a for a in list_actions(session, org_id) if a.invocation_trigger is trigger]


def update_action(
    session: Session, org_id: str, action_id: str, key_id: str, fields: dict[str, Any]
) -> Action:
    """Save ``fields`` (the whole new definition) as the next version."""
    row = _find_action_row(session, org_id, action_id)
    if row is None or row.id != action_id:
        raise ActionNotFoundError(f"no action {action_id!r}")
    row.version += 1
    row.name = fields["name"]
    row.updated_by = key_id
    row.updated_at = now()
    version = _version_row(row.id, row.version, org_id, key_id, fields)
    session.add(version)
    _flush_unique(session, fields["name"])
    _definitions_changed(session)
    return _action(row, version)


def delete_action(session: Session, org_id: str, action_id: str) -> None:
    """Remove the live action; its versions and runs stay for the audit trail."""
    row = _find_action_row(session, org_id, action_id)
    if row is None or row.id != action_id:
        raise ActionNotFoundError(f"no action {action_id!r}")
    session.delete(row)
    session.flush()
    _definitions_changed(session)


# --- conversations ---------------------------------------------------------------------------


def _conversation(row: ConversationRow) -> Conversation:
    return Conversation(
        id=row.id,
        org_id=row.org_id,
        metadata=dict(row.metadata_),
        tags=tuple(row.tags),
        events=tuple(row.events),
        messages=tuple(row.messages),
        handed_off=row.handed_off,
        hand_off_reason=row.hand_off_reason,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        ended_at=None if row.ended_at is None else _aware(row.ended_at),
    )


def list_conversations(session: Session, org_id: str, limit: int = 100) -> list[Conversation]:
    """The org's conversations, most recently updated first, at most ``limit``."""
    rows = session.scalars(
        select(ConversationRow)
        .where(ConversationRow.org_id == org_id)
        .order_by(ConversationRow.updated_at.desc(), ConversationRow.id)
        .limit(limit)
    )
    return [_conversation(row) for row in rows]


def find_conversation(session: Session, org_id: str, conversation_id: str) -> Conversation | None:
    """The conversation, or None."""
    row = session.get(ConversationRow, (org_id, conversation_id))
    return None if row is None else _conversation(row)


def end_conversation(session: Session, org_id: str, conversation_id: str) -> Conversation:
    """Mark the conversation ended. Raises ConversationNotFoundError, ConflictError if ended."""
    row = _conversation_row(session, org_id, conversation_id, lock=True)
    if row.ended_at is not None:
        raise ConflictError(f"conversation {conversation_id!r} has already ended")
    row.ended_at = row.updated_at = now()
    session.flush()
    return _conversation(row)


def create_conversation(
    session: Session,
    org_id: str,
    conversation_id: str | None,
    messages: list[dict[str, Any]],
    metadata: dict[str, Any],
    tags: list[str],
) -> Conversation:
    """Store a new conversation. Raises ConflictError when the id is taken (also when
    another transaction takes it at the same moment)."""
    ts = now()
    conversation_id = conversation_id or new_id("conv")
    created = _insert_new(
        session,
        ConversationRow,
        {
            "org_id": org_id,
            "id": conversation_id,
            "metadata": metadata,
            "tags": tags,
            "events": [],
            "messages": messages,
            "handed_off": False,
            "hand_off_reason": None,
            "created_at": ts,
            "updated_at": ts,
        },
    )
    if not created:
        raise ConflictError(f"a conversation with id {conversation_id!r} already exists")
    return get_conversation(session, org_id, conversation_id)


def _conversation_row(
    session: Session, org_id: str, conversation_id: str, lock: bool = False
) -> ConversationRow:
    if lock:
        _lock_on_sqlite(
            session,
            update(ConversationRow)
            .where(ConversationRow.org_id == org_id, ConversationRow.id == conversation_id)
            .values(handed_off=ConversationRow.handed_off),
        )
    # populate_existing: a row this session read before may be stale by now.
    row = session.get(
        ConversationRow, (org_id, conversation_id), with_for_update=lock, populate_existing=lock
    )
    if row is None:
        raise ConversationNotFoundError(f"no conversation {conversation_id!r}")
    return row


def _lock_on_sqlite(session: Session, touch: Any) -> None:
    # SQLite has no row locks and ignores FOR UPDATE, but any write takes the database's
    # write lock until commit (BEGIN IMMEDIATE semantics): a no-op UPDATE of the row before
    # reading it keeps every other writer out until this transaction ends.
    if session.get_bind().dialect.name == "sqlite":
        session.execute(touch.execution_options(synchronize_session=False))


def get_conversation(
    session: Session, org_id: str, conversation_id: str, lock: bool = False
) -> Conversation:
    """The conversation. Raises ConversationNotFoundError.

    ``lock``: hold the row until the session ends (SELECT ... FOR UPDATE on PostgreSQL, the
    write lock on SQLite), so a read-modify-write of it (``apply_to_conversation``) loses no
    concurrent writer's change.
    """
    return _conversation(_conversation_row(session, org_id, conversation_id, lock=lock))


def apply_to_conversation(
    session: Session, org_id: str, conversation_id: str, updated: Conversation
) -> None:
    """Write the state ``updated`` holds, computed from the row as read in this session with
    ``get_conversation(..., lock=True)``."""
    row = _conversation_row(session, org_id, conversation_id, lock=True)
    row.metadata_ = dict(updated.metadata)
    row.tags = list(updated.tags)
    row.events = list(updated.events)
    row.handed_off = updated.handed_off
    row.hand_off_reason = updated.hand_off_reason
    row.updated_at = now()
    session.flush()


# --- runs ----------------------------------------------------------------------------------


def add_run(
    session: Session | Connection, run: RunResult, replaces_placeholder: bool = False
) -> None:
    """Store the audit record of one run; with ``replaces_placeholder``, complete its
    "running" placeholder when there is one.

    Raises RunAlreadyEndedError when, with ``replaces_placeholder``, the run is recorded
    already and no longer "running" (a reaper ended it first, or another process completed
    it): the caller's transaction then rolls back, effects included.
    """
    values: dict[str, Any] = {
        "id": run.run_id,
        "org_id": run.org_id,
        "caller_key_id": run.caller_key_id,
        "action_id": run.action_id,
        "action_version": run.action_version,
        "conversation_id": run.conversation_id,
        "status": str(run.status),
        "error_type": None if run.error is None else str(run.error.type),
        "error_message": None if run.error is None else run.error.message,
        "error_traceback": None if run.error is None else run.error.traceback,
        "output": run.output,
        "effects": [{"kind": str(e.kind), **e.data} for e in run.effects],
        "effects_applied": run.effects_applied,
        "logs": run.logs,
        "duration_ms": run.duration_ms,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "image_digest": run.image_digest,
        "policy_hash": run.policy_hash,
        "egress": list(run.egress),
        "front_door": None if run.front_door is None else str(run.front_door),
        "args": run.args,
        "secrets": list(run.secrets) or None,
        "executor": run.executor,
        "isolation": None if run.isolation is None else str(run.isolation),
        "runtime_version": run.runtime_version,
    }
    if replaces_placeholder:
        # Inserted, or completing a record still "running", in one statement: the first
        # outcome recorded wins. (A run on an executor worker has its placeholder only once
        # it is out for a while, runs/jobs.py: either way this records it.)
        bind = session.get_bind() if isinstance(session, Session) else session
        stmt = _record_run(bind.dialect.name)
        # RETURNING, not rowcount: psycopg does not report one for an upsert.
        if session.execute(stmt, values).scalar() is None:
            raise RunAlreadyEndedError(f"run {run.run_id} was already ended")
    else:
        # A new run is one plain INSERT, through Core: no ORM bulk-insert machinery.
        session.execute(_INSERT_RUN, values)


_RUNS = cast(Table, RunRow.__table__)
_INSERT_RUN = insert(_RUNS)


@functools.cache
def _record_run(dialect_name: str) -> Any:
    """INSERT a run, or complete its row while it says "running" (built once per dialect:
    a statement built per call is compiled per call, three times the cost of the insert)."""
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(_RUNS)
    return stmt.on_conflict_do_update(
        index_elements=[_RUNS.c.id],
        set_={c.key: stmt.excluded[c.key] for c in _RUNS.columns if c.key != "id"},
        where=_RUNS.c.status == str(RunStatus.RUNNING),
    ).returning(_RUNS.c.id)


def add_running_run(
    session: Session,
    run_id: str,
    action: Action,
    key_id: str | None,
    conversation_id: str | None,
    args: dict[str, Any] | None = None,
) -> None:
    """Store a "running" placeholder for a run that finishes in the background."""
    ts = now()
    session.add(
        RunRow(
            id=run_id,
            org_id=action.org_id,
            caller_key_id=key_id,
            action_id=action.id,
            action_version=action.version,
            conversation_id=conversation_id,
            status=str(RunStatus.RUNNING),
            output=None,
            effects=[],
            effects_applied=False,
            logs="",
            duration_ms=0,
            started_at=ts,
            finished_at=ts,
            args=args,
        )
    )
    session.flush()


def discard_running_run(session: Session, org_id: str, run_id: str) -> None:
    """Remove a "running" placeholder whose run never started."""
    row = session.get(RunRow, run_id)
    if row is not None and row.org_id == org_id and row.status == str(RunStatus.RUNNING):
        session.delete(row)
        session.flush()


def get_run(session: Session, org_id: str, run_id: str) -> RunResult:
    """The run's audit record. Raises RunNotFoundError."""
    row = session.get(RunRow, run_id)
    if row is None or row.org_id != org_id:
        raise RunNotFoundError(f"no run {run_id!r}")
    return _run(row)


def run_is_recorded(session: Session, org_id: str, run_id: str) -> bool:
    """Whether the run has its record, ended (not only a "running" placeholder)."""
    status = session.scalar(
        select(RunRow.status).where(RunRow.id == run_id, RunRow.org_id == org_id)
    )
    return status is not None and status != str(RunStatus.RUNNING)


def _run(row: RunRow) -> RunResult:
    error = None
    if row.error_type is not None:
        error = RunError(
            type=ErrorType(row.error_type),
            message=row.error_message or "",
            traceback=row.error_traceback,
        )
    effects = tuple(
        Effect(kind=EffectKind(e["kind"]), data={k: v for k, v in e.items() if k != "kind"})
        for e in row.effects
    )
    return RunResult(
        run_id=row.id,
        org_id=row.org_id,
        action_id=row.action_id,
        action_version=row.action_version,
        status=RunStatus(row.status),
        output=row.output,
        error=error,
        effects=effects,
        effects_applied=row.effects_applied,
        logs=row.logs,
        duration_ms=row.duration_ms,
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
        conversation_id=row.conversation_id,
        caller_key_id=row.caller_key_id,
        image_digest=row.image_digest,
        policy_hash=row.policy_hash,
        egress=tuple(row.egress or ()),
        front_door=None if row.front_door is None else FrontDoor(row.front_door),
        args=row.args,
        secrets=tuple(row.secrets or ()),
        executor=row.executor,
        isolation=None if row.isolation is None else Isolation(row.isolation),
        runtime_version=row.runtime_version,
    )


def find_key_by_id(session: Session, key_id: str) -> ApiKey | None:
    """The live key with this id (the dashboard's session holds ids, never secrets), or None
    (unknown or revoked)."""
    row = session.get(ApiKeyRow, key_id)
    if row is None or row.revoked_at is not None:
        return None
    return ApiKey(id=row.id, org_id=row.org_id)


# --- org secrets (ciphertext only: store/ never sees a secret's value) ---------------------


def _secret_record(row: OrgSecretRow) -> SecretRecord:
    return SecretRecord(row.org_id, row.name, _aware(row.created_at), _aware(row.updated_at))


def put_secret(session: Session, org_id: str, name: str, ciphertext: str) -> SecretRecord:
    """Store (or replace) the org's secret ``name`` as ``ciphertext``."""
    ensure_org(session, org_id)
    ts = now()
    values = {
        "org_id": org_id,
        "name": name,
        "ciphertext": ciphertext,
        "created_at": ts,
        "updated_at": ts,
    }
    if not _insert_new(session, OrgSecretRow, values):
        session.execute(
            update(OrgSecretRow)
            .where(OrgSecretRow.org_id == org_id, OrgSecretRow.name == name)
            .values(ciphertext=ciphertext, updated_at=ts)
        )
    row = session.get(OrgSecretRow, (org_id, name), populate_existing=True)
    assert row is not None
    return _secret_record(row)


def list_secrets(session: Session, org_id: str) -> list[SecretRecord]:
    """The org's secrets by name (never their values)."""
    rows = session.scalars(
        select(OrgSecretRow).where(OrgSecretRow.org_id == org_id).order_by(OrgSecretRow.name)
    )
    return [_secret_record(r) for r in rows]


def delete_secret(session: Session, org_id: str, name: str) -> None:
    """Remove the org's secret. Raises SecretNotFoundError."""
    row = session.get(OrgSecretRow, (org_id, name))
    if row is None:
        raise SecretNotFoundError(f"no secret {name!r}")
    session.delete(row)
    session.flush()


def secret_ciphertexts(session: Session, org_id: str, names: tuple[str, ...]) -> dict[str, str]:
    """The ciphertexts of those of ``names`` the org has set."""
    if not names:
        return {}
    rows = session.execute(
        select(OrgSecretRow.name, OrgSecretRow.ciphertext).where(
            OrgSecretRow.org_id == org_id, OrgSecretRow.name.in_(names)
        )
    )
    return {name: ciphertext for name, ciphertext in rows}


def all_secret_ciphertexts(session: Session) -> list[tuple[str, str, str]]:
    """Every stored secret as (org, name, ciphertext), for start-up checks and rotation."""
    rows = session.execute(select(OrgSecretRow.org_id, OrgSecretRow.name, OrgSecretRow.ciphertext))
    return [(org, name, ciphertext) for org, name, ciphertext in rows]


def replace_secret_ciphertext(session: Session, org_id: str, name: str, ciphertext: str) -> None:
    """Rewrite one secret's ciphertext (a key rotation: the value and times stay)."""
    session.execute(
        update(OrgSecretRow)
        .where(OrgSecretRow.org_id == org_id, OrgSecretRow.name == name)
        .values(ciphertext=ciphertext)
    )


# --- org webhook secret ----------------------------------------------------------------------


def webhook_secret(session: Session, org_id: str) -> str:
    """The org's webhook signing secret, made on first use."""
    ensure_org(session, org_id)
    _lock_on_sqlite(
        session,
        update(OrgRow).where(OrgRow.id == org_id).values(webhook_secret=OrgRow.webhook_secret),
    )
    row = session.get(OrgRow, org_id, with_for_update=True, populate_existing=True)
    assert row is not None
    if row.webhook_secret is None:
        row.webhook_secret = "whsec_" + secrets.token_urlsafe(32)
        session.flush()
    return row.webhook_secret


# --- idempotency keys ----------------------------------------------------------------------


def claim_idempotency_key(
    session: Session,
    org_id: str,
    key: str,
    fingerprint: str,
    ttl_s: int,
    take_over: bool = False,
) -> IdempotentResponse | None:
    """Claim ``key`` for a call whose route and body hash to ``fingerprint``.

    Returns None when this call now holds the key (it must run, then ``finish_idempotency_key``),
    or the stored answer of the earlier call. Raises ConflictError when the key was used with
    another request, or when the earlier call is still running. ``take_over``: the caller
    holds the key's shared lease, so an unanswered claim is a dead holder's and becomes ours.
    """
    ensure_org(session, org_id)
    row = session.get(IdempotencyRow, (org_id, key))
    expired = row is not None and (now() - _aware(row.created_at)).total_seconds() > ttl_s
    if row is not None and (expired or (take_over and row.status_code is None)):
        session.delete(row)
        session.flush()
        row = None
    if row is None:
        # Of concurrent first claims one inserts; the others hear "in progress", wait and
        # then replay its answer.
        claimed = _insert_new(
            session,
            IdempotencyRow,
            {"org_id": org_id, "key": key, "fingerprint": fingerprint, "created_at": now()},
        )
        if not claimed:
            raise IdempotencyInProgressError(
                "a request with this Idempotency-Key is still being processed"
            )
        return None
    if row.fingerprint != fingerprint:
        raise ConflictError("this Idempotency-Key was already used with a different request")
    if row.status_code is None:
        raise IdempotencyInProgressError(
            "a request with this Idempotency-Key is still being processed"
        )
    return IdempotentResponse(status_code=row.status_code, body=row.body)


def peek_idempotency_key(session: Session, org_id: str, key: str) -> IdempotentResponse | None:
    """The stored answer for ``key`` once its call finished, else None."""
    row = session.get(IdempotencyRow, (org_id, key))
    if row is None or row.status_code is None:
        return None
    return IdempotentResponse(status_code=row.status_code, body=row.body)


def finish_idempotency_key(
    session: Session, org_id: str, key: str, response: IdempotentResponse
) -> None:
    """Store the answer of the call holding ``key``."""
    row = session.get(IdempotencyRow, (org_id, key))
    if row is not None:
        row.status_code = response.status_code
        row.body = response.body
        session.flush()


def release_idempotency_key(session: Session, org_id: str, key: str) -> None:
    """Forget a claim whose call produced no answer worth replaying (the caller's mistake)."""
    row = session.get(IdempotencyRow, (org_id, key))
    if row is not None and row.status_code is None:
        session.delete(row)
        session.flush()


def list_runs(
    session: Session,
    org_id: str,
    action_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
    before: tuple[datetime, str] | None = None,
    error_type: str | None = None,
    since: datetime | None = None,
    conversation_id: str | None = None,
) -> list[RunResult]:
    """The org's runs, newest first, optionally for one action, status, error type or
    conversation, or started at ``since`` or later.

    ``before`` is the (started_at, id) of the last run of the previous page: keyset paging,
    so runs recorded meanwhile neither repeat nor go missing.
    """
    query = select(RunRow).where(RunRow.org_id == org_id)
    if action_id is not None:
        query = query.where(RunRow.action_id == action_id)
    if status is not None:
        query = query.where(RunRow.status == status)
    if error_type is not None:
        query = query.where(RunRow.error_type == error_type)
    if since is not None:
        query = query.where(RunRow.started_at >= since)
    if conversation_id is not None:
        query = query.where(RunRow.conversation_id == conversation_id)
    if before is not None:
        started, run_id = before
        query = query.where(
            (RunRow.started_at < started) | ((RunRow.started_at == started) & (RunRow.id < run_id))
        )
    query = query.order_by(RunRow.started_at.desc(), RunRow.id.desc()).limit(limit)
    return [_run(row) for row in session.scalars(query).all()]


# --- org policies --------------------------------------------------------------------------


_ORG_POLICIES = cast(Table, OrgPolicyRow.__table__)
_ORG_POLICY_BY_ID = select(_ORG_POLICIES).where(_ORG_POLICIES.c.org_id == bindparam("org_id"))


def find_org_policy(session: Session | Connection, org_id: str) -> OrgPolicy | None:
    """The operator's ceilings for the org, or None when none were set."""
    # Every run's admission reads it: through Core, with no ORM object to load.
    row = session.execute(_ORG_POLICY_BY_ID, {"org_id": org_id}).first()
    return None if row is None else _org_policy(row)


# A run called by name or id needs both its action and its org's policy: one statement.
_ACTION_AND_ORG_POLICY = _ACTION_BY_REF.add_columns(*_labelled(_ORG_POLICIES, "o_")).outerjoin(
    _ORG_POLICIES, _ORG_POLICIES.c.org_id == _ACTIONS.c.org_id
)


def get_action_and_org_policy(
    conn: Session | Connection, org_id: str, id_or_name: str
) -> tuple[Action, OrgPolicy | None]:
    """get_action's action and find_org_policy's ceilings, read together. Raises
    ActionNotFoundError."""
    row = _row_by_ref(conn, _ACTION_AND_ORG_POLICY, org_id, id_or_name)
    action = _action(_Prefixed(row, "a_"), _Prefixed(row, "v_"))
    return action, None if row["o_org_id"] is None else _org_policy(_Prefixed(row, "o_"))


def _org_policy(row: Any) -> OrgPolicy:
    return OrgPolicy(
        max_timeout_ms=row.max_timeout_ms,
        max_memory_mb=row.max_memory_mb,
        max_cpus=row.max_cpus,
        restricted=row.restricted,
        runs_per_minute=row.runs_per_minute,
        concurrent_runs=row.concurrent_runs,
        egress=None if row.egress is None else tuple(row.egress),
        min_isolation=None if row.min_isolation is None else Isolation(row.min_isolation),
    )


def set_org_policy(session: Session, org_id: str, policy: OrgPolicy) -> OrgPolicy:
    """Store the org's ceilings (replacing any). Returns them."""
    ensure_org(session, org_id)
    row = session.get(OrgPolicyRow, org_id)
    if row is None:
        row = OrgPolicyRow(org_id=org_id)
        session.add(row)
    row.max_timeout_ms = policy.max_timeout_ms
    row.max_memory_mb = policy.max_memory_mb
    row.max_cpus = policy.max_cpus
    row.restricted = policy.restricted
    row.runs_per_minute = policy.runs_per_minute
    row.concurrent_runs = policy.concurrent_runs
    row.egress = None if policy.egress is None else list(policy.egress)
    row.min_isolation = None if policy.min_isolation is None else str(policy.min_isolation)
    row.updated_at = now()
    session.flush()
    _definitions_changed(session)
    return policy
