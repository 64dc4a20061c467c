"""The server's one login flow (RFC 3261 section 22, RFC 8760) for REGISTER, INVITE and PUBLISH, and the failure
throttle behind it. Pure: ``now`` comes in; the nonce secret comes from an injected random source.

The digest checks themselves (nonces, nonce counts with a reordering window, the response) are
:class:`gamesdk.sip.digest.DigestAuthenticator`'s. This module adds what a server decides around them:

- ``authenticate(request, client, now)`` -> :class:`Authenticated` or :class:`Challenge` (status, reason, headers,
  delay): the caller sends the challenge as it is, statelessly, after ``delay_s``;
- a failure counts only for credentials built on a fresh nonce this server issued: forged nonces, expired ones,
  replayed or reordered nonce counts get a new challenge and never lock anybody out;
- the throttle keys failures by (user, client address) and by client address; a user's failures from *other*
  addresses only slow that user's answers down, they never refuse a right password;
- a digest uri (or Request-URI) that names this server by one of its listen addresses names this server (like
  Kamailio's ``myself``), so SIPp's stock REGISTER, which puts the destination address there, logs in.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip import digest
from gamesdk.sip._grammar import find_param
from gamesdk.sip.headers import Via, split_header_values
from gamesdk.sip.message import REASON_PHRASES, Request
from gamesdk.sip.uri import SipUri
from server.loglimit import clip
from server.proxy_responses import COPIED_FIELDS, marked_via

__all__ = [
    "Authenticated",
    "Challenge",
    "CredentialLookup",
    "FailureThrottle",
    "LoginFlow",
    "ThrottleVerdict",
    "answer_bytes",
    "answer_bytes_direct",
]

log = logging.getLogger(__name__)


class CredentialLookup(Protocol):
    """Where HA1 values come from (``AccountStore`` in the server, a dict in tests)."""

    def ha1(self, name: str, algorithm: str) -> str | None: ...


# Not frozen, though never changed once made: a frozen dataclass's __init__ sets each field through
# object.__setattr__ (3.6 µs more for ten fields in CPython), and logins make these. Hashable as before. Their
# __init__s written out (the same parameters): the compiled build runs a dataclass's generated one interpreted,
# where a written one stores the fields natively (every login and call makes both).
@dataclass(slots=True, unsafe_hash=True, init=False)
class Authenticated:
    """The request carries right, fresh credentials of ``user``."""

    user: str

    def __init__(self, user: str) -> None:
        self.user = user


@dataclass(slots=True, unsafe_hash=True, init=False)
class Challenge:
    """Answer the request with this and nothing else: no state, no retransmission (RFC 3261 section 22 over UDP).

    ``status`` is 401/407 (a challenge, ``headers`` hold it), 403 (refused, ``reason`` says why) or 400.
    """

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: Send the answer only after this many seconds (failure throttling).
    delay_s: float = 0.0
    #: The user name the credentials claimed, for logs (never trusted).
    claimed: str | None = None

    def __init__(self, status: int, reason: str | None = None, headers: tuple[tuple[str, str], ...] = (),
                 delay_s: float = 0.0, claimed: str | None = None) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.delay_s = delay_s
        self.claimed = claimed


# The verdicts as module globals: in CPython 3.11 ``digest.Verdict.OK`` goes through EnumType.__getattr__'s hook.
_OK = digest.Verdict.OK
_CHALLENGE = digest.Verdict.CHALLENGE
_REPLAYED = digest.Verdict.REPLAYED
_REFUSED = digest.Verdict.REFUSED


# -- the server's own answers, straight to bytes -------------------------------------------------------------

#: Status lines by (status, reason): the same few on every login and challenge.
_STATUS_LINES: Final[dict[tuple[int, str | None], str]] = {}
#: The lines of the usual reason phrase, by status (100-699): an item read, where the pair's lookup made, hashed and
#: compared a tuple (~500 instructions an answer compiled; two answers a login). Filled as met.
_PHRASED_LINES: Final[list[str | None]] = [None] * 700


def _status_line(status: int, reason: str | None) -> str:
    if reason is None and 100 <= status < 700:
        phrased = _PHRASED_LINES[status]
        if phrased is None:
            phrased = _PHRASED_LINES[status] = f"SIP/2.0 {status} {REASON_PHRASES.get(status, 'Unknown')}"
        return phrased
    key = (status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        line = f"SIP/2.0 {status} {REASON_PHRASES.get(status, 'Unknown') if reason is None else reason}"
        if len(_STATUS_LINES) < 256:  # reasons may quote what a request carried: bounded
            _STATUS_LINES[key] = line
    return line


def answer_bytes_direct(request: Request, source: tuple[str, int], status: int, reason: str | None = None, *,
                        to_tag: str | None = None, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """The bytes of ``response_for(request, status, reason, to_tag=..., extra=...)`` with its top Via marked for
    ``source`` (``mark_received``) and serialised (``to_bytes``), written in one pass over the request's fields:
    no Response, no header list, no second pass (the stateless 401/407 of every login and call, the registrar's
    answers). The same bytes, field for field (tests/server/test_login_answers.py compares them)."""
    return answer_bytes(request.headers._items, request.top_via, source, status, reason, to_tag=to_tag,
                        extra=extra)


def answer_bytes(items: list[tuple[str, str, str]], via: Via, source: tuple[str, int], status: int,
                 reason: str | None = None, *, to_tag: str | None = None,
                 extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """:func:`answer_bytes_direct` of a request given by its header fields (key, name as written, value; only
    the copied ones are read) and its top Via parsed: the challenge path reads those from the bytes
    (``server.splice.read_register``) without a Request."""
    # (a list and its own append: compiled, both native, where a Sequence is iterated and a bound append called
    # through the interpreter)
    lines = [_status_line(status, reason)]
    tag = to_tag if status != 100 else None
    top = True
    for key, name, value in items:
        if key not in COPIED_FIELDS:
            continue
        if key == "via":
            if top:
                top = False
                if via.host != source[0] or find_param(via.params, "rport") is not None:  # Via.rport's read
                    # mark_received (marked_via writes the usual Via, a bare rport last, without reading it):
                    # the top value replaced where it is, the rest of its line after it
                    if "," in value:
                        parts = split_header_values(value)
                        if len(parts) > 1:
                            lines.append(f"Via: {marked_via(via, parts[0], source)}")
                            lines.append(f"{name}: {', '.join(parts[1:])}")
                            continue
                        value = parts[0]
                    lines.append(f"Via: {marked_via(via, value, source)}")
                    continue
        elif key == "to" and tag is not None and "tag=" not in value and ("=" not in value
                                                                          or "tag=" not in value.lower()):
            value = f"{value};tag={tag}"
        lines.append(f"{name}: {value}")
    for name, value in extra:
        lines.append(f"{name}: {value}")
    lines.append("Content-Length: 0\r\n\r\n")
    return "\r\n".join(lines).encode()


# -- failure throttling ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThrottleVerdict:
    #: Refuse outright (403) until the block ends.
    blocked: bool
    #: Hold the answer this long (seconds) before sending it: slows password guessing.
    delay_s: float = 0.0


_CLEAR = ThrottleVerdict(False, 0.0)


def _pair_key(user: str, client: str) -> tuple[str, str]:
    return ("pair", f"{user}\x00{client}")


class _Record:
    __slots__ = ("blocked_until", "times")

    def __init__(self, keep: int) -> None:
        self.times: deque[float] = deque(maxlen=keep)
        self.blocked_until = 0.0

    def recent(self, now: float, window_s: float) -> int:
        times = self.times
        while times and times[0] <= now - window_s:
            times.popleft()
        return len(times)


class FailureThrottle:
    """Counts authentication failures in a sliding window under three kinds of key.

    - ``(user, client)``: after ``slow_after`` failures each answer is delayed (``delay_step_s`` more each time,
      up to ``max_delay_s``); after ``block_after`` the pair is refused for ``block_s``.
    - ``client`` alone (guessing across many accounts): the same with ``address_factor`` times the thresholds,
      since many players share an address behind a NAT.
    - ``user`` alone (every client): only ever a delay, never a refusal. Failures sent from other (possibly
      forged) addresses must not lock the player out.

    ``client`` is the address the request came from, or the one a trusted proxy reports for it. The table holds
    at most ``max_keys`` records; the least recently touched go first, in O(1).
    """

    def __init__(self, *, slow_after: int, block_after: int, window_s: float, delay_step_s: float,
                 max_delay_s: float, block_s: float, max_keys: int = 50_000, address_factor: int = 5) -> None:
        self.slow_after = slow_after
        self.block_after = block_after
        self.window_s = window_s
        self.delay_step_s = delay_step_s
        self.max_delay_s = max_delay_s
        self.block_s = block_s
        self.max_keys = max_keys
        self.address_factor = address_factor
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    @staticmethod
    def _keys(user: str, client: str) -> tuple[tuple[str, str], tuple[str, str], tuple[str, str]]:
        return _pair_key(user, client), ("addr", client), ("user", user)

    def _factor(self, kind: str) -> int:
        return self.address_factor if kind == "addr" else 1

    def _delay(self, record: _Record | None, factor: int, now: float) -> float:
        if record is None:
            return 0.0
        recent = record.recent(now, self.window_s)
        slow_after = self.slow_after * factor
        if recent < slow_after:
            return 0.0
        return min(self.max_delay_s, self.delay_step_s * (recent - slow_after + 1))

    def check(self, user: str, client: str, now: float) -> ThrottleVerdict:
        """How to treat credentials for ``user`` from ``client`` right now (before they are checked)."""
        if not self._records:
            return _CLEAR  # no failure anywhere (the usual case): nothing to look up
        delay = 0.0
        for key in self._keys(user, client):
            record = self._records.get(key)
            if record is None:
                continue
            if key[0] != "user" and record.blocked_until > now:
                return ThrottleVerdict(True)
            delay = max(delay, self._delay(record, self._factor(key[0]), now))
        return ThrottleVerdict(False, delay) if delay else _CLEAR

    def failed(self, user: str, client: str, now: float) -> None:
        """Record one failure (a wrong password with a fresh nonce of ours)."""
        records = self._records
        for key in self._keys(user, client):
            kind = key[0]
            limit = self.block_after * self._factor(kind)
            record = records.get(key)
            if record is None:
                record = records[key] = _Record(limit)
                if len(records) > self.max_keys:
                    records.popitem(last=False)
            else:
                records.move_to_end(key)
            record.recent(now, self.window_s)
            record.times.append(now)
            if kind != "user" and len(record.times) >= limit and record.blocked_until <= now:
                record.blocked_until = now + self.block_s
                record.times.clear()
                log.warning("auth: %s %s blocked for %.0f s after %d failures", kind, clip(key[1]), self.block_s,
                            limit)

    def blocked(self, now: float) -> list[tuple[str, float, int]]:
        """For ``ctl blocked``: ``user:NAME`` and ``addr:IP`` keys blocked or slowed down now, as (key, seconds
        of block left or 0, failures in the window). A user's line folds in the blocks of its (user, address)
        pairs."""
        found: dict[str, list[float]] = {}
        for (kind, name), record in self._records.items():
            recent = record.recent(now, self.window_s)
            left = max(0.0, record.blocked_until - now)
            if kind == "pair":
                if left > 0:
                    entry = found.setdefault(f"user:{name.split(chr(0), 1)[0]}", [0.0, 0.0])
                    entry[0] = max(entry[0], left)
                continue
            if left > 0 or recent >= self.slow_after * self._factor(kind):
                entry = found.setdefault(f"{kind}:{name}", [0.0, 0.0])
                entry[0] = max(entry[0], left)
            if f"{kind}:{name}" in found:
                found[f"{kind}:{name}"][1] = recent
        return sorted((key, left, int(recent)) for key, (left, recent) in found.items())

    def unblock(self, key: str) -> bool:
        """Forget the failures and blocks of ``user:NAME`` (with all its pairs) or ``addr:IP`` (an operator's
        decision); False if there were none."""
        kind, _, name = key.partition(":")
        if kind not in ("user", "addr"):
            return False
        index = 0 if kind == "user" else 1
        gone = [k for k in self._records
                if k == (kind, name) or (k[0] == "pair" and k[1].split("\x00", 1)[index] == name)]
        for k in gone:
            del self._records[k]
        return bool(gone)

    def succeeded(self, user: str, client: str) -> None:
        """A right password from ``client`` clears that pair's count (a block stays until it ends)."""
        if not self._records:
            return
        record = self._records.get(_pair_key(user, client))
        if record is not None:
            record.times.clear()


# -- the login flow -------------------------------------------------------------------------------------------


class LoginFlow:
    """Challenges and checks credentials for one realm; the one place REGISTER, INVITE and PUBLISH log in.

    ``algorithms`` is the challenge order (RFC 8760 section 2.3: most preferred first); ``is_us`` tells whether a
    SIP URI names this server (its domain or one of its listen addresses).
    """

    def __init__(self, realm: str, algorithms: tuple[str, ...], credentials: CredentialLookup,
                 throttle: FailureThrottle, *, nonce_lifetime_s: float, random_bytes: Callable[[int], bytes],
                 is_us: Callable[[SipUri], bool] | None = None, nonce_secret: bytes | None = None) -> None:
        self.realm = realm
        self.algorithms = algorithms
        self.credentials = credentials
        self.throttle = throttle
        self.is_us = is_us or (lambda uri: False)
        # ``nonce_secret`` kept in the region database lets a restarted server accept the nonces its predecessor
        # issued (a call challenged just before a restart completes after it); fresh per process otherwise.
        self.core = digest.DigestAuthenticator(realm, secret=nonce_secret or random_bytes(32),
                                               random_bytes=random_bytes,
                                               algorithms=algorithms, nonce_lifetime_s=nonce_lifetime_s)
        self.challenges_sent = 0
        self.failures = 0
        #: Called once per counted password failure (the web site's metrics count SIP refusals with it).
        self.on_failure: Callable[[], None] | None = None

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """One challenge per algorithm, in the configured order, sharing one nonce."""
        return self.core.challenges(now, stale=stale)

    def challenge(self, proxy: bool, now: float) -> Challenge:
        """What :meth:`authenticate` answers a request without credentials of this realm."""
        return self._challenge(proxy, now)

    def _challenge(self, proxy: bool, now: float, *, stale: bool = False, delay_s: float = 0.0,
                   claimed: str | None = None) -> Challenge:
        self.challenges_sent += 1
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        values = self.core.challenges(now, stale=stale)
        return Challenge(407 if proxy else 401, None, tuple([(name, v) for v in values]), delay_s, claimed)

    def _uri_ok(self, request: Request) -> Callable[[str], bool]:
        def ok(digest_uri: str) -> bool:
            if digest_uri == request.uri:
                return True
            # Both name this server (SIPp puts the address it sends to in the digest uri while the Request-URI
            # names the domain, or the other way round): the same resource, as Kamailio's "myself" has it.
            try:
                theirs = SipUri.parse(digest_uri)
            except RemoteProtocolError:
                return False
            ruri = request.request_uri
            return (theirs.is_sip and ruri.is_sip and (theirs.user or None) == (ruri.user or None)
                    and self.is_us(theirs) and self.is_us(ruri))
        return ok

    def authenticate(self, request: Request, client: str, now: float, *, proxy: bool) -> Authenticated | Challenge:
        """Check the credentials of ``request`` received from (or reported for) address ``client``.

        ``proxy`` picks the proxy pair of headers (407 / ``Proxy-Authorization``) over the UAS pair (401 /
        ``Authorization``). Never raises on bad input.
        """
        header = "Proxy-Authorization" if proxy else "Authorization"
        mine: digest.Credentials | None = None
        for value in request.headers.get_all(header):
            try:
                cred = digest.Credentials.parse_untrusted(value)
            except RemoteProtocolError as exc:
                return Challenge(400, f"Malformed credentials: {exc.message}")
            if cred.realm == self.realm:
                mine = cred
                break
        if mine is None:
            return self._challenge(proxy, now)
        user = mine.username
        verdict = self.throttle.check(user, client, now)
        if verdict.blocked:
            return Challenge(403, "Too many failed attempts, try later", claimed=user)
        # The digest uri is usually the Request-URI itself: only another text needs the closer look.
        result = self.core.verify_credentials(mine, method=request.method, now=now, lookup_ha1=self.credentials.ha1,
                                              uri_ok=None if mine.uri == request.uri else self._uri_ok(request))
        kind = result.verdict
        if kind is _OK:
            self.throttle.succeeded(user, client)
            return Authenticated(user)
        if kind is _CHALLENGE or kind is _REPLAYED:
            # Not a password failure: whoever sent it gets a new nonce and nothing is counted.
            log.debug("auth: %s for %s from %s: %s", request.method, clip(user), client, result.reason)
            return self._challenge(proxy, now, stale=result.stale or kind is _REPLAYED, claimed=user)
        if kind is _REFUSED:
            # What the client chose is wrong (not the password): say what, so its user can fix the settings.
            log.info("auth: %s for %s from %s refused: %s", request.method, clip(user), client, result.reason)
            return Challenge(403, _phrase(result.reason), claimed=user)
        self.failures += 1
        if self.on_failure is not None:
            self.on_failure()
        self.throttle.failed(user, client, now)
        delay = self.throttle.check(user, client, now).delay_s
        log.warning("auth: %s authentication failed for %s from %s: %s", request.method, clip(user), client, result.reason)
        return Challenge(403, "Wrong user name or password", delay_s=delay, claimed=user)


def _phrase(reason: str) -> str:
    text = reason[:1].upper() + reason[1:]
    return "".join(c if c.isprintable() else " " for c in text)[:100]
