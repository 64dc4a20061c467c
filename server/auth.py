"""Server side of SIP digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760) and failure throttling.

Pure: ``now`` comes in; the nonce secret comes from an injected random source. The digest maths, nonces
(stateless, expiring, nonce-count replay refused) live in :mod:`gamesdk.sip.digest`; this module adds the server's
view of the outcome and the failure throttle that slows down and then refuses password guessing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip import digest

__all__ = [
    "AuthResult",
    "AuthStatus",
    "CredentialLookup",
    "DigestAuthenticator",
    "FailureThrottle",
    "ThrottleVerdict",
]

log = logging.getLogger(__name__)


class CredentialLookup(Protocol):
    """Where HA1 values come from (``AccountStore`` in the server, a dict in tests)."""

    def ha1(self, name: str, algorithm: str) -> str | None: ...


class AuthStatus(Enum):
    #: No credentials for our realm: challenge.
    MISSING = "missing"
    #: Credentials are right.
    OK = "ok"
    #: The password was right but the nonce expired: challenge again with ``stale=true`` (RFC 7616 3.3).
    STALE = "stale"
    #: Wrong password, unknown user, replayed nonce count: a failure that counts for throttling.
    FAILED = "failed"
    #: The header is not parseable: 400.
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class AuthResult:
    status: AuthStatus
    #: The user name the credentials named (for logs and throttling; only trusted when ``status`` is OK).
    username: str | None = None
    reason: str = ""


class DigestAuthenticator:
    """Challenges and checks credentials for one realm, on top of :class:`gamesdk.sip.digest.DigestAuthenticator`.

    Adds what a server needs around it: picking our realm's credentials among several header lines, and
    telling "no credentials" (challenge) from "wrong credentials" (a failure that is counted and throttled).
    ``algorithms`` is the challenge order (RFC 8760 section 2.3: most preferred first).
    """

    def __init__(self, realm: str, algorithms: tuple[str, ...], credentials: CredentialLookup, *,
                 nonce_lifetime_s: float, random_bytes: Callable[[int], bytes]) -> None:
        self.realm = realm
        self.algorithms = algorithms
        self.credentials = credentials
        self._core = digest.DigestAuthenticator(realm, secret=random_bytes(32), random_bytes=random_bytes,
                                                algorithms=algorithms, nonce_lifetime_s=nonce_lifetime_s)

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """One challenge per algorithm, in the configured order, sharing one nonce."""
        return self._core.challenges(now, stale=stale)

    def verify(self, header_values: list[str], method: str, now: float, uri: str | None = None) -> AuthResult:
        """Check the ``Authorization``/``Proxy-Authorization`` values of a request against our realm.

        ``uri`` (the Request-URI) must then equal the credentials' digest-uri (RFC 3261 section 22.4).
        """
        mine: digest.Credentials | None = None
        for value in header_values:
            try:
                cred = digest.Credentials.parse_untrusted(value)
            except RemoteProtocolError as exc:
                return AuthResult(AuthStatus.MALFORMED, reason=f"Malformed credentials: {exc.message}")
            if cred.realm == self.realm:
                mine = cred
                break
        if mine is None:
            return AuthResult(AuthStatus.MISSING)
        # The checks of gamesdk.sip.digest.DigestAuthenticator.verify, on the credentials parsed above (parsing
        # them twice cost 3% of the server's CPU per call).
        user = mine.username
        if mine.algorithm not in self.algorithms:
            return AuthResult(AuthStatus.FAILED, user, f"algorithm {mine.algorithm} not offered")
        if mine.qop != "auth":
            return AuthResult(AuthStatus.FAILED, user, "qop=auth is required")  # no nc without qop: no replay check
        if uri is not None and mine.uri != uri:
            return AuthResult(AuthStatus.FAILED, user, "digest uri does not match the Request-URI")
        ha1 = self.credentials.ha1(user, mine.algorithm)
        if ha1 is None:
            return AuthResult(AuthStatus.FAILED, user, "unknown user")
        if not digest.verify_response(mine, ha1=ha1, method=method):
            return AuthResult(AuthStatus.FAILED, user, "wrong response")
        # The password is right: an expired or forgotten nonce is only stale (RFC 7616 section 3.3).
        status = self._core.nonces.use(mine.nonce, mine.nc, now)
        if status is digest.NonceStatus.VALID:
            return AuthResult(AuthStatus.OK, user)
        if status is digest.NonceStatus.REPLAYED:
            return AuthResult(AuthStatus.FAILED, user, f"nonce count {mine.nc:08x} replayed")
        return AuthResult(AuthStatus.STALE, user, f"nonce {status.value}")


# -- failure throttling ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThrottleVerdict:
    #: Refuse outright (403) until the block ends.
    blocked: bool
    #: Hold the answer this long (seconds) before sending it: slows password guessing.
    delay_s: float = 0.0


@dataclass(slots=True)
class _FailureRecord:
    times: list[float] = field(default_factory=list)
    blocked_until: float = 0.0


class FailureThrottle:
    """Counts authentication failures per key (``user:alice``, ``addr:10.0.0.1``) in a sliding window.

    After ``slow_after`` failures each further answer is delayed (``delay_step_s`` more each time, up to
    ``max_delay_s``); after ``block_after`` failures the key is refused for ``block_s``. Address keys
    (``addr:...``) get ``address_factor`` times the thresholds: many players share one address behind a NAT
    (or on loopback in tests), and one of them mistyping a password must not lock the others out.
    """

    def __init__(self, *, slow_after: int, block_after: int, window_s: float, delay_step_s: float,
                 max_delay_s: float, block_s: float, max_keys: int = 100_000, address_factor: int = 5) -> None:
        self.slow_after = slow_after
        self.block_after = block_after
        self.window_s = window_s
        self.delay_step_s = delay_step_s
        self.max_delay_s = max_delay_s
        self.block_s = block_s
        self.max_keys = max_keys
        self.address_factor = address_factor
        self._records: dict[str, _FailureRecord] = {}

    def _factor(self, key: str) -> int:
        return self.address_factor if key.startswith("addr:") else 1

    def check(self, keys: list[str], now: float) -> ThrottleVerdict:
        """How to treat a request from these keys right now (before its credentials are checked)."""
        delay = 0.0
        for key in keys:
            record = self._records.get(key)
            if record is None:
                continue
            if record.blocked_until > now:
                return ThrottleVerdict(True)
            recent = sum(1 for t in record.times if t > now - self.window_s)
            slow_after = self.slow_after * self._factor(key)
            if recent >= slow_after:
                delay = max(delay, min(self.max_delay_s, self.delay_step_s * (recent - slow_after + 1)))
        return ThrottleVerdict(False, delay)

    def failed(self, keys: list[str], now: float) -> bool:
        """Record one failure for each key; returns True if one of them just became blocked."""
        newly_blocked = False
        if len(self._records) > self.max_keys:
            self._records = {k: r for k, r in self._records.items()
                             if r.blocked_until > now or any(t > now - self.window_s for t in r.times)}
        for key in keys:
            record = self._records.setdefault(key, _FailureRecord())
            record.times = [t for t in record.times if t > now - self.window_s]
            record.times.append(now)
            if len(record.times) >= self.block_after * self._factor(key) and record.blocked_until <= now:
                record.blocked_until = now + self.block_s
                record.times.clear()
                newly_blocked = True
                log.warning("auth: %s blocked for %.0f s after %d failures", key, self.block_s,
                            self.block_after * self._factor(key))
        return newly_blocked

    def blocked(self, now: float) -> list[tuple[str, float, int]]:
        """Keys blocked or slowed down now: (key, seconds of block left or 0, failures in the window)."""
        out = []
        for key, record in self._records.items():
            recent = sum(1 for t in record.times if t > now - self.window_s)
            left = max(0.0, record.blocked_until - now)
            if left > 0 or recent >= self.slow_after * self._factor(key):
                out.append((key, left, recent))
        return sorted(out)

    def unblock(self, key: str) -> bool:
        """Forget ``key``'s failures and block (an operator's decision); False if it had none."""
        return self._records.pop(key, None) is not None

    def succeeded(self, keys: list[str]) -> None:
        """A success clears the user's record (not a blocked one)."""
        for key in keys:
            record = self._records.get(key)
            if record is not None and not record.times and record.blocked_until == 0.0:
                del self._records[key]
            elif record is not None:
                record.times.clear()
