"""Security settings are parsed and checked at start-up, naming the variable."""

from __future__ import annotations

import pytest

from actioncage.errors import ConfigError
from actioncage.settings import Settings


def test_egress_and_limit_settings_parse_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ACTIONCAGE_EGRESS_ALLOWED_CIDRS": "10.20.0.0/16, 127.0.0.1/32",
            "ACTIONCAGE_EGRESS_RESOLVE": "api.internal=10.20.0.5,b.test=::1",
            "ACTIONCAGE_KEY_RUNS_PER_MINUTE": "60",
            "ACTIONCAGE_KEY_CONCURRENT_RUNS": "2",
            "ACTIONCAGE_DOCKER_RUNTIME": "runsc",
        }
    )
    assert settings.egress_resolve == {"api.internal": "10.20.0.5", "b.test": "::1"}
    assert settings.key_runs_per_minute == 60 and settings.key_concurrent_runs == 2
    assert settings.docker_runtime == "runsc"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ACTIONCAGE_EGRESS_ALLOWED_CIDRS", "10.0.0.0/33"),
        ("ACTIONCAGE_EGRESS_RESOLVE", "a.test=not-an-ip"),
        ("ACTIONCAGE_KEY_RUNS_PER_MINUTE", "-1"),
    ],
)
def test_a_bad_security_setting_stops_start_up(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_docker_runtime_reaches_the_container_options() -> None:
    from actioncage.models import Policy
    from actioncage.sandbox.limits import container_options, effective_limits

    settings = Settings(docker_runtime="runsc")
    options = container_options(effective_limits(Policy(), settings), settings)
    assert options["host_config"]["runtime"] == "runsc"
    assert (
        "runtime"
        not in container_options(effective_limits(Policy(), Settings()), Settings())["host_config"]
    )


def test_policy_hashes_remember_policy_hash_per_limits_and_stay_bounded() -> None:
    from dataclasses import replace

    from actioncage.models import Isolation, Policy
    from actioncage.sandbox.limits import PolicyHashes, effective_limits, policy_hash

    settings = Settings()
    hashes = PolicyHashes(settings)
    base = effective_limits(Policy(), settings)
    cases = [
        base,
        replace(base, memory_mb=base.memory_mb * 2),
        replace(base, isolation=Isolation.JAIL),
        replace(base, egress_dir="/run/a"),
    ]
    for limits in cases:
        assert hashes(limits) == hashes(limits) == policy_hash(limits, settings)
    assert len({hashes(limits) for limits in cases}) == len(cases)
    # Each run's proxy socket directory differs; what confines it does not.
    assert hashes(replace(base, egress_dir="/run/b")) == hashes(cases[3])
    for timeout_ms in range(1, 600):
        hashes(replace(base, timeout_ms=timeout_ms))
    assert len(hashes._known) <= PolicyHashes._MAX
    assert hashes(base) == policy_hash(base, settings)
