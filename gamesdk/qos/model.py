"""What a game session asks for: formats, classification, QoS bounds, bandwidth and security suites.

These values are what the ``a=gsdk-*`` and ``b=AS`` lines of DESIGN section 3 carry, without the SDP text
around them (``gamesdk.sdp.game`` maps them to and from SDP). The SDK, the negotiation rules and the server's
policy code all use them. Every value validates itself on construction and raises
:class:`gamesdk.errors.LocalProtocolError` with a message naming the value; the SDP reader turns that into an
``SdpError`` naming the line.

Units are in the names: ``*_ms`` milliseconds, ``*_ppm`` parts per million, ``*_kbps`` kbit/s, ``pps`` packets/s.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeAlias

from gamesdk._mypyc import python_class
from gamesdk.errors import LocalProtocolError

__all__ = [
    "KNOWN_SUITES",
    "MAX_JITTER_MS",
    "MAX_KBPS",
    "MAX_LATENCY_MS",
    "MAX_LOSS_PPM",
    "MAX_PPS",
    "SUITE_BITS",
    "FormatsLike",
    "GameFormat",
    "QosParams",
    "SessionTerms",
    "Side",
    "canonical_int",
    "game_formats",
    "parse_game_format",
    "parse_qos_params",
    "suite_bits",
]

#: AEAD suites the channel implements, strongest first (DESIGN section 6: ChaCha20-Poly1305 is the default;
#: both have 256-bit keys, ChaCha20 comes first because it is fast without AES hardware).
KNOWN_SUITES: tuple[str, ...] = ("chacha20-poly1305", "aes-256-gcm")

#: Security strength in bits of every suite name we recognise. ``aes-128-gcm`` is recognised only so that an
#: offer asking for it can be refused by name ("weaker security"); the channel never implements it. Names not
#: in this table are kept in the SDP but never chosen.
SUITE_BITS: Mapping[str, int] = MappingProxyType(
    {"chacha20-poly1305": 256, "aes-256-gcm": 256, "aes-128-gcm": 128}
)

#: Upper bounds of the gsdk-qos values. A minute of round trip or jitter is far beyond any playable game; they
#: exist so that absurd values are refused instead of reserved.
MAX_LATENCY_MS = 60_000
MAX_JITTER_MS = 60_000
#: Loss is a fraction in parts per million: 1,000,000 means every packet may be lost.
MAX_LOSS_PPM = 1_000_000
#: 10,000 packets/s of 1200 bytes is about 96 Mbit/s, far above what a game sends (DESIGN: 60 packets/s typical).
MAX_PPS = 10_000
#: b=AS ceiling: 1 Gbit/s, the fastest access link a policy server would know.
MAX_KBPS = 1_000_000
_MAX_FORMAT_VERSION = 9_999  # fmt-ver = 1*4DIGIT (docs/protocol.md)

_TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`{|}~"  # RFC 8866 §9 token-char


def _is_token(text: str) -> bool:
    return bool(text) and not text.strip(_TOKEN_CHARS)


def canonical_int(text: str, max_digits: int) -> int | None:
    """``text`` as a decimal of at most ``max_digits`` ASCII digits, without sign or leading zeros (so the SDP
    text is canonical), else None."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    if len(text) > 1 and text[0] == "0":
        return None
    return int(text)


# The checks take ``object``: they are what tells a value of the wrong type (a compiled build would refuse it with a
# TypeError when passing it as the field's type).
def _check_range(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise LocalProtocolError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def _check_params(what: str, params: object) -> None:
    if not isinstance(params, tuple):
        raise LocalProtocolError(f"{what} parameters must be a tuple of (token, token), got {params!r}")
    seen: set[str] = set()
    for item in params:
        if (not isinstance(item, tuple) or len(item) != 2 or not isinstance(item[0], str)
                or not isinstance(item[1], str) or not _is_token(item[0]) or not _is_token(item[1])):
            raise LocalProtocolError(f"{what} parameter {item!r} must be token=token")
        if item[0] in seen:
            raise LocalProtocolError(f"{what} parameter {item[0]!r} given twice")
        seen.add(item[0])


def _split_params(what: str, text: str) -> tuple[tuple[str, str], ...]:
    params = []
    for part in text.split(";"):
        key, equals, value = part.partition("=")
        if not equals:
            raise LocalProtocolError(f"{what} parameter {part!r} must be token=token")
        params.append((key, value))
    return tuple(params)


def suite_bits(suite: str) -> int:
    """Security strength of a suite name in bits; 0 for a name we do not recognise."""
    return SUITE_BITS.get(suite, 0)


@python_class
@dataclass(frozen=True, slots=True)
class GameFormat:
    """A game format type: ``name/version`` plus ``key=value`` parameters (``pong/1;tick=60``).

    Two formats match when name and version are equal; the answer echoes the offered line with its parameters.
    """

    name: str
    version: int
    params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # The fields read as Any: compiled (mypyc), a read as the declared type checks it and would raise TypeError
        # before these checks name the fault.
        v: Any = self
        if not isinstance(v.name, str) or not _is_token(v.name):
            raise LocalProtocolError(f"game format name {v.name!r} must be a token")
        _check_range("game format version", v.version, 0, _MAX_FORMAT_VERSION)
        _check_params(f"game format {v.name}", v.params)

    def __str__(self) -> str:
        head = f"{self.name}/{self.version}"
        if not self.params:
            return head
        return head + "".join(f";{key}={value}" for key, value in self.params)

    def matches(self, other: GameFormat) -> bool:
        """Same game and version, whatever the parameters."""
        return self.name == other.name and self.version == other.version

    def admits(self, offered: GameFormat) -> bool:
        """True if a side that plays ``self`` can play ``offered``.

        Same name and version, and every parameter ``self`` names has the same value in ``offered``
        (``pong/2`` admits ``pong/2;tick=120``; ``pong/2;tick=60`` does not).
        """
        if self.name != offered.name or self.version != offered.version:
            return False
        return all(offered.param(key) == value for key, value in self.params)

    def param(self, key: str) -> str | None:
        """The value of one parameter, or None."""
        for name, value in self.params:
            if name == key:
                return value
        return None


def parse_game_format(text: str) -> GameFormat:
    """Parse ``name/version[;key=value]*`` (the value of ``a=gsdk-format``).

    Raises:
        LocalProtocolError: the text is not a game format.
    """
    head, semicolon, rest = text.partition(";")
    name, slash, version_text = head.partition("/")
    version = canonical_int(version_text, 4)
    if not slash or version is None:
        raise LocalProtocolError(f"game format {text!r} must be name/version with a version of 1-4 digits")
    params = _split_params(f"game format {name}", rest) if semicolon else ()
    return GameFormat(name, version, params)


#: What ``invite(format=...)`` and ``Requirements(formats=...)`` take: one format or several in preference
#: order, each a ``GameFormat`` or its text (``"pong/1;tick=60"``).
FormatsLike: TypeAlias = str | GameFormat | Sequence[str | GameFormat]


def game_formats(value: FormatsLike, what: str = "format") -> tuple[GameFormat, ...]:
    """``value`` as a tuple of ``GameFormat`` (texts parsed), in its order.

    Raises:
        TypeError: an item is neither text nor ``GameFormat`` (the message says what to pass).
        LocalProtocolError: a text is not a game format, or there is none.
    """
    if isinstance(value, (str, GameFormat)) or not isinstance(value, Iterable):
        items: list[object] = [value]
    else:
        items = list(value)
    out: list[GameFormat] = []
    for item in items:
        if isinstance(item, GameFormat):
            out.append(item)
        elif isinstance(item, str):
            out.append(parse_game_format(item))
        else:
            raise TypeError(
                f"{what} takes a game format as text ('pong/1;tick=60') or GameFormat, got {type(item).__name__}"
            )
    if not out:
        raise LocalProtocolError(f"{what} must name at least one game format")
    return tuple(out)


_QOS_KEYS = {"lat": "latency_ms", "jit": "jitter_ms", "loss": "loss_ppm", "pps": "pps"}


@python_class
@dataclass(frozen=True, slots=True, kw_only=True)
class QosParams:
    """The ``a=gsdk-qos`` values: ``lat=<ms>;jit=<ms>;loss=<ppm>;pps=<n>``."""

    #: Maximum round-trip time the game tolerates, ms (lat).
    latency_ms: int
    #: Maximum jitter (delay variation), ms (jit).
    jitter_ms: int
    #: Maximum packet loss, parts per million (loss; 10,000 = 1 %).
    loss_ppm: int
    #: Packets per second the side that wrote the line sends (pps).
    pps: int
    #: Parameters we do not know, in order; kept and echoed, never interpreted.
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # The fields read as Any: compiled (mypyc), a read as the declared type checks it and would raise TypeError
        # before these checks name the fault.
        v: Any = self
        _check_range("gsdk-qos lat (ms)", v.latency_ms, 1, MAX_LATENCY_MS)
        _check_range("gsdk-qos jit (ms)", v.jitter_ms, 0, MAX_JITTER_MS)
        _check_range("gsdk-qos loss (ppm)", v.loss_ppm, 0, MAX_LOSS_PPM)
        _check_range("gsdk-qos pps", v.pps, 1, MAX_PPS)
        _check_params("gsdk-qos", v.extra)
        for key, _ in v.extra:
            if key in _QOS_KEYS:
                raise LocalProtocolError(f"gsdk-qos parameter {key!r} given twice")

    def __str__(self) -> str:
        text = f"lat={self.latency_ms};jit={self.jitter_ms};loss={self.loss_ppm};pps={self.pps}"
        return text + "".join(f";{key}={value}" for key, value in self.extra)


def parse_qos_params(text: str) -> QosParams:
    """Parse the value of ``a=gsdk-qos`` (all of lat, jit, loss and pps are required, in any order).

    Raises:
        LocalProtocolError: a value is missing, repeated, not a canonical decimal number or out of range.
    """
    known: dict[str, int] = {}
    extra: list[tuple[str, str]] = []
    for key, value in _split_params("gsdk-qos", text):
        field = _QOS_KEYS.get(key)
        if field is None:
            extra.append((key, value))
            continue
        if field in known:
            raise LocalProtocolError(f"gsdk-qos parameter {key!r} given twice")
        number = canonical_int(value, 7)
        if number is None:
            raise LocalProtocolError(
                f"gsdk-qos {key}={value!r} must be a decimal number without leading zeros"
            )
        known[field] = number
    missing = [key for key, field in _QOS_KEYS.items() if field not in known]
    if missing:
        raise LocalProtocolError(f"gsdk-qos is missing {', '.join(missing)}")
    return QosParams(**known, extra=tuple(extra))


@python_class
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTerms:
    """The negotiable part of one side's SDP (offer or answer): what the side asks for.

    An offer lists 1..n formats and suites in preference order; an answer holds exactly one of each.
    """

    #: ``a=gsdk-format`` lines, preference order.
    formats: tuple[GameFormat, ...]
    #: ``a=gsdk-class``: the game classification, mapped to a QoS class by policy config.
    classification: str
    #: ``a=gsdk-qos``.
    qos: QosParams
    #: ``b=AS``: kbit/s this side wants to RECEIVE (RFC 3264 §5.1).
    receive_kbps: int
    #: ``a=gsdk-sec``: AEAD suites, strongest first. Unknown names are kept but never chosen.
    suites: tuple[str, ...]

    def __post_init__(self) -> None:
        # The fields read as Any: compiled (mypyc), a read as the declared type checks it and would raise TypeError
        # before these checks name the fault.
        v: Any = self
        if not v.formats:
            raise LocalProtocolError("at least one game format (gsdk-format) is required")
        for index, fmt in enumerate(v.formats):
            if not isinstance(fmt, GameFormat):
                raise LocalProtocolError(f"formats must be GameFormat values, got {fmt!r}")
            if fmt in v.formats[:index]:
                raise LocalProtocolError(f"game format {fmt} listed twice")
        if not isinstance(v.classification, str) or not _is_token(v.classification):
            raise LocalProtocolError(f"classification {v.classification!r} must be a token")
        if not isinstance(v.qos, QosParams):
            raise LocalProtocolError(f"qos must be a QosParams value, got {v.qos!r}")
        _check_range("b=AS receive bandwidth (kbit/s)", v.receive_kbps, 1, MAX_KBPS)
        if not v.suites:
            raise LocalProtocolError("at least one security suite (gsdk-sec) is required")
        for index, suite in enumerate(v.suites):
            if not isinstance(suite, str) or not _is_token(suite):
                raise LocalProtocolError(f"security suite {suite!r} must be a token")
            if suite in v.suites[:index]:
                raise LocalProtocolError(f"security suite {suite} listed twice")


class Side(StrEnum):
    """Which player of a session a server or check is about."""

    #: The player who sent the INVITE (the offerer).
    CALLER = "caller"
    #: The player who answered (the answerer).
    CALLEE = "callee"
