"""cli.py: The ``actioncage`` command: serve, worker, workers, run, image build, keys (create,
list, revoke), org, secrets (set, list, delete, new-key, rotate), db upgrade, audit."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actioncage.errors import ActioncageError, ConfigError
from actioncage.settings import ISOLATION_TIERS, Settings

if TYPE_CHECKING:
    from actioncage.store import Store

log = logging.getLogger("actioncage")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import waitress

    from actioncage.app import create_app
    from actioncage.errors import SandboxError
    from actioncage.instances import sweep_dead_owners

    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    # Every queued run holds a server thread while it waits, plus a few for other routes.
    threads = args.threads or settings.max_concurrent_runs + settings.run_queue_size + 4
    # Bind before anything else: a port in use must stop this process before it touches the
    # engine, so a second start never disturbs a live server's sandboxes.
    listener = _listen(host, port)
    # SIGTERM ends the server like Ctrl-C, so the warm pool and removals are cleaned up.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    app = None
    try:
        app = create_app(settings)
        components = app.extensions["actioncage"]
        if components.dispatcher is None:  # with workers, sandboxes are theirs
            try:
                sweep_dead_owners(components.instance, components.runner.backend)
            except SandboxError as exc:
                log.warning("container engine not reachable at start-up: %s", exc)
        server: Any = waitress.create_server(
            app, sockets=[listener], threads=threads, ident="actioncage"
        )
        log.info(
            "actioncage serving on http://%s:%s (%d threads, instance %s, database %s)",
            server.effective_host,
            server.effective_port,
            threads,
            components.instance.id,
            components.store.shown_url,
        )
        server.run()
    finally:
        listener.close()
        if app is not None:
            app.extensions["actioncage"].close()
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening (connections wait in its backlog until
    the server runs). Raises ConfigError when the address is in use or cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    listener = socket.socket(family, kind, proto)
    try:
        # As waitress does: a restart may bind while the old connections linger in TIME_WAIT;
        # a port another process listens on is still refused.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(1024)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"cannot listen on {host}:{port}: address already in use "
                "(is another actioncage serving there?)"
            ) from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return listener


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    """Take runs from ACTIONCAGE_BROKER_URL until SIGTERM (then finish those in flight)."""
    from actioncage.components import build_worker

    if args.slots is not None and args.slots < 1:
        raise ConfigError("--slots must be 1 or more")
    if not args.name or len(args.name) > 64 or not args.name.isprintable() or "@" in args.name:
        raise ConfigError("--name must be 1-64 printable characters, without @")
    slots = args.slots or settings.max_concurrent_runs
    return build_worker(settings, args.name, slots).serve()


def _workers(args: argparse.Namespace, settings: Settings) -> int:
    """Print the live workers heard on the broker within about two heartbeats."""
    import time

    from actioncage.dispatch.dispatcher import listen_for_workers

    if settings.broker_url is None:
        raise ConfigError("ACTIONCAGE_BROKER_URL: set it to list the workers on that broker")
    workers = listen_for_workers(settings, settings.worker_heartbeat_s * 2 + 0.5)
    now = time.time()
    if args.json:
        print(json.dumps([_worker_out(w, now) for w in workers], indent=2))
        return 0
    rows = [("NAME", "HOST", "SLOTS", "BUSY", "WARM", "LAST HEARTBEAT")] + [
        (
            w.name,
            w.host,
            str(w.slots),
            str(w.busy),
            ",".join(f"{k}={v}" for k, v in sorted(w.warm.items())) or "-",
            f"{max(0.0, now - w.sent_at):.1f} s ago",
        )
        for w in workers
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)]
        print("  ".join([*cells, row[5]]))
    return 0


def _worker_out(worker: Any, now: float) -> dict[str, Any]:
    from actioncage.web.wire import worker_out

    return worker_out(worker, now)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Run a script in the sandbox with a throwaway in-memory store and print the result."""
    from dataclasses import replace

    from actioncage.actions.validation import check_code
    from actioncage.components import build
    from actioncage.models import FrontDoor, OrgPolicy, Policy, RunResult
    from actioncage.runs.service import Caller, ConversationRef, RunRequest
    from actioncage.store import repo
    from actioncage.web.wire import run_out

    code = check_code(Path(args.script).read_text(encoding="utf-8"), settings.max_code_bytes)
    call_args = _json_arg(args.args, "--args")
    egress = _egress_arg(args.egress or [])
    conversation_in = _json_arg(args.conversation, "--conversation") if args.conversation else None
    # A throwaway in-memory store and no warm pool: one run, then nothing is left.
    settings = replace(settings, database_url="sqlite:///:memory:", api_key=None, pool_size=0)
    components = build(settings, role="run")
    store = components.store
    with store.session() as s:
        if egress:
            # This run's own ceiling: the hosts asked for, and nothing else.
            repo.set_org_policy(s, "local", OrgPolicy(egress=egress))
        action = repo.create_action(
            s,
            "local",
            "cli",
            {
                "name": "local",
                "type": "python",
                "code": code,
                "parameters": None,
                "description": None,
                "policy": Policy(timeout_ms=args.timeout_ms, egress=egress),
            },
        )
        conversation = None
        if conversation_in is not None:
            conversation = repo.create_conversation(
                s,
                "local",
                conversation_in.get("id", "local"),
                conversation_in.get("messages", []),
                conversation_in.get("metadata", {}),
                conversation_in.get("tags", []),
            )
    ref = None if conversation is None else ConversationRef(conversation.id)
    try:
        run = components.service.run(
            RunRequest(Caller("local", None, FrontDoor.CLI), action, call_args, ref)
        )
        assert isinstance(run, RunResult)  # no waitMs: never pending
        out: dict[str, Any] = run_out(run)
        if conversation is not None:
            with store.session() as s:
                after = repo.get_conversation(s, "local", conversation.id)
            out["conversationAfter"] = {
                "metadata": after.metadata,
                "tags": list(after.tags),
                "events": list(after.events),
                "handedOff": after.handed_off,
            }
    finally:
        components.close()  # finishes the container's removal before the process exits
    print(json.dumps(out, indent=2))
    return 0 if run.status == "ok" else 1


def _egress_arg(raw: list[str]) -> tuple[str, ...]:
    """Host patterns from repeated (or comma-separated) ``--egress``. Raises ConfigError."""
    from actioncage.egress.guard import parse_patterns

    entries = [e.strip() for item in raw for e in item.split(",") if e.strip()]
    try:
        return tuple(str(p) for p in parse_patterns(entries))
    except ValueError as exc:
        raise ConfigError(f"--egress: {exc}") from exc


def _json_arg(raw: str, flag: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{flag} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object")
    return value


def _image_build(args: argparse.Namespace, settings: Settings) -> int:
    script = Path(__file__).resolve().parents[2] / "sandbox-image" / "build.sh"
    if not script.is_file():
        raise ConfigError(f"{script} not found: run from a source checkout")
    cmd = ["bash", str(script)] + (["--force"] if args.force else [])
    return subprocess.call(cmd, cwd=script.parents[1])


def _store(settings: Settings) -> Store:
    """The configured store, migrated; says on stderr which database it is, so a command
    run against the wrong one is noticed at once."""
    from actioncage.store import Store

    store = Store(settings.database_url)
    store.upgrade()
    print(f"database: {store.shown_url}", file=sys.stderr)
    return store


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from actioncage.store import repo

    store = _store(settings)
    with store, store.session() as s:
        key, secret = repo.create_key(s, args.org)
    print(secret)
    print(f"key id {key.id} for org {key.org_id}", file=sys.stderr)
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print every key (of ``--org``): id, org, created, revoked (never a secret)."""
    from actioncage.store import repo

    store = _store(settings)
    with store, store.session() as s:
        keys = repo.list_keys(s, args.org)
    rows = [("ID", "ORG", "CREATED", "REVOKED")] + [
        (
            k.id,
            k.org_id,
            k.created_at.isoformat(timespec="seconds"),
            "-" if k.revoked_at is None else k.revoked_at.isoformat(timespec="seconds"),
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        print("  ".join([*cells, row[3]]))
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a key: its row says so at once, and with Redis every process's key cache
    forgets it within a second (without Redis each process reads the keys table as often)."""
    from actioncage.components import build_shared
    from actioncage.store import repo

    store = _store(settings)
    with store:
        with store.session() as s:
            key = repo.revoke_key(s, args.key_id)
        shared = build_shared(settings, store)
        try:
            shared.revocations.revoked(key.id)
        finally:
            shared.close()
    assert key.revoked_at is not None
    when = key.revoked_at.isoformat(timespec="seconds")
    print(f"key {key.id} of org {key.org_id} revoked at {when}")
    return 0


def _vault(settings: Settings) -> Any:
    from actioncage.store import Store
    from actioncage.vault import Vault

    store = Store(settings.database_url)
    store.upgrade()
    vault = Vault(store, settings.secrets_key_list)
    try:
        vault.check_readable()
    except BaseException:
        store.dispose()
        raise
    return store, vault


def _secrets_set(args: argparse.Namespace, settings: Settings) -> int:
    """Store the org's secret NAME with the value read from stdin (one trailing newline is
    dropped); the value is never printed."""
    value = sys.stdin.read()
    value = value[:-1] if value.endswith("\n") else value
    value = value[:-1] if value.endswith("\r") else value
    store, vault = _vault(settings)
    with store:
        record = vault.put(args.org, args.name, value)
    print(f"secret {record.name} of org {record.org_id} stored")
    return 0


def _secrets_list(args: argparse.Namespace, settings: Settings) -> int:
    store, vault = _vault(settings)
    with store:
        records = vault.list(args.org)
    for record in records:
        print(f"{record.name}  updated {record.updated_at.isoformat(timespec='seconds')}")
    return 0


def _secrets_delete(args: argparse.Namespace, settings: Settings) -> int:
    store, vault = _vault(settings)
    with store:
        vault.delete(args.org, args.name)
    print(f"secret {args.name} of org {args.org} deleted")
    return 0


def _secrets_new_key(args: argparse.Namespace, settings: Settings) -> int:
    from actioncage.vault import new_key

    print(new_key())
    return 0


def _secrets_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """Re-encrypt every secret with the first ACTIONCAGE_SECRETS_KEY (the older keys after it
    may then be dropped)."""
    store, vault = _vault(settings)
    with store:
        count = vault.rotate()
    print(f"{count} secret(s) re-encrypted with the first key")
    return 0


_ORG_LIMITS = (
    ("max_timeout_ms", int),
    ("max_memory_mb", int),
    ("max_cpus", float),
    ("runs_per_minute", int),
    ("concurrent_runs", int),
)


def _org_set_policy(args: argparse.Namespace, settings: Settings) -> int:
    """Merge the given ceilings into the org's policy (0 clears one) and print the result."""
    from dataclasses import asdict, replace

    from actioncage.egress.guard import parse_patterns
    from actioncage.models import Isolation, OrgPolicy
    from actioncage.store import repo

    store = _store(settings)
    with store, store.session() as s:
        current = repo.find_org_policy(s, args.org) or OrgPolicy()
        changes: dict[str, Any] = {}
        for name, _ in _ORG_LIMITS:
            value = getattr(args, name)
            if value is not None:
                if value < 0:
                    raise ConfigError(f"--{name.replace('_', '-')} must be 0 (unset) or more")
                changes[name] = value or None
        if args.restricted is not None:
            changes["restricted"] = args.restricted
        if args.min_isolation is not None:
            changes["min_isolation"] = (
                None if args.min_isolation == "any" else Isolation(args.min_isolation)
            )
        if args.egress is not None and args.inherit_egress:
            raise ConfigError("--egress and --inherit-egress contradict each other")
        if args.inherit_egress:
            changes["egress"] = None
        if args.egress is not None:
            # Each --egress adds; each may also list several, comma-separated.
            entries = [e.strip() for raw in args.egress for e in raw.split(",") if e.strip()]
            try:
                changes["egress"] = tuple(str(p) for p in parse_patterns(entries))
            except ValueError as exc:
                raise ConfigError(f"--egress: {exc}") from exc
        policy = repo.set_org_policy(s, args.org, replace(current, **changes))
    print(json.dumps({"org": args.org, **asdict(policy)}, indent=2))
    return 0


def _org_show_policy(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from actioncage.store import repo

    store = _store(settings)
    with store, store.session() as s:
        policy = repo.find_org_policy(s, args.org)
    print(json.dumps({"org": args.org, **(asdict(policy) if policy else {})}, indent=2))
    return 0


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate ACTIONCAGE_DATABASE_URL's schema to the newest revision and say so."""
    from actioncage.store import Store

    with Store(settings.database_url) as store:
        revision = store.upgrade()
    print(f"{store.shown_url}: at revision {revision}")
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from actioncage.audit.battery import print_table, run_battery

    if args.isolation is not None:
        settings = replace(settings, isolation=args.isolation)
    print(f"isolation tier: {settings.isolation}", file=sys.stdout)
    results = run_battery(settings)
    print_table(results, sys.stdout)
    return 0 if all(r.passed for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``actioncage`` console script."""
    parser = argparse.ArgumentParser(prog="actioncage")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--threads", type=int, default=None)
    serve.set_defaults(func=_serve)
    worker = sub.add_parser(
        "worker", help="run an executor worker: take runs from ACTIONCAGE_BROKER_URL"
    )
    worker.add_argument("--name", required=True, help="this worker's name (in run records)")
    worker.add_argument(
        "--slots", type=int, default=None, help="runs at once (default: MAX_CONCURRENT_RUNS)"
    )
    worker.set_defaults(func=_worker)
    workers = sub.add_parser("workers", help="list the live executor workers on the broker")
    workers.add_argument("--json", action="store_true")
    workers.set_defaults(func=_workers)
    run = sub.add_parser(
        "run",
        help="run a script in the sandbox and print the result",
        description="Run a script once in a fresh sandbox, with a throwaway in-memory store, "
        "and print the run as JSON. Scripts that use the conversation helpers "
        "(add_conversation_tag, set_conversation_metadata, ...) need --conversation; the "
        "conversation as the effects left it is printed as conversationAfter.",
        epilog='example: actioncage run greet.py --args \'{"name": "Ada"}\' '
        '--conversation \'{"id": "demo-1"}\' --egress api.example.com',
    )
    run.add_argument("script")
    run.add_argument("--args", default="{}", help="the args as a JSON object")
    run.add_argument(
        "--conversation",
        help='the conversation the run belongs to, as JSON: {"id": "demo-1"} at least, '
        'optionally "messages", "metadata" and "tags"',
    )
    run.add_argument(
        "--egress",
        action="append",
        metavar="HOST",
        help="a host pattern the script may reach (api.example.com, *.example.com, host:port); "
        "repeat or comma-separate for more. Unset: no network, as for an action without egress",
    )
    run.add_argument("--timeout-ms", type=int, default=None)
    run.set_defaults(func=_run)
    image = sub.add_parser("image", help="the sandbox image")
    image_sub = image.add_subparsers(dest="image_command", required=True)
    build = image_sub.add_parser("build", help="build the sandbox image (and its base)")
    build.add_argument("--force", action="store_true")
    build.set_defaults(func=_image_build)
    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--org", required=True)
    create.set_defaults(func=_keys_create)
    list_ = keys_sub.add_parser("list", help="list keys: id, org, created, revoked")
    list_.add_argument("--org", help="only this org's keys")
    list_.set_defaults(func=_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key everywhere (see `keys list`)")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_keys_revoke)
    org = sub.add_parser("org", help="per-org policy (ceilings, limits, restricted mode)")
    org_sub = org.add_subparsers(dest="org_command", required=True)
    set_policy = org_sub.add_parser("set-policy", help="set the org's ceilings (0 clears one)")
    set_policy.add_argument("org")
    for name, type_ in _ORG_LIMITS:
        set_policy.add_argument("--" + name.replace("_", "-"), type=type_, default=None)
    set_policy.add_argument(
        "--restricted",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the org's scripts with RestrictedPython",
    )
    set_policy.add_argument(
        "--egress",
        action="append",
        help="host patterns the org's scripts and API actions may reach (repeat to add; "
        "'' alone: none); replaces the org's list and the operator's default for it",
    )
    set_policy.add_argument(
        "--min-isolation",
        choices=[*ISOLATION_TIERS, "any"],
        help="the weakest isolation tier the org's actions may use (from weakest: "
        + ", ".join(ISOLATION_TIERS)
        + "); an action asking for less is refused, and runs are raised to it; any: no minimum",
    )
    set_policy.add_argument(
        "--inherit-egress",
        action="store_true",
        help="drop the org's own egress list: ACTIONCAGE_DEFAULT_EGRESS applies again",
    )
    set_policy.set_defaults(func=_org_set_policy)
    show_policy = org_sub.add_parser("show-policy", help="print the org's ceilings")
    show_policy.add_argument("org")
    show_policy.set_defaults(func=_org_show_policy)
    secrets = sub.add_parser("secrets", help="org secrets (ACTIONCAGE_SECRETS_KEY)")
    secrets_sub = secrets.add_subparsers(dest="secrets_command", required=True)
    secrets_set = secrets_sub.add_parser("set", help="store a secret, its value read from stdin")
    secrets_set.add_argument("org")
    secrets_set.add_argument("name")
    secrets_set.set_defaults(func=_secrets_set)
    secrets_list = secrets_sub.add_parser("list", help="list an org's secrets (never values)")
    secrets_list.add_argument("org")
    secrets_list.set_defaults(func=_secrets_list)
    secrets_delete = secrets_sub.add_parser("delete", help="remove a secret")
    secrets_delete.add_argument("org")
    secrets_delete.add_argument("name")
    secrets_delete.set_defaults(func=_secrets_delete)
    new_key = secrets_sub.add_parser("new-key", help="print a fresh ACTIONCAGE_SECRETS_KEY")
    new_key.set_defaults(func=_secrets_new_key)
    rotate = secrets_sub.add_parser(
        "rotate", help="re-encrypt every secret with the first ACTIONCAGE_SECRETS_KEY"
    )
    rotate.set_defaults(func=_secrets_rotate)
    db = sub.add_parser("db", help="the database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_sub.add_parser("upgrade", help="migrate the schema to the newest revision")
    db_upgrade.set_defaults(func=_db_upgrade)
    audit = sub.add_parser(
        "audit", help="run escape and abuse attempts against the live configuration"
    )
    audit.add_argument(
        "--isolation",
        choices=ISOLATION_TIERS,
        help="the tier to attack (default: ACTIONCAGE_ISOLATION)",
    )
    audit.set_defaults(func=_audit)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic narrates every step at INFO; store.migrate logs the one line that matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
        return int(args.func(args, settings))
    except ActioncageError as exc:
        print(f"actioncage: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"actioncage: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
