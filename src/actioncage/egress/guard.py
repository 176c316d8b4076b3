"""egress/: Decides which outbound hosts and addresses a run may reach. Stdlib only.

Used by everything that connects out on a script's or an action's behalf (the egress proxy,
API actions, callbacks). The rule: a host must match the allowlist, its name is resolved here,
and every resolved address must be public, or inside a CIDR the operator allowed on purpose.
Callers connect to the address this module returned, never re-resolve the name, so a DNS answer
that changes between check and connect (rebinding) cannot slip through.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from actioncage.errors import EgressRefusedError
from actioncage.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# Never reachable unless an operator allows a CIDR explicitly.
FORBIDDEN_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this" network
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",  # private (Docker's bridges live here)
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",
        "::1/128",
        "64:ff9b::/96",  # NAT64 (embeds IPv4)
        "100::/64",  # discard
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
    )
)


def _system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EgressRefusedError(f"{host}: cannot resolve ({exc})") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class HostPattern:
    """``api.example.com``, ``*.example.com`` (subdomains only), optionally ``:port``."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        """Parse one allowlist entry. Raises ValueError naming what is wrong."""
        raw = text.strip().lower()
        host, _, port_text = raw.rpartition(":") if raw.count(":") == 1 else (raw, "", "")
        port = None
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"{text!r}: port must be 1-65535")
            port = int(port_text)
        body = host[2:] if host.startswith("*.") else host
        labels = body.split(".")
        if not body or any(
            not label or len(label) > 63 or not all(c.isalnum() or c == "-" for c in label)
            for label in labels
        ):
            raise ValueError(f"{text!r}: not a host name or *.domain pattern")
        return cls(host=host, port=port)

    def matches(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        if self.port is not None and port != self.port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def parse_patterns(entries: Iterable[str]) -> tuple[HostPattern, ...]:
    """Parse an allowlist. Raises ValueError on the first bad entry."""
    return tuple(HostPattern.parse(e) for e in entries)


def pattern_within(pattern: HostPattern, ceiling: Iterable[HostPattern]) -> bool:
    """True when everything ``pattern`` allows is also allowed by some ceiling entry."""
    for c in ceiling:
        if c.port is not None and c.port != pattern.port:
            continue
        if c.host == pattern.host:
            return True
        if c.host.startswith("*.") and pattern.host.endswith(c.host[1:]):
            return True
    return False


class EgressGuard:
    """Checks hosts against an allowlist and addresses against the forbidden ranges."""

    def __init__(
        self,
        allowed_cidrs: Iterable[str] = (),
        own_addresses: Iterable[str] = (),
        resolver: Resolver | None = None,
    ) -> None:
        self._allowed = tuple(ipaddress.ip_network(c, strict=False) for c in allowed_cidrs)
        self._own = frozenset(ipaddress.ip_address(a) for a in own_addresses)
        self._resolve = resolver or _system_resolver

    def check_address(self, address: str) -> IPAddress:
        """The address, if a run may connect to it. Raises EgressRefusedError saying why."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError as exc:
            raise EgressRefusedError(f"{address!r} is not an IP address") from exc
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip in self._own:
            raise EgressRefusedError(f"{ip} is the control plane itself")
        if any(ip in net for net in self._allowed):
            return ip
        for net in FORBIDDEN_NETWORKS:
            if ip.version == net.version and ip in net:
                raise EgressRefusedError(f"{ip} is in a forbidden range ({net})")
        return ip

    def resolve(self, host: str, port: int, patterns: Iterable[HostPattern] | None) -> IPAddress:
        """The checked address to connect to for ``host:port``.

        ``patterns`` None means "no host allowlist applies" (an operator-configured call).
        Every address the name resolves to must pass, so a name that mixes public and
        private answers is refused as a whole. Raises EgressRefusedError.
        """
        if not 0 < port < 65536:
            raise EgressRefusedError(f"port {port} is out of range")
        if patterns is not None and not any(p.matches(host, port) for p in patterns):
            raise EgressRefusedError(f"{host}:{port} is not on the egress allowlist")
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        addresses = [str(literal)] if literal is not None else self._resolve(host, port)
        if not addresses:
            raise EgressRefusedError(f"{host}: no addresses")
        checked = [self.check_address(a) for a in addresses]
        return checked[0]


def guard_from_settings(settings: Settings) -> EgressGuard:
    """The guard the operator configured: allowed CIDRs, fixed resolutions, own address.

    Every outbound path (egress proxy, API actions, callbacks) uses this one guard.
    """
    cidrs = settings.egress_allowed_cidr_list
    own = []
    with contextlib.suppress(ValueError):
        host = ipaddress.ip_address(settings.host)
        if not host.is_loopback and not host.is_unspecified:
            own.append(str(host))
    fixed = {k.lower(): v for k, v in settings.egress_resolve.items()}

    def resolve(name: str, port: int) -> list[str]:
        if name.lower().rstrip(".") in fixed:
            return [fixed[name.lower().rstrip(".")]]
        return _system_resolver(name, port)

    return EgressGuard(allowed_cidrs=cidrs, own_addresses=own, resolver=resolve)
