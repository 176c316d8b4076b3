from __future__ import annotations

from pathlib import Path

import pytest

from actioncage.errors import ConfigError
from actioncage.settings import Settings, default_database_url
from actioncage.store import Store


def test_from_env_reads_prefixed_variables_with_types() -> None:
    s = Settings.from_env(
        {
            "ACTIONCAGE_PORT": "9090",
            "ACTIONCAGE_DEFAULT_CPUS": "0.5",
            "ACTIONCAGE_HOST": "0.0.0.0",
            "ACTIONCAGE_CONTAINER_LABELS": "a=1,b=2",
            "OTHER": "x",
        }
    )
    assert (s.port, s.default_cpus, s.host) == (9090, 0.5, "0.0.0.0")
    assert s.container_labels == {"a": "1", "b": "2"}


def test_from_env_names_the_bad_variable() -> None:
    with pytest.raises(ConfigError, match="ACTIONCAGE_PORT"):
        Settings.from_env({"ACTIONCAGE_PORT": "eighty"})


def test_default_beyond_maximum_is_refused() -> None:
    with pytest.raises(ConfigError, match="DEFAULT_TIMEOUT_MS"):
        Settings.from_env({"ACTIONCAGE_DEFAULT_TIMEOUT_MS": "70000"})


def test_defaults_are_the_documented_limits() -> None:
    s = Settings()
    assert (s.default_timeout_ms, s.max_timeout_ms, s.default_memory_mb, s.default_cpus) == (
        10_000,
        60_000,
        256,
        1.0,
    )
    assert (s.pids_limit, s.tmpfs_mb, s.max_output_bytes) == (64, 16, 1024 * 1024)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ACTIONCAGE_JOB_LEASE_S": "0"}, "JOB_LEASE_S"),
        # A lease must survive one missed renewal.
        ({"ACTIONCAGE_JOB_LEASE_S": "4", "ACTIONCAGE_JOB_RENEW_S": "3"}, "JOB_RENEW_S"),
        ({"ACTIONCAGE_JOB_REAP_S": "-1"}, "JOB_REAP_S"),
        # A callback claim must outlast one attempt.
        ({"ACTIONCAGE_CALLBACK_LEASE_S": "5"}, "CALLBACK_LEASE_S"),
    ],
)
def test_lease_settings_that_cannot_work_are_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_default_leases_end_a_dead_process_s_run_within_30_s() -> None:
    s = Settings()
    assert s.job_lease_s + s.job_reap_s <= 25


def test_the_default_database_is_the_checkouts_whatever_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = Settings.from_env({}).database_url
    checkout = Path(__file__).resolve().parents[1]
    assert url == f"sqlite:///{checkout / 'var' / 'actioncage.db'}"


def test_without_a_checkout_the_database_url_is_required(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "actioncage"
    package.mkdir(parents=True)
    assert default_database_url(package) == ""
    checkout = tmp_path / "repo"
    (checkout / "src" / "actioncage").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\n")
    assert default_database_url(checkout / "src" / "actioncage") == (
        f"sqlite:///{checkout / 'var' / 'actioncage.db'}"
    )
    # An executor worker's host has no database: its settings need none. Whatever does
    # need the database says what to set.
    assert Settings(database_url="").database_url == ""
    with pytest.raises(ConfigError, match="ACTIONCAGE_DATABASE_URL is not set"):
        Store("")


@pytest.mark.parametrize(
    "url",
    ["http://mq:5672", "amqp://", "amqp://mq:notaport//", "redis://mq/db", "kafka://mq"],
)
def test_a_malformed_broker_url_stops_start_up_naming_the_variable_not_the_url(url: str) -> None:
    with pytest.raises(ConfigError, match="ACTIONCAGE_BROKER_URL") as caught:
        Settings.from_env({"ACTIONCAGE_BROKER_URL": url})
    assert url not in str(caught.value)


def test_rabbitmq_and_redis_broker_urls_are_taken() -> None:
    for url in ("amqp://u:p@mq:5672//", "amqps://mq/vhost", "redis://mq:6379/1", "rediss://mq"):
        assert Settings.from_env({"ACTIONCAGE_BROKER_URL": url}).broker_url == url
