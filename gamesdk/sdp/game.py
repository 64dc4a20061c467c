"""Our SDP extension (DESIGN section 3): the game stream and its ``a=gsdk-*`` lines, as a typed model.

One ``m=application <port> UDP/GSDK gsdk`` section carries the game channel::

    c=IN IP4 198.51.100.10                    where to send game packets (media or session level)
    b=AS:64                                   kbit/s this side wants to RECEIVE (RFC 3264 §5.1)
    a=gsdk-format:pong/1;tick=60              1..n in an offer, exactly one in an answer
    a=gsdk-class:action                       echoed by the answer
    a=gsdk-qos:lat=50;jit=10;loss=10000;pps=60
    a=gsdk-sec:chacha20-poly1305,aes-256-gcm  1..n in an offer, exactly one in an answer
    a=gsdk-kx:x25519 <base64url public key>
    a=gsdk-sid:<u32>

``game_to_sdp`` builds a whole description from a :class:`GameMedia` (the origin is passed in, never made up
here), ``game_from_sdp`` reads it back and validates every value, raising :class:`gamesdk.errors.SdpError`
naming the line. Other media sections and unknown attributes are ignored; unknown ``a=gsdk-*`` attributes are
kept in :func:`canonical_gsdk_lines`, the bytes the channel's transcript hash covers.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
import string
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gamesdk._mypyc import python_class
from gamesdk.errors import LocalProtocolError, SdpError
from gamesdk.qos.model import (
    MAX_KBPS,
    GameFormat,
    SessionTerms,
    canonical_int,
    parse_game_format,
    parse_qos_params,
)
from gamesdk.sdp.codec import (
    _TOKEN_CHARS,
    MAX_SDP_BYTES,
    _is_digits,
    is_token,
    parse_sdp_untrusted,
    safe_text,
)
from gamesdk.sdp.model import (
    Attribute,
    Bandwidth,
    Connection,
    Field,
    Line,
    MediaDescription,
    Origin,
    SessionDescription,
)

__all__ = [
    "GAME_FORMAT",
    "GAME_MEDIA",
    "GAME_PROTO",
    "KX_ALGORITHM",
    "GameMedia",
    "Role",
    "canonical_gsdk_lines",
    "encode_public_key",
    "find_game_media",
    "game_from_sdp",
    "game_to_sdp",
    "quick_game_terms",
    "read_game_untrusted",
]

GAME_MEDIA = "application"
#: Unregistered proto (RFC 8866 §8.2.3 wants an RFC for a new one); acceptable inside our closed system.
GAME_PROTO = "UDP/GSDK"
GAME_FORMAT = "gsdk"
KX_ALGORITHM = "x25519"
_KEY_BYTES = 32  # X25519 public key (RFC 7748 §5)
_KEY_TEXT = 43  # unpadded base64url of 32 bytes (RFC 4648 §5)
_B64URL = string.ascii_letters + string.digits + "-_"
_MAX_SID = 0xFFFF_FFFF
_SINGLE = ("gsdk-class", "gsdk-qos", "gsdk-sec", "gsdk-kx", "gsdk-sid")
# A server sees the same few format and QoS texts in every INVITE of a game; the values are immutable, so the
# parsed values are shared. Errors are not cached (lru_cache does not keep exceptions). Bounded: a peer that
# sends ever new texts only causes misses.
_cached_format = functools.lru_cache(maxsize=1024)(parse_game_format)
_cached_qos = functools.lru_cache(maxsize=1024)(parse_qos_params)
_KNOWN = frozenset(("gsdk-format",) + _SINGLE)


class Role(StrEnum):
    """Whether a description is an offer (INVITE) or an answer (200 OK); answers are stricter."""

    OFFER = "offer"
    ANSWER = "answer"


#: (A member read from the module: ``Role.ANSWER`` runs the enum type's ``__getattr__`` on CPython 3.11.)
_ANSWER = Role.ANSWER


def encode_public_key(public_key: bytes) -> str:
    """The ``a=gsdk-kx`` text of a 32-byte X25519 public key: unpadded base64url."""
    return base64.urlsafe_b64encode(public_key).rstrip(b"=").decode("ascii")


def _decode_public_key(text: str) -> bytes | None:
    if len(text) != _KEY_TEXT or text.strip(_B64URL):
        return None
    key = base64.urlsafe_b64decode(text + "=")
    # The last character carries 2 unused bits; only the canonical encoding is accepted, so that two texts
    # never name the same key (the transcript hash covers the text).
    if encode_public_key(key) != text:
        return None
    return key


@functools.lru_cache(maxsize=4096)
def _address_type(address: str) -> str | None:
    """``IP4``/``IP6`` for a unicast IP literal, None for anything else (names, multicast, 0.0.0.0)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.is_multicast or ip.is_unspecified:
        return None
    return "IP4" if ip.version == 4 else "IP6"


@python_class
@dataclass(frozen=True, slots=True, kw_only=True)
class GameMedia:
    """The game stream of one side's SDP: the negotiable terms plus where and how to reach this side."""

    terms: SessionTerms
    #: Unicast IP literal this side receives game packets on (c=).
    address: str
    #: UDP port this side receives game packets on (m=), 1..65535.
    port: int
    #: This side's ephemeral X25519 public key (a=gsdk-kx), 32 bytes.
    public_key: bytes
    #: The session id this side wants in packets sent TO it (a=gsdk-sid), u32.
    session_id: int

    def __post_init__(self) -> None:
        # The fields read as Any: compiled (mypyc), a read as the declared type checks it and would raise TypeError
        # before these checks name the fault.
        v: Any = self
        if not isinstance(v.terms, SessionTerms):
            raise LocalProtocolError(f"terms must be SessionTerms, got {v.terms!r}")
        if not isinstance(v.address, str) or _address_type(v.address) is None:
            raise LocalProtocolError(f"game address {v.address!r} must be a unicast IPv4 or IPv6 literal")
        if not isinstance(v.port, int) or isinstance(v.port, bool) or not 1 <= v.port <= 65_535:
            raise LocalProtocolError(f"game port must be in 1..65535, got {v.port!r}")
        if not isinstance(v.public_key, bytes) or len(v.public_key) != _KEY_BYTES:
            raise LocalProtocolError("public_key must be 32 bytes (an X25519 public key)")
        if (
            not isinstance(v.session_id, int)
            or isinstance(v.session_id, bool)
            or not 0 <= v.session_id <= _MAX_SID
        ):
            raise LocalProtocolError(f"session_id must be a u32, got {v.session_id!r}")

    @property
    def addrtype(self) -> str:
        """``IP4`` or ``IP6``."""
        return "IP6" if ":" in self.address else "IP4"


def _gsdk_lines(game: GameMedia) -> list[Line]:
    terms = game.terms
    lines: list[Line] = [Bandwidth("AS", terms.receive_kbps)]
    lines.extend(Attribute("gsdk-format", str(fmt)) for fmt in terms.formats)
    lines.append(Attribute("gsdk-class", terms.classification))
    lines.append(Attribute("gsdk-qos", str(terms.qos)))
    lines.append(Attribute("gsdk-sec", ",".join(terms.suites)))
    lines.append(Attribute("gsdk-kx", f"{KX_ALGORITHM} {encode_public_key(game.public_key)}"))
    lines.append(Attribute("gsdk-sid", str(game.session_id)))
    return lines


def game_to_sdp(
    game: GameMedia,
    *,
    username: str,
    sess_id: int,
    sess_version: int,
    role: Role = Role.OFFER,
    offer: SessionDescription | None = None,
) -> SessionDescription:
    """Build the whole SDP of an offer or an answer from the typed game stream.

    Args:
        game: this side's game stream.
        username, sess_id, sess_version: the ``o=`` values (RFC 8866 §5.2); the caller chooses them, e.g. a
            random 62-bit id from the SDK's id factory, and raises the version on each new offer (RFC 3264 §8).
        role: ``Role.ANSWER`` requires exactly one format and one suite.
        offer: for an answer, the offer's description: its other media sections are answered with port 0 in
            their original order, as RFC 3264 §6 requires one answer section per offered section.

    Raises:
        LocalProtocolError: the values cannot form a valid description.
    """
    if not isinstance(username, str) or not username or " " in username or not username.isprintable():
        raise LocalProtocolError(f"o= username {username!r} must be visible characters without spaces")
    for name, number in (("sess_id", sess_id), ("sess_version", sess_version)):
        if not isinstance(number, int) or isinstance(number, bool) or number < 0 or number >= 1 << 64:
            raise LocalProtocolError(f"o= {name} must be an integer in 0..2**64-1, got {number!r}")
    if role == Role.ANSWER and (len(game.terms.formats) != 1 or len(game.terms.suites) != 1):
        raise LocalProtocolError("an answer holds exactly one gsdk-format and one gsdk-sec suite")
    connection = Connection("IN", game.addrtype, game.address)
    ours = MediaDescription(GAME_MEDIA, game.port, GAME_PROTO, (GAME_FORMAT,), tuple(_gsdk_lines(game)))
    media: list[MediaDescription] = []
    if offer is not None:
        for section in offer.media:
            if section.media == GAME_MEDIA and section.proto == GAME_PROTO:
                media.append(ours)
            else:
                media.append(MediaDescription(section.media, 0, section.proto, section.formats))
        if ours not in media:
            raise LocalProtocolError("the offer has no game stream to answer")
    else:
        media.append(ours)
    return SessionDescription(
        origin=Origin(username, sess_id, sess_version, "IN", game.addrtype, game.address),
        session_name="-",
        lines=(connection, Field("t", "0 0")),
        media=tuple(media),
    )


def find_game_media(desc: SessionDescription) -> MediaDescription:
    """The one ``m=application <port> UDP/GSDK gsdk`` section.

    Raises:
        SdpError: there is none, or more than one, or its format list or port is wrong.
    """
    found: MediaDescription | None = None
    for section in desc.media:
        if section.media != GAME_MEDIA or section.proto != GAME_PROTO:
            continue
        line = section.media_line()
        if found is not None:
            raise SdpError(f"'{line}': more than one {GAME_PROTO} game stream", line=line)
        if section.formats != (GAME_FORMAT,):
            raise SdpError(
                f"'{line}': the format of a {GAME_PROTO} stream must be '{GAME_FORMAT}'", line=line
            )
        if section.port_count is not None:
            raise SdpError(f"'{line}': a game stream uses a single port", line=line)
        if section.port == 0:
            raise SdpError(f"'{line}': the game stream was rejected (port 0)", line=line)
        found = section
    if found is None:
        raise SdpError(f"no 'm={GAME_MEDIA} <port> {GAME_PROTO} {GAME_FORMAT}' line in the SDP")
    return found


def _line_error(line: object, reason: str) -> SdpError:
    text = str(line)
    return SdpError(f"'{safe_text(text)}': {safe_text(reason, None)}", line=text)


def _game_connection(desc: SessionDescription, section: MediaDescription) -> Connection:
    connections = section.connections
    if len(connections) > 1:
        raise _line_error(connections[1], "a game stream has exactly one c= line")
    connection = connections[0] if connections else desc.connection
    if connection is None:
        raise SdpError(f"no c= line for the game stream '{section.media_line()}'", line=section.media_line())
    addrtype = _address_type(connection.address)
    if connection.nettype != "IN" or addrtype is None:
        raise _line_error(connection, "the game address must be 'IN IP4|IP6 <unicast IP literal>'")
    if addrtype != connection.addrtype:
        raise _line_error(connection, f"addrtype {connection.addrtype} does not match the address")
    return connection


def game_from_sdp(desc: SessionDescription, role: Role | None = None) -> GameMedia:
    """Read and validate the game stream of a description.

    Args:
        desc: a parsed description (from :func:`gamesdk.sdp.parse_sdp_untrusted`).
        role: ``Role.ANSWER`` requires exactly one format and one suite; ``None`` checks neither count.

    Raises:
        SdpError: a line is missing, repeated or holds a bad value; the message and ``.line`` name it.
    """
    section = find_game_media(desc)
    connection = _game_connection(desc, section)
    receive_kbps: int | None = None
    formats: list[GameFormat] = []
    single: dict[str, str] = {}
    for line in section.lines:
        if isinstance(line, Bandwidth):
            if line.bwtype == "AS":
                if receive_kbps is not None:
                    raise _line_error(line, "b=AS given twice for the game stream")
                receive_kbps = line.bandwidth
            continue
        if not isinstance(line, Attribute) or line.name not in _KNOWN:
            continue
        if line.value is None or not line.value:
            raise _line_error(line, f"{line.name} needs a value")
        if line.name == "gsdk-format":
            try:
                fmt = _cached_format(line.value)
            except LocalProtocolError as exc:
                raise _line_error(line, exc.message) from None
            if fmt in formats:
                raise _line_error(line, "game format listed twice")
            formats.append(fmt)
        elif line.name in single:
            raise _line_error(line, f"{line.name} given twice")
        else:
            single[line.name] = line.value
    media_line = section.media_line()
    if receive_kbps is None:
        raise SdpError(f"no b=AS line for the game stream '{media_line}'", line=media_line)
    if not formats:
        raise SdpError(f"no a=gsdk-format line for the game stream '{media_line}'", line=media_line)
    for name in _SINGLE:
        if name not in single:
            raise SdpError(f"no a={name} line for the game stream '{media_line}'", line=media_line)
    if role == Role.ANSWER and len(formats) != 1:
        raise _line_error(
            Attribute("gsdk-format", str(formats[1])), "an answer picks exactly one game format"
        )

    classification = single["gsdk-class"]
    qos_text = single["gsdk-qos"]
    try:
        qos = _cached_qos(qos_text)
    except LocalProtocolError as exc:
        raise _line_error(Attribute("gsdk-qos", qos_text), exc.message) from None

    sec_text = single["gsdk-sec"]
    suites = tuple(sec_text.split(","))
    if role == Role.ANSWER and len(suites) != 1:
        raise _line_error(Attribute("gsdk-sec", sec_text), "an answer picks exactly one security suite")

    kx_text = single["gsdk-kx"]
    algorithm, space, key_text = kx_text.partition(" ")
    if not space or algorithm != KX_ALGORITHM:
        raise _line_error(Attribute("gsdk-kx", kx_text), f"key exchange must be '{KX_ALGORITHM} <key>'")
    public_key = _decode_public_key(key_text)
    if public_key is None:
        raise _line_error(
            Attribute("gsdk-kx", kx_text), "the key must be 32 bytes in unpadded base64url (43 characters)"
        )

    sid_text = single["gsdk-sid"]
    sid = _canonical_u32(sid_text)
    if sid is None:
        raise _line_error(Attribute("gsdk-sid", sid_text), "session id must be a decimal u32 (0..4294967295)")

    if not is_token(classification):
        raise _line_error(Attribute("gsdk-class", classification), "the class must be a token")
    for index, suite in enumerate(suites):
        if not is_token(suite):
            raise _line_error(Attribute("gsdk-sec", sec_text), "suites must be tokens separated by ','")
        if suite in suites[:index]:
            raise _line_error(Attribute("gsdk-sec", sec_text), f"suite {suite} listed twice")
    if not 1 <= receive_kbps <= MAX_KBPS:
        raise _line_error(Bandwidth("AS", receive_kbps), f"b=AS must be in 1..{MAX_KBPS} kbit/s")
    try:
        terms = SessionTerms(
            formats=tuple(formats),
            classification=classification,
            qos=qos,
            receive_kbps=receive_kbps,
            suites=suites,
        )
        return GameMedia(
            terms=terms, address=connection.address, port=section.port, public_key=public_key, session_id=sid
        )
    except LocalProtocolError as exc:  # pragma: no cover - every value was checked above
        raise SdpError(f"'{media_line}' section: {exc.message}", line=media_line) from None


def _canonical_u32(text: str) -> int | None:
    value = canonical_int(text, 10)
    return value if value is not None and value <= _MAX_SID else None


def _canonical_u32_digits(digits: str) -> bool:
    """``_canonical_u32(digits) is not None`` for a text of ASCII digits (as :data:`_QUICK_SHAPE` takes a session
    id), without the call into the QoS module (interpreted in a compiled build: some 3,500 instructions a body)."""
    return 0 < len(digits) <= 10 and (len(digits) == 1 or digits[0] != "0") and int(digits) <= _MAX_SID


def read_game_untrusted(
    data: bytes | bytearray | memoryview | str, role: Role | None = None
) -> tuple[SessionDescription, GameMedia]:
    """Parse an SDP body from the network and read its game stream (what a server does with an INVITE).

    Raises:
        SdpError: the body or the extension is invalid.
    """
    desc = parse_sdp_untrusted(data)
    return desc, game_from_sdp(desc, role)


def canonical_gsdk_lines(desc: SessionDescription) -> bytes:
    """The canonical bytes of the game stream's lines, for the channel's transcript hash (DESIGN section 6).

    ``m=``, the game's ``c=``, ``b=AS``, then every ``a=gsdk-*`` line in a fixed order (formats in their order,
    class, qos, sec, kx, sid, then unknown ``gsdk-*`` lines as they appear), each ending in CRLF. Any change of
    a gsdk value, of b=AS, of the port or of the address changes these bytes. Lines outside the game stream
    (o=, s=, other media, other attributes) are not covered: they do not key the channel.

    Raises:
        SdpError: the game stream is invalid.
    """
    game = game_from_sdp(desc)
    section = find_game_media(desc)
    lines = [
        f"m={GAME_MEDIA} {game.port} {GAME_PROTO} {GAME_FORMAT}",
        f"c=IN {game.addrtype} {game.address}",
    ]
    lines.extend(map(str, _gsdk_lines(game)))
    lines.extend(
        str(line)
        for line in section.lines
        if isinstance(line, Attribute) and line.name.startswith("gsdk-") and line.name not in _KNOWN
    )
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogatepass")


# -- the quick reader of the terms (a server's hot path) --------------------------------------------------------

#: Order ranks of the lines the quick reader takes inside the game section (RFC 8866 §9: c*, b*, then a*).
_QUICK_MEDIA_RANK = {"c": 2, "b": 3, "a": 5}
#: The last characters of a canonical 43-character key text: base64url digits whose 2 low bits (unused after the
#: 256 key bits) are zero, as re-encoding the decoded key in _decode_public_key demands.
_KEY_LAST = frozenset("AEIMQUYcgkosw048")
#: The terms of the game texts seen (formats, class, qos, sec, b=AS, answer or not); cleared when full.
_quick_terms: dict[tuple[object, ...], SessionTerms] = {}
_QUICK_TERMS_MAX = 256
#: Game texts longer than this together (a game's own are under 300 characters) are read every time, not kept:
#: 256 keys of up to a 64 KiB body each would hold megabytes.
_QUICK_KEY_MAX_CHARS = 1024


_TOKEN_RE = "[" + re.escape(_TOKEN_CHARS) + "]+"


def _layout(eol: str, value: str) -> re.Pattern[str]:
    """The SDK's own layout of a game body (gamesdk.sdp.game_to_sdp) with ``eol`` line ends: ``v= o= s= [c=] t= m=
    [c=] b=``, the formats, class, qos, sec and kx lines in that order, any other (non-gsdk) attribute lines, then
    the sid. Each part is a shape the line reader (:func:`_quick_game_terms_lines`) accepts too: visible ASCII for
    the origin's user and address, tokens for its net and address types, at most 64 digits for its numbers, a
    canonical key text (43 base64url characters whose last one leaves the 2 unused bits zero). Anything else takes
    that reader. ``game``: the text from b=AS's value to the sec line's end, the game's own lines (the same in each
    of its calls).

    ``value``: the characters of the connection values and the game's lines. With CRLF line ends these take a CR
    (``[^\\n]``: sre's quickest class; ``[^\\r\\n]`` cost a third more) which the line reader refuses, as it refuses
    any CR left once CRLFs are LFs: a connection value with a CR is refused by :func:`_quick_connection` (not
    printable), game lines with one are never kept (the line reader reads them first). The ``s=`` line and the
    other attributes, whose text nothing reads again, take no CR."""
    other = "[^\r\n]" if "\r" in eol else "[^\n]"
    return re.compile(
        f"v=0{eol}"
        f"o=[!-~]+ [0-9]{{1,64}} [0-9]{{1,64}} {_TOKEN_RE} {_TOKEN_RE} [!-~]+{eol}"
        f"s={other}+{eol}"
        f"(?:c=(?P<session_c>{value}*){eol})?"
        f"t=[0-9]+ [0-9]+{eol}"
        f"m=application (?P<port>[0-9]{{1,5}}) UDP/GSDK gsdk{eol}"
        f"(?:c=(?P<media_c>{value}*){eol})?"
        f"b=AS:(?P<game>[0-9]{{1,64}}{eol}"
        f"(?:a=gsdk-format:{value}+{eol})+"
        f"a=gsdk-class:{value}+{eol}"
        f"a=gsdk-qos:{value}+{eol}"
        f"a=gsdk-sec:{value}+){eol}"
        f"a=gsdk-kx:x25519 [A-Za-z0-9_-]{{42}}[AEIMQUYcgkosw048]{eol}"
        f"(?:a=(?!gsdk-){_TOKEN_RE}(?::{other}*)?{eol})*"
        f"a=gsdk-sid:(?P<sid>[0-9]+)(?:{eol})*"
    )


#: The layout with LF line ends, and with CRLF ones (a SIP body's: matched as received, without the copy that
#: replacing its line ends made, some 5,000 instructions a body). A body that mixes them takes the line reader.
_QUICK_SHAPE = _layout("\n", "[^\n]")
_QUICK_SHAPE_CRLF = _layout("\r\n", "[^\n]")
#: The terms of the game lines of :data:`_QUICK_SHAPE` bodies seen (the ``game`` text, answer or not); cleared when
#: full.
_shaped_terms: dict[tuple[str, bool], SessionTerms] = {}


def _quick_connection(value: str) -> str | None:
    """The address of a ``c=IN IP4|IP6 <unicast literal>`` value that the parser and the game reader both take."""
    parts = value.split(" ")
    if len(parts) != 3 or parts[0] != "IN":
        return None
    address = parts[2]
    if not address or " " in address or not address.isprintable():
        return None
    kind = _address_type_kept(address) if len(address) <= _MAX_ADDRESS_CHARS else _address_type(address)
    return address if kind == parts[1] else None


#: The longest IP literal text (an IPv6 address with an embedded IPv4 one), and the address types kept: a player's
#: address repeats in every body it sends, and ``ipaddress`` reads it in pure Python (two bodies a call). The type
#: is a function of the text alone, so a kept one is what :func:`_address_type` gives.
_MAX_ADDRESS_CHARS = 45
_address_type_kept = functools.lru_cache(maxsize=1024)(_address_type)
#: The connection values the layout's reader took (``IN IP4 <address>``: a player's repeats in every body it sends),
#: each with its address: one lookup instead of a split, the checks and the address type's cache (some 2,500
#: instructions a body). A function of the value alone; only values that are taken and short are kept, at most
#: CONNECTIONS_MAX (emptied when full).
_connections: dict[str, str] = {}
CONNECTIONS_MAX = 1024


def _kept_connection(value: str) -> str | None:
    """:func:`_quick_connection`, kept for the next bodies."""
    address = _connections.get(value)
    if address is not None:
        return address
    address = _quick_connection(value)
    if address is not None and len(value) <= _MAX_ADDRESS_CHARS + 8:
        if len(_connections) >= CONNECTIONS_MAX:
            _connections.clear()
        _connections[value] = address
    return address


def quick_game_terms(data: object, role: Role | None = None) -> SessionTerms | None:
    """The game terms of a body in the usual shape, without building the description: what
    ``game_from_sdp(parse_sdp_untrusted(data), role).terms`` returns, or ``None`` when this reader is not sure.

    The usual shape is what the SDK writes: ``v= o= s= [c=] t=``, then one ``m=application <port> UDP/GSDK
    gsdk`` section of ``c= b= a=`` lines. Each line is checked as the parser and the game reader check it; anything
    else (another line type, another media section, a value either would refuse, a doubt) gives ``None``, never
    an error: the caller then runs the full parser and game reader, which accept or name the fault as always. So
    the answer for any body is the full reader's, only sooner for the usual one (a server reads two per call).
    """
    # Any other type (bytearray, memoryview) is left to the full reader; ``object`` keeps a compiled build (mypyc)
    # from refusing it with a TypeError.
    if isinstance(data, bytes) and type(data) is bytes:
        if len(data) > MAX_SDP_BYTES:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    elif isinstance(data, str) and type(data) is str:
        text = data
        if len(text) > MAX_SDP_BYTES:
            return None
    else:
        return None
    if "\x00" in text:
        return None
    shaped = (_QUICK_SHAPE_CRLF if "\r" in text else _QUICK_SHAPE).fullmatch(text)
    if shaped is not None:
        return _shaped_game_terms(shaped, text, role)
    return _quick_game_terms_lf(text, role)


def _quick_game_terms_lf(text: str, role: Role | None) -> SessionTerms | None:
    """:func:`_quick_game_terms_lines` of a decoded body whose line ends may be CRLFs (made LFs first); None when a
    CR is left anywhere else."""
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            return None
    return _quick_game_terms_lines(text, role)


def _shaped_game_terms(shaped: re.Match[str], text: str, role: Role | None) -> SessionTerms | None:
    """The terms of a body in the SDK's own layout (:data:`_QUICK_SHAPE`), by one match instead of a pass per line.

    The game's lines (formats, class, qos, sec, b=AS) are the same text in every call of a game: their terms (and
    that the line reader accepts them) are kept per text, read the first time by :func:`_quick_game_terms_lines`.
    What changes per call is checked here as that reader checks it: the key and the session id (the pattern takes
    only canonical key texts), the connection addresses, the port; the origin, ``s=`` and ``t=`` lines are taken
    by the pattern only in a shape that reader accepts."""
    # (All its groups at once, in the pattern's order: by name, each would be a lookup in its group index.)
    (session_c, port, media_c, game, sid) = shaped.groups()
    # (the port as a str, which the pattern's group always is: compiled, int() of a str is a native call, of an
    # object a call through the interpreter)
    port_text: str = port
    if ((session_c is None and media_c is None) or not 1 <= int(port_text) <= 65_535
            or (session_c is not None and _kept_connection(session_c) is None)
            or (media_c is not None and _kept_connection(media_c) is None) or not _canonical_u32_digits(sid)):
        return None
    # (One text for the game's lines, b=AS to sec: one string to hash, not five in a tuple.)
    cache_key = (game, role == _ANSWER)
    terms = _shaped_terms.get(cache_key)
    if terms is None:
        terms = _quick_game_terms_lf(text, role)
        if terms is None:
            return None  # not cached: the reason may be this call's own values
        if len(game) > _QUICK_KEY_MAX_CHARS:
            return terms  # read, not kept: the cache stays bounded in bytes, not only in entries
        if len(_shaped_terms) >= _QUICK_TERMS_MAX:
            _shaped_terms.clear()
        _shaped_terms[cache_key] = terms
    return terms


def _quick_game_terms_lines(text: str, role: Role | None) -> SessionTerms | None:
    """:func:`quick_game_terms` of a decoded body with ``\\n`` line ends, line by line."""
    lines = text.split("\n")
    while lines and not lines[-1]:
        lines.pop()
    count = len(lines)
    if count < 5 or lines[0] != "v=0":
        return None
    origin = lines[1]
    if origin[:2] != "o=":
        return None
    fields = origin[2:].split(" ")
    if (len(fields) != 6 or not fields[0] or not fields[0].isprintable() or not fields[5]
            or not fields[5].isprintable() or not is_token(fields[3]) or not is_token(fields[4])
            or not _is_digits(fields[1]) or len(fields[1]) > 64 or not _is_digits(fields[2])
            or len(fields[2]) > 64):
        return None
    if len(lines[2]) < 3 or lines[2][:2] != "s=":
        return None
    index = 3
    session_address: str | None = None
    if lines[index][:2] == "c=":
        session_address = _quick_connection(lines[index][2:])
        if session_address is None:
            return None
        index += 1
    line = lines[index]
    if line[:2] != "t=":
        return None
    times = line[2:].split(" ")
    if len(times) != 2 or not _is_digits(times[0]) or not _is_digits(times[1]):
        return None
    index += 1
    if index >= count:
        return None
    media = lines[index][2:].split(" ")
    if (lines[index][:2] != "m=" or len(media) != 4 or media[0] != GAME_MEDIA or media[2] != GAME_PROTO
            or media[3] != GAME_FORMAT or not _is_digits(media[1]) or len(media[1]) > 5
            or not 1 <= int(media[1]) <= 65_535):
        return None
    media_address: str | None = None
    receive_kbps = -1
    formats: list[GameFormat] = []
    format_texts: list[str] = []
    single: dict[str, str] = {}
    rank = 0
    for line in lines[index + 1:]:
        if len(line) < 3 or line[1] != "=" or line[2] == " ":
            return None
        kind = line[0]
        new_rank = _QUICK_MEDIA_RANK.get(kind)
        if new_rank is None or new_rank < rank:
            return None
        rank = new_rank
        if kind == "a":
            name, _, value = line[2:].partition(":")
            if not name or name.strip(_TOKEN_CHARS):
                return None
            if name not in _KNOWN:
                continue
            if not value:
                return None
            if name == "gsdk-format":
                try:
                    fmt = _cached_format(value)
                except Exception:  # noqa: BLE001 - the full reader names the fault
                    return None
                if fmt in formats:
                    return None
                formats.append(fmt)
                format_texts.append(value)
            elif name in single:
                return None
            else:
                single[name] = value
        elif kind == "b":
            amount = line[2:].removeprefix("AS:")
            if receive_kbps >= 0 or len(amount) == len(line) - 2 or not _is_digits(amount) or len(amount) > 64:
                return None
            receive_kbps = int(amount)
        else:
            if media_address is not None:
                return None
            media_address = _quick_connection(line[2:])
            if media_address is None:
                return None
    if (media_address is None and session_address is None) or not formats or len(single) != len(_SINGLE):
        return None
    # Per call: the key and the session id (checked as _decode_public_key and _canonical_u32 do).
    algorithm, space, key_text = single["gsdk-kx"].partition(" ")
    if (not space or algorithm != KX_ALGORITHM or len(key_text) != _KEY_TEXT or key_text.strip(_B64URL)
            or key_text[-1] not in _KEY_LAST or _canonical_u32(single["gsdk-sid"]) is None):
        return None
    # Per game: the same few texts in every call, so their terms are kept (immutable values).
    cache_key = (tuple(format_texts), single["gsdk-class"], single["gsdk-qos"], single["gsdk-sec"], receive_kbps,
                 role == _ANSWER)
    terms = _quick_terms.get(cache_key)
    if terms is None:
        terms = _quick_new_terms(formats, single, receive_kbps, role)
        if terms is None:
            return None
        if (sum(map(len, format_texts)) + len(single["gsdk-class"]) + len(single["gsdk-qos"])
                + len(single["gsdk-sec"]) > _QUICK_KEY_MAX_CHARS):
            return terms  # read, not kept: the cache stays bounded in bytes, not only in entries
        if len(_quick_terms) >= _QUICK_TERMS_MAX:
            _quick_terms.clear()
        _quick_terms[cache_key] = terms
    return terms


def _quick_new_terms(formats: list[GameFormat], single: dict[str, str], receive_kbps: int,
                     role: Role | None) -> SessionTerms | None:
    if not 1 <= receive_kbps <= MAX_KBPS or (role == Role.ANSWER and len(formats) != 1):
        return None
    try:
        qos = _cached_qos(single["gsdk-qos"])
    except Exception:  # noqa: BLE001 - the full reader names the fault
        return None
    suites = tuple(single["gsdk-sec"].split(","))
    if role == Role.ANSWER and len(suites) != 1:
        return None
    for position, suite in enumerate(suites):
        if not is_token(suite) or suite in suites[:position]:
            return None
    classification = single["gsdk-class"]
    if not is_token(classification):
        return None
    try:
        return SessionTerms(formats=tuple(formats), classification=classification, qos=qos,
                            receive_kbps=receive_kbps, suites=suites)
    except Exception:  # noqa: BLE001 - the full reader names the fault
        return None
