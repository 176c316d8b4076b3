"""runs/: what every run reads before it starts (its action, its org's policy), answered from
memory while nothing has changed them; HTTP-free."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actioncage.models import Action, OrgPolicy
from actioncage.shared.epochs import EpochCache
from actioncage.store import Store, repo

# At most this much of actions' code and parameters is kept, in every process (an org with
# many large actions cannot make the cache grow past it: it starts afresh).
MAX_CACHED_BYTES = 32 * 1024 * 1024


def _weight(value: tuple[Any, ...]) -> int:
    """What a cached entry costs, about: its action's code and schemas, plus a fixed part."""
    action = value[0]
    if not isinstance(action, Action):
        return 1024  # an org policy alone
    return 2048 + len(action.code) + len(repr(action.parameters)) + len(repr(action.returns))


class Definitions:
    """Actions by (org, id or name) and org policies by org, for ``ttl_s`` seconds.

    A warm run's own database reads cost about as much as its sandbox; from memory they cost
    nothing. Every write to an action or an org policy moves the definitions epoch in the
    database (repo), in its own transaction: a write made in this process empties the cache
    as it commits; one made by another process (or `actioncage org set-policy`) is seen at
    the next epoch read, within EPOCH_CHECK_S. Only what was found is kept, so a new action
    runs at once everywhere. A row changed in the database by hand is seen within ``ttl_s``.
    ``ttl_s`` 0 reads the database on every run.
    """

    def __init__(self, store: Store, ttl_s: float, max_bytes: int = MAX_CACHED_BYTES) -> None:
        self._store = store
        self._cache: EpochCache[tuple[str, str | None], Any] = EpochCache(
            "definitions", ttl_s, self._epoch, weigh=_weight, max_weight=max_bytes
        )
        store.after_commit(repo.DEFINITIONS, self._cache.start_afresh)

    def start(self) -> None:
        """Read the epoch off the runs' path, on a daemon thread."""
        self._cache.start()

    def close(self) -> None:
        self._cache.close()

    def _epoch(self) -> str:
        with self._store.reading() as conn:
            return repo.definitions_epoch(conn)

    def _through(self, key: tuple[str, str | None], read: Callable[[Any], Any]) -> Any:
        """The cached value at ``key``, or ``read(connection)``'s, then cached."""
        found = self._cache.find(key)
        if found is None:
            generation = self._cache.generation
            with self._store.reading() as conn:
                found = read(conn)
            self._cache.remember(key, found, generation)
        return found

    def action_and_policy(self, org_id: str, ref: str) -> tuple[Action, OrgPolicy | None]:
        """The current version of the org's action with this id or name, and the org's
        policy (None: none set). Raises ActionNotFoundError."""
        found: tuple[Action, OrgPolicy | None] = self._through(
            (org_id, ref), lambda conn: repo.get_action_and_org_policy(conn, org_id, ref)
        )
        return found

    def action(self, org_id: str, ref: str) -> Action:
        """The org's action by id or name. Raises ActionNotFoundError."""
        return self.action_and_policy(org_id, ref)[0]

    def org_policy(self, org_id: str) -> OrgPolicy | None:
        """The org's policy, or None when none was set."""
        # Kept in a 1-tuple: an org with no policy is cached too.
        found: tuple[OrgPolicy | None] = self._through(
            (org_id, None), lambda conn: (repo.find_org_policy(conn, org_id),)
        )
        return found[0]
