"""SIP digest authentication: RFC 3261 section 22 with the algorithms of RFC 8760 (RFC 7616 maths).

What it offers:

- maths: :func:`compute_ha1`, :func:`compute_response` (MD5, SHA-256, SHA-512-256; ``qop=auth`` or the
  RFC 2069 form without qop). A server stores HA1 per algorithm, never the password.
- header values: :class:`Challenge` (``WWW-Authenticate`` / ``Proxy-Authenticate``) and :class:`Credentials`
  (``Authorization`` / ``Proxy-Authorization``), each with ``parse_untrusted`` and ``to_header_value``.
- client side: :func:`choose_challenge` (RFC 8760 2.4: the topmost challenge whose algorithm we support) and
  :class:`DigestClient`, which counts ``nc`` per nonce and draws cnonces from an injected callable.
- server side: :class:`NonceManager` (HMAC nonces embedding a timestamp, so they expire without a table, plus a
  bounded nonce-count tracker that refuses replays) and :class:`DigestAuthenticator` (challenge + verify).

Sans-IO: time comes in as ``now`` (seconds, any monotonic origin) and randomness from injected callables.
``auth-int`` and the ``-sess`` algorithms are not supported (no SIP tool we target uses them).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import importlib
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from functools import partial
from typing import Any, Final, NoReturn

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip._grammar import TOKEN_CHARS

__all__ = [
    "NC_WINDOW",
    "SUPPORTED_ALGORITHMS",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAuthenticator",
    "DigestClient",
    "NonceManager",
    "NonceSnapshot",
    "NonceStatus",
    "Verdict",
    "choose_challenge",
    "compute_ha1",
    "compute_response",
    "parse_auth_params_untrusted",
    "verify_response",
]

# RFC 8760 section 2.2 / RFC 7616 section 6.1: algorithm token -> hashlib name. Listed strongest first: a client
# with no preference of its own picks in this order, a server challenges in the order it is configured with.
_HASHES: dict[str, str] = {"SHA-512-256": "sha512_256", "SHA-256": "sha256", "MD5": "md5"}
if "sha512_256" not in hashlib.algorithms_available:  # pragma: no cover - depends on the OpenSSL build
    del _HASHES["SHA-512-256"]

#: Algorithm names this module can compute, strongest first.
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(_HASHES)


def _canonical_algorithm(name: str) -> str | None:
    upper = name.upper()
    return upper if upper in _HASHES else None


def _constructor(hashname: str) -> Callable[[bytes], Any]:
    # MD5 from the interpreter's own module (_md5) where it has one: OpenSSL's set-up and tear-down around each
    # digest cost more than the digest of a login's ~130 bytes (callgrind: ~6.3k instructions a response through
    # hashlib.md5, ~4.2k through _md5.md5); the same digest. (SHA-256's own module is slower than OpenSSL's: 11.4k
    # against 10.4k.) ``hashlib.md5(data)`` is cheaper than ``hashlib.new("md5", data)`` (a login hashes three
    # times).
    if hashname == "md5":
        try:
            builtin: Callable[[bytes], Any] = importlib.import_module("_md5").md5
            return builtin
        except (ImportError, AttributeError):  # pragma: no cover - a build without the module
            pass
    return getattr(hashlib, hashname) if hasattr(hashlib, hashname) else partial(hashlib.new, hashname)


#: The constructors themselves, by algorithm name.
_CONSTRUCTORS: Final[dict[str, Callable[[bytes], Any]]] = {
    name: _constructor(hashname) for name, hashname in _HASHES.items()}


def _h(algorithm: str, text: str) -> str:
    hexdigest: str = _CONSTRUCTORS[algorithm](text.encode("utf-8")).hexdigest()
    return hexdigest


def _require_algorithm(algorithm: str) -> str:
    canonical = _canonical_algorithm(algorithm)
    if canonical is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}; supported: {', '.join(_HASHES)}")
    return canonical


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """``H(username:realm:password)`` as lowercase hex (RFC 7616 3.4.2). Store this, never the password."""
    return _h(_require_algorithm(algorithm), f"{username}:{realm}:{password}")


def compute_response(
    *,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    algorithm: str = "MD5",
    qop: str | None = "auth",
    nc: int = 1,
    cnonce: str = "",
) -> str:
    """The ``response`` value (RFC 7616 3.4.1; RFC 2069 form when ``qop`` is None).

    ``uri`` is the digest-uri exactly as sent in the credentials, ``nc`` the nonce count as an integer.
    """
    alg = _require_algorithm(algorithm)
    if qop is not None and qop != "auth":
        raise ValueError(f"unsupported qop {qop!r}: only 'auth' is implemented")
    return _response(alg, ha1, nonce, _h(alg, f"{method}:{uri}"), qop, nc, cnonce)


#: ``f"{nc:08x}"`` of the nonce counts below ``_NC_TEXTS_MAX``.
_NC_TEXTS_MAX: Final = 16
_NC_TEXTS: Final[tuple[str, ...]] = tuple([f"{nc:08x}" for nc in range(_NC_TEXTS_MAX)])
#: The counts of those texts (0 left out: a count of 0 is refused by the nonce check, not here): a lookup instead
#: of the 8 hex digits' check and ``int(count, 16)`` (~0.9k instructions compiled) for nearly every request.
_NC_VALUES: Final[dict[str, int]] = {text: nc for nc, text in enumerate(_NC_TEXTS) if nc}


def _response(algorithm: str, ha1: str, nonce: str, ha2: str, qop: str | None, nc: int, cnonce: str) -> str:
    # RFC 7616 3.4.1 with qop=auth; RFC 2069's H(HA1:nonce:HA2) without qop.
    if qop is None:
        return _h(algorithm, f"{ha1}:{nonce}:{ha2}")
    # The count formatted alone: compiled, an f-string with a format spec formats each of its parts through
    # str.format (six calls into the interpreter, ~7k instructions a login); one of plain str parts is one build.
    # The first counts (a nonce serves one request nearly always) are written once, at import (~1.4k each).
    count = _NC_TEXTS[nc] if 0 <= nc < _NC_TEXTS_MAX else f"{nc:08x}"
    return _h(algorithm, f"{ha1}:{nonce}:{count}:{cnonce}:{qop}:{ha2}")


# --- auth-param lists (RFC 3261 25.1: challenge / credentials) -------------------------------------------

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})\s+")
# A quoted string as an unrolled loop (runs of plain characters between escapes): an alternation per character
# made the credentials of every login cost 2.5x more to match.
_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_PARAM_RE = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:{_QUOTED}|({_TOKEN}))\s*", re.DOTALL)
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_PARAM_NC = rf'\s*{_TOKEN}\s*=\s*(?:"[^"\\]*(?:\\.[^"\\]*)*"|{_TOKEN})\s*'
#: A whole auth-param list: the scheme (group 1, its end is where the params start), then params between commas.
_LIST_RE = re.compile(rf"\s*({_TOKEN})\s+{_PARAM_NC}(?:,{_PARAM_NC})*", re.DOTALL)
_HEX_DIGITS: Final = "0123456789abcdefABCDEF"
#: A param with what follows it (a comma or the end: group 4), or any one character no param starts at.
_ITEMS_RE = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:{_QUOTED}|({_TOKEN}))\s*(?:(,)|\Z)|[\s\S]")
#: The same without whitespace around names, values and commas, for a list without escapes (a quoted value is a
#: run up to the next quote): on a list it takes whole (no stray character), the same matches as _ITEMS_RE's, found
#: with fewer steps of the regex engine; whitespace outside quotes is stray to it (tests/sip/test_digest_params.py).
_TIGHT_ITEMS_RE = re.compile(rf'({_TOKEN})=(?:"([^"]*)"|({_TOKEN}))(?:(,)|\Z)|[\s\S]')
_MAX_AUTH_HEADER = 4096


def parse_auth_params_untrusted(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Digest a=b, c="d"`` into ``("Digest", {"a": "b", "c": "d"})``.

    Parameter names are lowercased, quoted values unescaped. Raises only :class:`RemoteProtocolError` (400).
    """
    if len(value) > _MAX_AUTH_HEADER:
        raise RemoteProtocolError("authentication header too long", 400)
    # The usual list (no escapes, no duplicate, well formed) in one C pass: every character of it is either in a
    # param followed by "," or the end, or a stray one (the empty name), and a param followed by "," is never
    # the last. Anything else takes the checking path below, which raises the exact error.
    scheme = _SCHEME_RE.match(value)
    if scheme is not None and "\\" not in value:
        # Credentials as clients send them have one space, the scheme's: their params have no whitespace to skip,
        # and _TIGHT_ITEMS_RE finds them in fewer steps. Whitespace it does not skip (a tab, an other space) is
        # left as stray characters, and such a list takes the checking path below, which gives the same answer.
        items = (_TIGHT_ITEMS_RE if value.count(" ") == 1 else _ITEMS_RE).findall(value, scheme.end())
        if items and not items[-1][3]:
            fast = {name.lower(): token or quoted for name, quoted, token, _ in items}
            if len(fast) == len(items) and "" not in fast:
                return scheme.group(1), fast
    # One regex checks the whole list and one finds its params: both loops run in C (this is on every login).
    whole = _LIST_RE.fullmatch(value)
    if whole is None:
        _auth_params_error(value)
    params: dict[str, str] = {}
    for name, quoted, token in _PARAM_RE.findall(value, whole.end(1)):
        name = name.lower()
        if name in params:
            raise RemoteProtocolError(f"duplicate auth-param {name!r}", 400)
        # findall gives "" for the branch that did not match; a token is never empty, so "" means quoted.
        if token:
            params[name] = token
        else:
            params[name] = _UNESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
    return whole.group(1), params


#: Token values of credentials already checked: algorithm, qop and nonce counts, the same few from every client
#: (a lookup, where the check strips the token characters, ~1k instructions each compiled). Bounded.
_TOKEN_VALUES: Final[set[str]] = set()
_TOKEN_VALUES_MAX: Final = 1024


def _nonce_count(count: str) -> int | None:
    """The value of a nonce count, or None when it is not exactly 8 hex digits (RFC 7616 3.4; the ASCII ones: told
    by a strip, native compiled, where a regex's fullmatch is a call through the interpreter). The usual texts by
    a lookup."""
    nc = _NC_VALUES.get(count)
    if nc is None:
        if len(count) != 8 or count.strip(_HEX_DIGITS):
            return None
        nc = int(count, 16)
    return nc


def _usual_credentials(value: str) -> Credentials | None:
    """:meth:`Credentials.parse_untrusted` of credentials as clients write them: ``Digest `` and params of known
    names (lowercase, each once) separated by "," (SIPp) or ", " (the SDK, most phones), values quoted without a
    quote, backslash or comma inside, or tokens, with the five required params, and with qop, a cnonce and a nonce
    count of 8 hex digits; None for anything else, which takes the general way (the same credentials or its error,
    tests/sip/test_digest_params.py). String splits instead of a regex over every character (45k instructions a
    login through the general way, compiled), each value kept by its name's length and text (at most two
    comparisons) instead of a set of names and a dict of params read back. (A scan by ``find`` from param to param
    cost ~5k fewer instructions a message compiled but ~12k more a parse interpreted, each step a bytecode.)"""
    if not value.startswith("Digest ") or len(value) > _MAX_AUTH_HEADER or "\\" in value:
        return None
    rest = value[7:]
    if " " in rest:
        rest = rest.replace(", ", ",")
        if " " in rest:
            return None
    username: str | None = None
    realm: str | None = None
    nonce: str | None = None
    uri: str | None = None
    response: str | None = None
    algorithm: str | None = None
    qop: str | None = None
    cnonce: str | None = None
    count: str | None = None
    opaque: str | None = None
    for part in rest.split(","):
        name, _, text = part.partition("=")
        if not text:
            return None
        # (ord of an item: compiled, a native read of the character)
        if ord(text[0]) == 34:  # '"'
            # A quoted value with a comma inside was cut at it: its first piece has no closing quote.
            if len(text) < 2 or text.find('"', 1) != len(text) - 1:
                return None
            text = text[1:-1]
        elif text not in _TOKEN_VALUES:
            if text.strip(TOKEN_CHARS):
                return None
            if len(_TOKEN_VALUES) >= _TOKEN_VALUES_MAX:
                _TOKEN_VALUES.clear()
            if len(text) <= 64:
                _TOKEN_VALUES.add(text)
        # The name told by its length, then its text (at most two comparisons); a name met twice steps aside.
        size = len(name)
        if size == 5:
            if name == "nonce" and nonce is None:
                nonce = text
            elif name == "realm" and realm is None:
                realm = text
            else:
                return None
        elif size == 8:
            if name == "response" and response is None:
                response = text
            elif name == "username" and username is None:
                username = text
            else:
                return None
        elif size == 3:
            if name == "uri" and uri is None:
                uri = text
            elif name == "qop" and qop is None:
                qop = text
            else:
                return None
        elif size == 6:
            if name == "cnonce" and cnonce is None:
                cnonce = text
            elif name == "opaque" and opaque is None:
                opaque = text
            else:
                return None
        elif size == 2 and name == "nc" and count is None:
            count = text
        elif size == 9 and name == "algorithm" and algorithm is None:
            algorithm = text
        else:
            return None
    if (username is None or realm is None or nonce is None or uri is None or response is None or qop is None
            or cnonce is None or count is None):
        return None
    nc = _nonce_count(count)
    if nc is None:
        return None
    return Credentials(username=username, realm=realm, nonce=nonce, uri=uri, response=response.lower(),
                       algorithm="MD5" if algorithm is None else algorithm.upper(), qop=qop.lower(), cnonce=cnonce,
                       nc=nc, opaque=opaque)


def _auth_params_error(value: str) -> NoReturn:
    """Raise the error of the first problem in ``value`` from the left (a param-by-param walk: the error path)."""
    m = _SCHEME_RE.match(value)
    if m is None:
        raise RemoteProtocolError("authentication header lacks a scheme", 400)
    names: set[str] = set()
    pos = m.end()
    while True:
        pm = _PARAM_RE.match(value, pos)
        if pm is None:
            raise RemoteProtocolError(f"malformed auth-param at offset {pos}", 400)
        name = pm.group(1).lower()
        if name in names:
            raise RemoteProtocolError(f"duplicate auth-param {name!r}", 400)
        names.add(name)
        pos = pm.end()
        if pos == len(value) or value[pos] != ",":
            raise RemoteProtocolError(f"expected ',' between auth-params at offset {pos}", 400)
        pos += 1


def _quote(text: str) -> str:
    if any(c in text for c in "\r\n\x00"):
        # A CR/LF in a header value would let the caller inject header lines.
        raise ValueError(f"control character in auth-param value {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- header values ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    #: Canonical algorithm name ("MD5" when the challenge omits it, RFC 7616 3.3).
    algorithm: str = "MD5"
    #: Offered qop values; empty means an RFC 2069 challenge without qop.
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False

    def to_header_value(self) -> str:
        """The header value, e.g. ``Digest realm="x", nonce="y", algorithm=SHA-256, qop="auth"``."""
        parts = [f"Digest realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=TRUE")
        return ", ".join(parts)

    def __str__(self) -> str:  # a method, not an alias: mypyc compiles this module
        return self.to_header_value()

    @classmethod
    def parse_untrusted(cls, value: str) -> Challenge:
        """Parse a challenge header value. Raises only :class:`RemoteProtocolError` (400).

        An unknown algorithm is kept as sent (upper-cased) so :func:`choose_challenge` can skip it.
        """
        scheme, p = parse_auth_params_untrusted(value)
        if scheme.lower() != "digest":
            raise RemoteProtocolError(f"unsupported authentication scheme {scheme!r}", 400)
        for required in ("realm", "nonce"):
            if required not in p:
                raise RemoteProtocolError(f"digest challenge lacks {required}", 400)
        qop = tuple(q.strip().lower() for q in p["qop"].split(",") if q.strip()) if "qop" in p else ()
        return cls(
            realm=p["realm"],
            nonce=p["nonce"],
            algorithm=p.get("algorithm", "MD5").upper(),
            qop=qop,
            opaque=p.get("opaque"),
            stale=p.get("stale", "false").lower() == "true",
        )


#: In the order the error names the first one missing.
_REQUIRED_CREDENTIALS: Final[tuple[str, ...]] = ("username", "realm", "nonce", "uri", "response")


# Not frozen, though never changed once made: a frozen dataclass's __init__ sets each field through
# object.__setattr__ (3.6 µs more for ten fields in CPython), and logins make these. Hashable as before. Its
# __init__ written out (the same keyword-only parameters): the compiled build runs a dataclass's generated one
# interpreted, where a written one stores the fields natively (every login and call parses credentials).
@dataclass(slots=True, unsafe_hash=True, kw_only=True, init=False)
class Credentials:
    """One ``Authorization`` / ``Proxy-Authorization`` Digest credentials value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    #: "auth", or None for RFC 2069 credentials (then ``cnonce`` and ``nc`` are unused).
    qop: str | None = "auth"
    cnonce: str | None = None
    nc: int = 1
    opaque: str | None = None

    def __init__(self, *, username: str, realm: str, nonce: str, uri: str, response: str, algorithm: str = "MD5",
                 qop: str | None = "auth", cnonce: str | None = None, nc: int = 1, opaque: str | None = None) -> None:
        self.username = username
        self.realm = realm
        self.nonce = nonce
        self.uri = uri
        self.response = response
        self.algorithm = algorithm
        self.qop = qop
        self.cnonce = cnonce
        self.nc = nc
        self.opaque = opaque

    def to_header_value(self) -> str:
        """The header value in the order RFC 7616 3.9.1 prints it."""
        parts = [
            f"Digest username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"uri={_quote(self.uri)}",
            f"algorithm={self.algorithm}",
            f"nonce={_quote(self.nonce)}",
        ]
        if self.qop is not None:
            parts.append(f"nc={self.nc:08x}")
            parts.append(f"cnonce={_quote(self.cnonce or '')}")
            parts.append(f"qop={self.qop}")
        parts.append(f"response={_quote(self.response)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        return ", ".join(parts)

    def __str__(self) -> str:  # a method, not an alias: mypyc compiles this module
        return self.to_header_value()

    @classmethod
    def parse_untrusted(cls, value: str) -> Credentials:
        """Parse credentials. Raises only :class:`RemoteProtocolError` (400) with a reason phrase."""
        made = _usual_credentials(value)
        if made is None:
            made = _general_credentials(value)
        return made if cls is Credentials else cls(**asdict(made))


def _general_credentials(value: str) -> Credentials:
    """:meth:`Credentials.parse_untrusted` of any value (its params by :func:`parse_auth_params_untrusted`)."""
    scheme, p = parse_auth_params_untrusted(value)
    if scheme.lower() != "digest":
        raise RemoteProtocolError(f"unsupported authentication scheme {scheme!r}", 400)
    for required in _REQUIRED_CREDENTIALS:
        if required not in p:
            raise RemoteProtocolError(f"digest credentials lack {required}", 400)
    qop = p.get("qop")
    nc = 1
    if qop is not None:
        qop = qop.lower()
        if "cnonce" not in p or "nc" not in p:
            raise RemoteProtocolError("digest credentials with qop lack cnonce or nc", 400)
        count = p["nc"]
        read = _nonce_count(count)
        if read is None:
            raise RemoteProtocolError(f"malformed nonce count {count!r}", 400)
        nc = read
    return Credentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"].lower(),
        algorithm=p.get("algorithm", "MD5").upper(),
        qop=qop,
        cnonce=p.get("cnonce"),
        nc=nc,
        opaque=p.get("opaque"),
    )


_HA2_CACHE: dict[tuple[str, str, str], str] = {}
#: (a static compiled: a module's attribute is a lookup at each call)
_compare_digest: Final = hmac.compare_digest
_HA2_CACHE_MAX = 1024


def verify_response(credentials: Credentials, *, ha1: str, method: str) -> bool:
    """True when ``credentials.response`` is right for this HA1 and method (constant-time compare)."""
    # (the canonical name, as parse_untrusted makes it, by one lookup; any other case through the upper-casing)
    algorithm: str | None = credentials.algorithm
    if algorithm not in _CONSTRUCTORS:
        algorithm = _canonical_algorithm(credentials.algorithm)
    qop = credentials.qop
    if algorithm is None or qop not in (None, "auth"):
        return False
    # HA2 = H(method ":" digest-uri) is the same for every login of a client (REGISTER to the same domain): kept.
    key = (algorithm, method, credentials.uri)
    ha2 = _HA2_CACHE.get(key)
    if ha2 is None:
        ha2 = _h(algorithm, f"{method}:{credentials.uri}")
        if len(_HA2_CACHE) >= _HA2_CACHE_MAX:
            _HA2_CACHE.clear()  # uris come from the network: bounded
        _HA2_CACHE[key] = ha2
    expected = _response(algorithm, ha1, credentials.nonce, ha2, qop, credentials.nc, credentials.cnonce or "")
    # compare_digest takes str of ASCII characters only (TypeError otherwise): the hex text is, and a response with
    # any other character cannot equal it (its UTF-8 bytes were compared before: the same answer, without the two
    # encodings).
    response = credentials.response
    return response.isascii() and _compare_digest(expected, response)


# --- client side -----------------------------------------------------------------------------------------


def choose_challenge(values: Iterable[str], supported: Sequence[str] = SUPPORTED_ALGORITHMS) -> Challenge:
    """The topmost usable Digest challenge among header values, in header order (RFC 8760 2.4).

    Values that do not parse, use another scheme, an unsupported algorithm, or offer qop without "auth" are
    skipped. Raises :class:`RemoteProtocolError` when none is usable.
    """
    allowed = {a.upper() for a in supported}
    seen: list[str] = []
    for value in values:
        try:
            challenge = Challenge.parse_untrusted(value)
        except RemoteProtocolError:
            continue
        seen.append(challenge.algorithm)
        if challenge.algorithm not in allowed or _canonical_algorithm(challenge.algorithm) is None:
            continue
        if challenge.qop and "auth" not in challenge.qop:
            continue
        return challenge
    raise RemoteProtocolError(
        f"no usable digest challenge (offered: {', '.join(seen) or 'none'}; supported: {', '.join(supported)})",
        401,
    )


@dataclass(slots=True)
class DigestClient:
    """Builds credentials for one account; counts ``nc`` per nonce so a nonce can be reused (RFC 7616 3.4).

    ``cnonce`` is a zero-argument callable, e.g. ``IdFactory.cnonce``. ``algorithms`` lists what this client
    accepts; among several challenges the server's order decides (RFC 8760 2.4).
    """

    username: str
    password: str
    cnonce: Callable[[], str]
    algorithms: Sequence[str] = SUPPORTED_ALGORITHMS
    _nc: dict[str, int] = field(default_factory=dict)

    def authorize(self, challenge_values: Iterable[str], *, method: str, uri: str) -> Credentials:
        """Answer the challenges of a 401/407; ``uri`` is the Request-URI of the retried request.

        Put ``str(result)`` in ``Authorization`` (for 401) or ``Proxy-Authorization`` (for 407).
        Raises :class:`RemoteProtocolError` when no challenge is usable.
        """
        return self.answer(choose_challenge(challenge_values, self.algorithms), method=method, uri=uri)

    def answer(self, challenge: Challenge, *, method: str, uri: str) -> Credentials:
        """Credentials for one already chosen challenge; a reused nonce gets the next ``nc``."""
        ha1 = compute_ha1(self.username, challenge.realm, self.password, challenge.algorithm)
        qop: str | None = "auth" if challenge.qop else None
        # Least recently used first: a long-lived nonce in use must never be the one forgotten, or its nc
        # would restart at 1 and the server would refuse it as a replay.
        nc = self._nc.pop(challenge.nonce, 0) + 1
        if len(self._nc) >= 64:  # only the most recently used nonces are worth remembering
            self._nc.pop(next(iter(self._nc)))
        self._nc[challenge.nonce] = nc
        cnonce = self.cnonce() if qop else None
        response = compute_response(
            ha1=ha1,
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            algorithm=challenge.algorithm,
            qop=qop,
            nc=nc,
            cnonce=cnonce or "",
        )
        return Credentials(
            username=self.username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=response,
            algorithm=challenge.algorithm,
            qop=qop,
            cnonce=cnonce,
            nc=nc,
            opaque=challenge.opaque,
        )


# --- server side -----------------------------------------------------------------------------------------


class NonceStatus(Enum):
    """Verdict on a nonce presented in credentials."""

    #: Issued by us, unexpired, and its nonce count is new.
    VALID = "valid"
    #: Issued by us but expired, too old to still be tracked, or its count fell out of the reordering window:
    #: re-challenge with ``stale=TRUE``.
    STALE = "stale"
    #: Not a nonce we issued (bad MAC, bad encoding, from the future).
    INVALID = "invalid"
    #: Ours and unexpired, but this nonce count was already used: a replay.
    REPLAYED = "replayed"


# The members as module globals: in CPython 3.11 ``NonceStatus.VALID`` goes through EnumType.__getattr__'s hook
# (some 500 instructions a lookup; a login made 15 of them).
_VALID: Final = NonceStatus.VALID
_STALE: Final = NonceStatus.STALE
_INVALID: Final = NonceStatus.INVALID
_REPLAYED: Final = NonceStatus.REPLAYED

_NONCE_LAYOUT: Final = struct.Struct(">q8s")  # issue time in ms, 8 random bytes; then a 16-byte HMAC tag
_NONCE_TAG_BYTES: Final = 16
#: At most this many nonces issued and not yet brought back are remembered (NonceManager._issued).
_ISSUED_MAX: Final = 4096
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
#: Nonce counts of one nonce accepted out of order within this many of the highest seen (requests sent in parallel
#: with one nonce, e.g. a REGISTER refresh and a PUBLISH, can arrive in either order over UDP).
NC_WINDOW = 64


# (A written __init__: the compiled build runs a dataclass's generated one interpreted; every call makes one.)
@dataclass(slots=True, init=False)
class _Tracked:
    issued_ms: int
    highest: int
    #: Bit i set: nonce count ``highest - i`` was used.
    seen: int
    user: str

    def __init__(self, issued_ms: int, highest: int, seen: int, user: str) -> None:
        self.issued_ms = issued_ms
        self.highest = highest
        self.seen = seen
        self.user = user


@dataclass(frozen=True, slots=True)
class NonceSnapshot:
    """What :class:`NonceManager` knows beyond its secret: the nonce counts used and the stale floors, so a
    restarted server refuses a count its predecessor saw (times in ms on the clock ``now`` was given on)."""

    #: (nonce, issued_ms, highest count, bitmap of counts seen below it, user)
    tracked: tuple[tuple[str, int, int, int, str], ...] = ()
    floor_ms: int | None = None
    user_floor_ms: tuple[tuple[str, int], ...] = ()
    #: (user, nonce, issued_ms) of used nonces whose counts were forgotten (stale from then on)
    forgotten: tuple[tuple[str, str, int], ...] = ()

    def shifted(self, delta_ms: int) -> NonceSnapshot:
        """The same record with every time moved by ``delta_ms`` (from one clock to another)."""
        return NonceSnapshot(
            tuple((n, t + delta_ms, hi, seen, u) for n, t, hi, seen, u in self.tracked),
            None if self.floor_ms is None else self.floor_ms + delta_ms,
            tuple((u, f + delta_ms) for u, f in self.user_floor_ms),
            tuple((u, n, t + delta_ms) for u, n, t in self.forgotten))


class NonceManager:
    """Stateless nonces that expire, plus a bounded tracker of the nonce counts seen per nonce.

    A nonce is ``base64url(issued_ms | salt | HMAC-SHA256(secret, issued_ms | salt | realm)[:16])``: any server
    holding ``secret`` can check it without a table, and its age comes from the embedded time. Nonce counts
    are tracked only for nonces that carried a correct response, so only account holders add entries, and each
    account holds at most ``max_per_user`` of them: one account cannot fill the tracker for everybody.
    Counts are accepted out of order within :data:`NC_WINDOW` of the highest seen (a bitmap per nonce); a count
    used before is a replay. When one user's share is full, its oldest nonce's counts are forgotten and that
    nonce is remembered as stale (up to ``max_forgotten_per_user`` of them, then every nonce of that user issued
    up to the oldest one is); a nonce that user never used stays good, however many it used since (one account
    with many calls in flight, e.g. across a restart). When the whole tracker is full its oldest nonces are
    forgotten and every nonce issued up to then is stale for everybody. A forgotten nonce is never accepted
    with a restarted count.
    """

    def __init__(
        self,
        secret: bytes,
        random_bytes: Callable[[int], bytes],
        *,
        realm: str = "",
        lifetime_s: float = 300.0,
        max_tracked: int = 100_000,
        max_per_user: int = 16,
        max_forgotten_per_user: int = 1024,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("nonce secret must be at least 16 bytes")
        self._secret = secret
        # Keyed once: each tag starts from a copy (hmac.digest prepares the key again on every call). Any: a test
        # stands in for it to count the MACs computed.
        self._mac: Any = hmac.new(secret, digestmod="sha256")
        # The hmac module's object wraps OpenSSL's (its ``_hmac``, when the build has OpenSSL): copying, feeding
        # and finishing that one directly saves four Python-level calls of the wrapper per tag (two tags a login).
        self._mac = getattr(self._mac, "_hmac", None) or self._mac
        self._random_bytes = random_bytes
        self._realm = realm.encode("utf-8")
        self.lifetime_s = lifetime_s
        self.max_tracked = max_tracked
        self.max_per_user = max_per_user
        self.max_forgotten_per_user = max_forgotten_per_user
        self._nc: dict[str, _Tracked] = {}
        self._floor_ms: int | None = None  # nonces issued at or before this are stale once untracked
        # Per user: the nonces tracked for them (oldest first) and their own stale floor.
        self._by_user: dict[str, dict[str, None]] = {}
        self._user_floor_ms: dict[str, int] = {}
        # Per user: nonces it used whose counts were forgotten (nonce -> issued_ms, oldest first): stale.
        self._forgotten: dict[str, dict[str, int]] = {}
        # The nonces issued here and not yet brought back, to their issue time: the credentials of the request
        # a challenge asked for (within a second, nearly always) find theirs by a lookup instead of decoding it
        # and computing its MAC again. Only what issue() made is here, so a hit gives what the MAC check would;
        # bounded (emptied when full: unanswered challenges cannot grow it), and what is not here takes the MAC.
        self._issued: dict[str, int] = {}

    def _tag(self, body: bytes) -> bytes:
        # HMAC-SHA256 of body + realm; every login computes two (its challenge's nonce, then the check of the nonce
        # it brings back).
        mac = self._mac.copy()
        mac.update(body + self._realm)  # one call into the hash, not two
        tag: bytes = mac.digest()
        return tag[:_NONCE_TAG_BYTES]

    def issue(self, now: float) -> str:
        """A fresh nonce stamped with ``now``."""
        issued_ms = int(now * 1000)
        body = _NONCE_LAYOUT.pack(issued_ms, self._random_bytes(8))
        # (binascii directly: what base64.urlsafe_b64encode/b64decode do, without their two layers of calls; the
        # 32 bytes' 44 characters and newline cut to the 43 before the padding by a slice, native compiled, where the
        # keyword and rstrip were calls)
        nonce = binascii.b2a_base64(body + self._tag(body))[:43].translate(_TO_URLSAFE).decode("ascii")
        issued = self._issued
        if len(issued) >= _ISSUED_MAX:
            issued.clear()
        issued[nonce] = issued_ms
        return nonce

    def issued_ms(self, nonce: str) -> int | None:
        """The issue time of a nonce we made, or None if we did not make it."""
        known = self._issued.pop(nonce, None)
        if known is not None:
            return known
        return self._issued_ms_by_mac(nonce)

    def _issued_ms_by_mac(self, nonce: str) -> int | None:
        """:meth:`issued_ms` read from the nonce itself: its MAC checked, its stamp decoded."""
        if len(nonce) != 43:  # 32 bytes in unpadded base64url
            return None
        try:
            raw = binascii.a2b_base64(nonce.encode("ascii").translate(_FROM_URLSAFE) + b"=")
        except ValueError:
            return None
        body, tag = raw[: _NONCE_LAYOUT.size], raw[_NONCE_LAYOUT.size :]
        if not hmac.compare_digest(tag, self._tag(body)):
            return None
        issued_ms: int = _NONCE_LAYOUT.unpack(body)[0]
        return issued_ms

    def freshness(self, issued_ms: int | None, now: float) -> NonceStatus:
        """Whether a nonce (by :meth:`issued_ms`) is ours and unexpired (VALID), expired (STALE) or not ours."""
        now_ms = int(now * 1000)
        if issued_ms is None or issued_ms > now_ms + 1000:
            return _INVALID
        if now_ms - issued_ms > self.lifetime_s * 1000:
            return _STALE
        return _VALID

    def check(self, nonce: str, nc: int, now: float, user: str = "") -> NonceStatus:
        """Check a nonce and its count without recording anything."""
        return self._status(nonce, self.issued_ms(nonce), nc, now, user)

    def _status(self, nonce: str, issued_ms: int | None, nc: int, now: float, user: str) -> NonceStatus:
        fresh = self.freshness(issued_ms, now)
        if fresh is not _VALID:
            return fresh
        assert issued_ms is not None  # VALID implies the MAC was good
        return self._count_status(nonce, issued_ms, nc, user, self._nc.get(nonce))

    def _count_status(self, nonce: str, issued_ms: int, nc: int, user: str, tracked: _Tracked | None) -> NonceStatus:
        """:meth:`_status` of a nonce :meth:`freshness` found VALID, with its record (``self._nc``'s) at hand."""
        if nc < 1:
            return _REPLAYED
        if tracked is None:
            floor = self._floor_ms
            if nonce in self._forgotten.get(user, ()):
                return _STALE
            user_floor = self._user_floor_ms.get(user)
            if (floor is not None and issued_ms <= floor) or (user_floor is not None and issued_ms <= user_floor):
                return _STALE
            return _VALID
        if tracked.user != user:
            return _REPLAYED  # a nonce serves one account (its count belongs to that client)
        if nc > tracked.highest:
            return _VALID
        back = tracked.highest - nc
        if back >= NC_WINDOW:
            return _STALE  # too far behind to tell: a fresh nonce settles it, never a failure
        return _REPLAYED if (tracked.seen >> back) & 1 else _VALID

    def use(self, nonce: str, nc: int, now: float, user: str = "") -> NonceStatus:
        """Check a nonce and, when VALID, record ``nc`` as used for it (by ``user``)."""
        return self.use_issued(nonce, self.issued_ms(nonce), nc, now, user)

    def use_issued(self, nonce: str, issued_ms: int | None, nc: int, now: float, user: str = "") -> NonceStatus:
        """:meth:`use` for a nonce whose :meth:`issued_ms` the caller already computed (one MAC per request)."""
        fresh = self.freshness(issued_ms, now)
        if fresh is not _VALID:
            return fresh
        assert issued_ms is not None  # VALID implies the MAC was good
        return self._use_fresh(nonce, issued_ms, nc, now, user)

    def _use_fresh(self, nonce: str, issued_ms: int, nc: int, now: float, user: str) -> NonceStatus:
        """:meth:`use_issued` for a nonce :meth:`freshness` found VALID (the authenticator asked it already, before
        looking at the password): its record looked up once, for the check and the update."""
        tracked = self._nc.get(nonce)
        status = self._count_status(nonce, issued_ms, nc, user, tracked)
        if status is not _VALID:
            return status
        if tracked is None:
            self._nc[nonce] = _Tracked(issued_ms, nc, 1, user)
            mine = self._by_user.setdefault(user, {})
            mine[nonce] = None
            if len(mine) > self.max_per_user:
                self._forget_oldest_of(user, mine)
            if len(self._nc) > self.max_tracked:
                self._shrink(now)
        elif nc > tracked.highest:
            shift = nc - tracked.highest
            tracked.seen = ((tracked.seen << shift) | 1) & ((1 << NC_WINDOW) - 1) if shift < NC_WINDOW else 1
            tracked.highest = nc
        else:
            tracked.seen |= 1 << (tracked.highest - nc)
        return status

    def _forget_oldest_of(self, user: str, mine: dict[str, None]) -> None:
        oldest = next(iter(mine))
        del mine[oldest]
        gone = self._nc.pop(oldest, None)
        if gone is not None:
            self._remember_forgotten(user, oldest, gone.issued_ms)

    def _remember_forgotten(self, user: str, nonce: str, issued_ms: int) -> None:
        forgotten = self._forgotten.setdefault(user, {})
        forgotten[nonce] = issued_ms
        if len(forgotten) > self.max_forgotten_per_user:
            # Too many to list: from here on every nonce of this user issued up to the oldest listed is stale.
            first = next(iter(forgotten))
            floor = forgotten.pop(first)
            self._user_floor_ms[user] = max(self._user_floor_ms.get(user, floor), floor)

    def _shrink(self, now: float) -> None:
        """Forget expired nonces, then the oldest half if still full (raising the stale floor)."""
        cutoff_ms = int(now * 1000 - self.lifetime_s * 1000)
        self._nc = {n: v for n, v in self._nc.items() if v.issued_ms >= cutoff_ms}
        if len(self._nc) > self.max_tracked // 2:
            by_age = sorted(self._nc.items(), key=lambda item: item[1].issued_ms)
            drop = by_age[: len(by_age) - self.max_tracked // 2]
            newest_dropped_ms = drop[-1][1].issued_ms
            self._floor_ms = max(self._floor_ms or newest_dropped_ms, newest_dropped_ms)
            for n, _ in drop:
                del self._nc[n]
        # Per-user indexes follow the tracker; floors older than a nonce's lifetime no longer matter.
        self._by_user = {u: kept for u, ns in self._by_user.items()
                         if (kept := {n: None for n in ns if n in self._nc})}
        self._user_floor_ms = {u: f for u, f in self._user_floor_ms.items() if f >= cutoff_ms}
        self._forgotten = {u: fresh for u, ns in self._forgotten.items()
                           if (fresh := {n: t for n, t in ns.items() if t >= cutoff_ms})}

    @property
    def tracked(self) -> int:
        """How many nonces currently have recorded nonce counts."""
        return len(self._nc)

    def snapshot(self) -> NonceSnapshot:
        """The nonce counts and floors, for :meth:`restore` in the next process (the secret is kept apart)."""
        return NonceSnapshot(
            tuple((n, t.issued_ms, t.highest, t.seen, t.user) for n, t in self._nc.items()),
            self._floor_ms, tuple(self._user_floor_ms.items()),
            tuple((u, n, t) for u, ns in self._forgotten.items() for n, t in ns.items()))

    def restore(self, snapshot: NonceSnapshot | None, now: float) -> None:
        """Take over a predecessor's record (same secret). Without one (first start, or the predecessor died
        before saving it) every nonce issued before ``now`` is stale unless it was tracked: a count it had
        seen can then never be replayed; its clients just get a ``stale=true`` challenge."""
        if snapshot is None:
            floor_ms = int(now * 1000) - 1  # a nonce this process issues in the same millisecond stays valid
            self._floor_ms = floor_ms if self._floor_ms is None else max(self._floor_ms, floor_ms)
            return
        cutoff_ms = int(now * 1000 - self.lifetime_s * 1000)
        for nonce, issued_ms, highest, seen, user in snapshot.tracked:
            if issued_ms < cutoff_ms or nonce in self._nc:
                continue  # expired: the nonce itself is stale now
            self._nc[nonce] = _Tracked(issued_ms, highest, seen & ((1 << NC_WINDOW) - 1), user)
            self._by_user.setdefault(user, {})[nonce] = None
        if snapshot.floor_ms is not None:
            self._floor_ms = max(self._floor_ms or snapshot.floor_ms, snapshot.floor_ms)
        for user, floor in snapshot.user_floor_ms:
            self._user_floor_ms[user] = max(self._user_floor_ms.get(user, floor), floor)
        for user, nonce, issued_ms in snapshot.forgotten:
            if issued_ms >= cutoff_ms:
                self._remember_forgotten(user, nonce, issued_ms)
        for user, mine in list(self._by_user.items()):
            while len(mine) > self.max_per_user:
                self._forget_oldest_of(user, mine)
        if len(self._nc) > self.max_tracked:
            self._shrink(now)


class Verdict(Enum):
    """What a server does with credentials (:attr:`AuthResult.verdict`)."""

    #: Correct and fresh: let the request through.
    OK = "ok"
    #: Challenge again (``stale`` says whether with ``stale=TRUE``): the nonce is not ours, expired, or its count
    #: fell out of the window. Never a password failure: an attacker can forge those without knowing anything.
    CHALLENGE = "challenge"
    #: Wrong user name or password with a fresh nonce of ours: a failure that counts for throttling.
    WRONG = "wrong"
    #: The right password but a nonce count used before: a replay, refused without counting.
    REPLAYED = "replayed"
    #: Refused for what the client chose, not for the password (algorithm not offered, no qop, digest uri of
    #: another request): the reason is worth telling the client.
    REFUSED = "refused"


# The members as module globals (see _VALID above).
_OK: Final = Verdict.OK
_CHALLENGE: Final = Verdict.CHALLENGE
_WRONG: Final = Verdict.WRONG
_REPLAYED_V: Final = Verdict.REPLAYED
_REFUSED: Final = Verdict.REFUSED


# Not frozen, though never changed once made: a frozen dataclass's __init__ sets each field through
# object.__setattr__ (3.6 µs more for ten fields in CPython), and logins make these. Hashable as before. Its
# __init__ written out (the same keyword-only parameters): the compiled build runs a generated one interpreted.
@dataclass(slots=True, unsafe_hash=True, kw_only=True, init=False)
class AuthResult:
    """Outcome of :meth:`DigestAuthenticator.verify`."""

    #: The credentials are correct and fresh: let the request through.
    ok: bool
    #: The username the credentials claimed (None if they did not parse).
    username: str | None = None
    #: The algorithm used.
    algorithm: str | None = None
    #: The password was right but the nonce expired: re-challenge with ``stale=TRUE`` (RFC 7616 3.3).
    stale: bool = False
    #: Why not, for logs (do not tell the client which part was wrong).
    reason: str = ""
    verdict: Verdict = Verdict.WRONG

    def __init__(self, *, ok: bool, username: str | None = None, algorithm: str | None = None, stale: bool = False,
                 reason: str = "", verdict: Verdict = Verdict.WRONG) -> None:
        self.ok = ok
        self.username = username
        self.algorithm = algorithm
        self.stale = stale
        self.reason = reason
        self.verdict = verdict


def _refusal(cred: Credentials, reason: str, verdict: Verdict, *, stale: bool = False) -> AuthResult:
    return AuthResult(ok=False, username=cred.username, algorithm=cred.algorithm, stale=stale, reason=reason,
                      verdict=verdict)


class DigestAuthenticator:
    """Server side of digest: builds challenges and verifies credentials for one realm.

    ``lookup_ha1(username, algorithm)`` returns the stored HA1 hex for that algorithm or None. Typical use::

        result = auth.verify(request.headers.get("Authorization"), method=request.method, now=now,
                             lookup_ha1=db.ha1)
        if not result.ok:
            for value in auth.challenges(now, stale=result.stale):
                response.headers.add("WWW-Authenticate", value)   # 401 (407 + Proxy-Authenticate for a proxy)
    """

    def __init__(
        self,
        realm: str,
        *,
        secret: bytes,
        random_bytes: Callable[[int], bytes],
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        nonce_lifetime_s: float = 300.0,
        max_tracked_nonces: int = 100_000,
    ) -> None:
        self.realm = realm
        # DESIGN 2: the order is configurable; SIPp 3.6.1 reads only the first challenge, so deployments
        # serving it list MD5 first.
        self.algorithms = tuple(_require_algorithm(a) for a in algorithms)
        if not self.algorithms:
            raise ValueError("at least one digest algorithm is required")
        self.nonces = NonceManager(
            secret, random_bytes, realm=realm, lifetime_s=nonce_lifetime_s, max_tracked=max_tracked_nonces
        )
        # Every challenge is this text around a fresh nonce (a base64url nonce needs no quoting): built once.
        self._challenge_text: dict[bool, list[tuple[str, str]]] = {}
        for stale in (False, True):
            parts = []
            for alg in self.algorithms:
                text = Challenge(realm=realm, nonce="\x01", algorithm=alg, stale=stale).to_header_value()
                before, _, after = text.rpartition('"\x01"')
                parts.append((before + '"', '"' + after))
            self._challenge_text[stale] = parts

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """One challenge header value per configured algorithm, in order, sharing one fresh nonce."""
        nonce = self.nonces.issue(now)
        return [before + nonce + after for before, after in self._challenge_text[stale]]

    def verify(
        self,
        authorization: str | None,
        *,
        method: str,
        now: float,
        lookup_ha1: Callable[[str, str], str | None],
        request_uri: str | None = None,
    ) -> AuthResult:
        """Verify one ``Authorization`` / ``Proxy-Authorization`` value.

        ``request_uri``, when given, must equal the credentials' ``uri`` (RFC 3261 22.4 asks servers to check
        it, so credentials cannot be moved to another request). Never raises on bad input.
        """
        if authorization is None:
            return AuthResult(ok=False, reason="no credentials", verdict=_CHALLENGE)
        try:
            cred = Credentials.parse_untrusted(authorization)
        except RemoteProtocolError as exc:
            return AuthResult(ok=False, reason=exc.message, verdict=_REFUSED)
        if cred.realm != self.realm:
            return AuthResult(ok=False, username=cred.username, algorithm=cred.algorithm,
                              reason=f"credentials for another realm {cred.realm!r}", verdict=_CHALLENGE)
        uri_ok = None if request_uri is None else (lambda uri: uri == request_uri)
        return self.verify_credentials(cred, method=method, now=now, lookup_ha1=lookup_ha1, uri_ok=uri_ok)

    def verify_credentials(
        self,
        cred: Credentials,
        *,
        method: str,
        now: float,
        lookup_ha1: Callable[[str, str], str | None],
        uri_ok: Callable[[str], bool] | None = None,
    ) -> AuthResult:
        """The checks of :meth:`verify` on credentials already parsed and known to be for this realm.

        ``uri_ok(digest_uri)`` says whether the credentials' digest uri names the request's target.
        Order matters: a nonce that is not ours or has expired is settled by a new challenge before the
        password is looked at, so only credentials built on a fresh nonce of ours can count as a failure.
        """

        if cred.algorithm not in self.algorithms:
            return _refusal(cred, f"algorithm {cred.algorithm} not offered (offered: {', '.join(self.algorithms)})",
                          _REFUSED)
        if cred.qop != "auth":
            # Without qop there is no nonce count, so replays could not be refused (RFC 7616 5.9).
            return _refusal(cred, "qop=auth is required", _REFUSED)
        if uri_ok is not None and not uri_ok(cred.uri):
            return _refusal(cred, "digest uri does not match the Request-URI", _REFUSED)
        issued_ms = self.nonces.issued_ms(cred.nonce)
        fresh = self.nonces.freshness(issued_ms, now)
        ha1 = lookup_ha1(cred.username, cred.algorithm)
        right = ha1 is not None and verify_response(cred, ha1=ha1, method=method)
        if fresh is not _VALID:
            # RFC 7616 3.3: stale=TRUE only when the response was right (the client retries without a prompt).
            return _refusal(cred, f"nonce {fresh.value}", _CHALLENGE, stale=right)
        if not right:
            return _refusal(cred, "unknown user" if ha1 is None else "wrong response", _WRONG)
        assert issued_ms is not None  # fresh: the MAC was good
        status = self.nonces._use_fresh(cred.nonce, issued_ms, cred.nc, now, cred.username)
        if status is _VALID:
            return AuthResult(ok=True, username=cred.username, algorithm=cred.algorithm, reason="ok",
                              verdict=_OK)
        if status is _REPLAYED:
            return _refusal(cred, f"nonce count {cred.nc:08x} replayed", _REPLAYED_V)
        # The response is right, so the client knows the password: an old count or a forgotten nonce is stale.
        return _refusal(cred, f"nonce {status.value}", _CHALLENGE, stale=True)
