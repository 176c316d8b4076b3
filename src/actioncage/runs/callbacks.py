"""runs/: POSTs a finished run to the caller's callbackUrl: signed, retried with back-off, and
only to addresses the egress guard allows."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import threading
import urllib.parse
from dataclasses import dataclass

import urllib3

from actioncage.egress.guard import EgressGuard, guard_from_settings
from actioncage.errors import EgressRefusedError, ValidationFailedError
from actioncage.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Actioncage-Signature"
_MAX_BACKOFF_MS = 60_000


@dataclass(frozen=True)
class Attempt:
    """What one POST of a callback came to; ``error`` says why it was not accepted."""

    delivered: bool
    retry: bool
    error: str | None


def sign(body: bytes, secret: str) -> str:
    """The signature header's value: ``sha256=<hex HMAC-SHA256 of the body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class CallbackSender:
    """Delivers run results to callback URLs."""

    def __init__(self, settings: Settings, guard: EgressGuard | None = None) -> None:
        self._settings = settings
        self._guard = guard or guard_from_settings(settings)
        self._closed = threading.Event()

    def check_url(self, url: object) -> str:
        """The URL, if it is http(s) and its host resolves to allowed addresses.

        Raises ValidationFailedError naming callbackUrl.
        """
        try:
            self._target(url)
        except EgressRefusedError as exc:
            raise ValidationFailedError(f"callbackUrl refused: {exc}", "callbackUrl") from exc
        assert isinstance(url, str)
        return url

    def _target(self, url: object) -> tuple[urllib.parse.SplitResult, str, int, str]:
        if not isinstance(url, str) or len(url) > 2048:
            raise ValidationFailedError(
                "callbackUrl must be an http(s) URL of at most 2048 characters", "callbackUrl"
            )
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValidationFailedError("callbackUrl has a bad port", "callbackUrl") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise ValidationFailedError(
                "callbackUrl must be an http(s) URL with a host and no credentials", "callbackUrl"
            )
        port = port or (443 if parts.scheme == "https" else 80)
        ip = self._guard.resolve(parts.hostname, port, None)
        return parts, parts.hostname, port, str(ip)

    def attempt(self, url: str, body: bytes, secret: str) -> Attempt:
        """POST ``body`` to ``url`` once, signed.

        Returns whether it was accepted (2xx), and if not whether to try again: network
        failures, 429 and 5xx are worth retrying; other answers and refused addresses are
        not. Never raises.
        """
        try:
            status = self._post(url, body, secret)
        except (EgressRefusedError, ValidationFailedError) as exc:
            return Attempt(delivered=False, retry=False, error=f"refused: {exc}")
        except urllib3.exceptions.HTTPError as exc:
            return Attempt(delivered=False, retry=True, error=f"failed: {exc}")
        if 200 <= status < 300:
            return Attempt(delivered=True, retry=False, error=None)
        return Attempt(
            delivered=False, retry=status == 429 or status >= 500, error=f"answered {status}"
        )

    def backoff_ms(self, attempts: int) -> int:
        """How long to wait after the ``attempts``-th failed attempt: doubling, capped."""
        delay = self._settings.callback_backoff_ms * 2 ** min(max(attempts - 1, 0), 20)
        return int(min(delay, _MAX_BACKOFF_MS))

    def deliver(self, url: str, body: bytes, secret: str) -> bool:
        """POST ``body`` to ``url`` until a 2xx answer or the attempts run out, waiting
        ``backoff_ms`` between attempts, in this thread (the outbox is the durable path).

        Returns whether the callback was accepted. Never raises.
        """
        for attempt in range(1, self._settings.callback_max_attempts + 1):
            result = self.attempt(url, body, secret)
            if result.delivered:
                return True
            log.info("callback to %s attempt %d %s", url, attempt, result.error)
            if not result.retry:
                return False
            if attempt < self._settings.callback_max_attempts and self._closed.wait(
                self.backoff_ms(attempt) / 1000
            ):
                return False
        log.warning("callback to %s gave up after %d attempts", url, attempt)
        return False

    def _post(self, url: str, body: bytes, secret: str) -> int:
        parts, host, port, ip = self._target(url)
        # Connect to the address the guard checked; the name is only for Host and TLS.
        address = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
        timeout = urllib3.Timeout(total=self._settings.callback_timeout_ms / 1000)
        pool: urllib3.HTTPConnectionPool
        if parts.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                address, port, timeout=timeout, server_hostname=host, assert_hostname=host
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Host": parts.netloc.rpartition("@")[2],
            "Content-Type": "application/json",
            "User-Agent": "actioncage-callback",
            SIGNATURE_HEADER: sign(body, secret),
        }
        try:
            response = pool.urlopen(
                "POST", path, body=body, headers=headers, retries=False, redirect=False
            )
            return int(response.status)
        finally:
            pool.close()

    def close(self) -> None:
        """Stop waiting between attempts."""
        self._closed.set()
