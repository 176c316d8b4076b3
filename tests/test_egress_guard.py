from __future__ import annotations

import pytest

from actioncage.egress.guard import EgressGuard, HostPattern, parse_patterns, pattern_within
from actioncage.errors import EgressRefusedError


def _resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    return lambda host, port: table[host]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.17.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_forbidden_addresses_are_refused(address: str) -> None:
    with pytest.raises(EgressRefusedError):
        EgressGuard().check_address(address)


def test_public_address_passes_and_operator_cidr_opens_a_private_one() -> None:
    assert str(EgressGuard().check_address("93.184.216.34")) == "93.184.216.34"
    assert str(EgressGuard(allowed_cidrs=["127.0.0.0/8"]).check_address("127.0.0.1")) == "127.0.0.1"


def test_own_address_is_refused_even_inside_an_allowed_cidr() -> None:
    guard = EgressGuard(allowed_cidrs=["127.0.0.0/8"], own_addresses=["127.0.0.1"])
    with pytest.raises(EgressRefusedError, match="control plane"):
        guard.check_address("127.0.0.1")


def test_resolve_checks_allowlist_and_every_answer() -> None:
    patterns = parse_patterns(["api.example.com", "*.shop.example:443"])
    guard = EgressGuard(
        resolver=_resolver(
            {
                "api.example.com": ["93.184.216.34"],
                "eu.shop.example": ["93.184.216.35"],
                "rebind.shop.example": ["93.184.216.36", "127.0.0.1"],
            }
        )
    )
    assert str(guard.resolve("api.example.com", 80, patterns)) == "93.184.216.34"
    assert str(guard.resolve("eu.shop.example", 443, patterns)) == "93.184.216.35"
    with pytest.raises(EgressRefusedError, match="allowlist"):
        guard.resolve("eu.shop.example", 8443, patterns)
    with pytest.raises(EgressRefusedError, match="allowlist"):
        guard.resolve("shop.example", 443, patterns)  # *. means subdomains only
    with pytest.raises(EgressRefusedError, match="allowlist"):
        guard.resolve("evil.com", 443, patterns)
    with pytest.raises(EgressRefusedError, match="forbidden"):
        guard.resolve("rebind.shop.example", 443, patterns)
    with pytest.raises(EgressRefusedError, match="forbidden"):
        EgressGuard().resolve("169.254.169.254", 80, None)


@pytest.mark.parametrize(
    "bad", ["", "*.", "a b.com", "x.com:0", "x.com:99999", "exa_mple.com", "*.*.com"]
)
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        HostPattern.parse(bad)


def test_pattern_within_ceiling() -> None:
    ceiling = parse_patterns(["*.example.com", "api.other.com:443"])
    assert pattern_within(HostPattern.parse("a.example.com"), ceiling)
    assert pattern_within(HostPattern.parse("*.b.example.com"), ceiling)
    assert pattern_within(HostPattern.parse("api.other.com:443"), ceiling)
    assert not pattern_within(HostPattern.parse("api.other.com"), ceiling)  # any port > 443 only
    assert not pattern_within(HostPattern.parse("example.com"), ceiling)
    assert not pattern_within(HostPattern.parse("evil.com"), ceiling)
