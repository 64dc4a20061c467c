"""SDP text <-> :class:`SessionDescription` (RFC 8866 §5 and the §9 grammar).

``parse_sdp_untrusted`` reads a body from the network and raises only :class:`gamesdk.errors.SdpError`, whose
message and ``.line`` name the offending line (a server answers ``488`` with ``Warning: 399``). Parsing is plain
string splitting with one pass over the lines: a server parses every INVITE body.

What is checked, and why:

- ``v=0``, ``o=``, ``s=`` come first, in that order (RFC 8866 §5 and §9 ``session-description``).
- The other line types follow the §9 order. Session level: ``i u e p c b (t r* [z])+ k a``, then media sections
  ``m i c* b* k a*``. ``i``, ``u``, ``c`` (session level) and ``k`` appear at most once; ``z=`` only after an
  ``r=`` (new in RFC 8866, §5.11); at least one ``t=`` before any ``k=``, ``a=`` or ``m=``.
- A type letter we do not know makes the whole description invalid (RFC 8866 §5: "An SDP parser MUST completely
  ignore any session description that contains a type letter that it does not understand").
- ``o=``, ``c=``, ``b=``, ``m=`` and ``t=`` have the field structure of §9; ``a=`` names are tokens. Values never
  hold NUL or CR (§9 ``byte-string``), and there is no whitespace around ``=`` (§5).
- Input is UTF-8 (the RFC 8866 §6.10 default charset); CRLF line ends, LF alone is accepted (§5 "parsers SHOULD
  be tolerant and also accept lines terminated with a single newline"). Blank lines at the very end (as some SIP
  stacks add) are ignored; a blank line elsewhere is an error.
"""

from __future__ import annotations

import string

from gamesdk.errors import LocalProtocolError, SdpError
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

__all__ = ["MAX_SDP_BYTES", "format_sdp", "format_sdp_bytes", "is_token", "parse_sdp_untrusted", "safe_text"]

#: Largest body we parse. A UDP SIP message cannot be larger than 65,535 bytes anyway (RFC 3261 §18.1.1 keeps
#: UDP messages far below that), and our own bodies are about 500 bytes.
MAX_SDP_BYTES = 65_536

_TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`{|}~"  # RFC 8866 §9 token-char

#: Order ranks at session level (RFC 8866 §9 session-description). t/r/z share the time-description block.
_SESSION_RANK = {"i": 3, "u": 4, "e": 5, "p": 6, "c": 7, "b": 8, "t": 9, "r": 10, "z": 11, "k": 12, "a": 13}
_SESSION_ONCE = frozenset("iuck")
#: Order ranks inside a media section (RFC 8866 §9 media-description).
_MEDIA_RANK = {"i": 1, "c": 2, "b": 3, "k": 4, "a": 5}
_MEDIA_ONCE = frozenset("ik")
_KNOWN_TYPES = frozenset("vosiuepcbtrzkam")
_TIME_UNITS = "dhms"  # RFC 8866 §9 fixed-len-time-unit (case-sensitive)
_MAX_NUMBER_DIGITS = 64  # keeps int() far from CPython's 4300-digit conversion limit


def is_token(text: str) -> bool:
    """True if ``text`` is an RFC 8866 §9 ``token`` (1*token-char)."""
    # str.strip removes token chars from both ends; anything left is a character outside the set.
    return bool(text) and not text.strip(_TOKEN_CHARS)


def _is_digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def _is_non_ws(text: str) -> bool:
    """RFC 8866 §9 ``non-ws-string``: visible characters, no space or control."""
    return bool(text) and " " not in text and text.isprintable()


def safe_text(text: str, limit: int | None = 80) -> str:
    """Printable, double-quote-free text for error messages, which end up in a SIP Warning quoted-string.

    Control characters and backslashes become ``\\xNN``, ``"`` becomes ``'``; with ``limit``, longer text is cut.
    """
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    if not text.isprintable() or '"' in text or "\\" in text:
        text = "".join(
            "'" if ch == '"' else ch if ch.isprintable() and ch != "\\" else _escape(ch) for ch in text
        )
    return text


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


_show = safe_text


def _error(number: int, raw: str, reason: str) -> SdpError:
    return SdpError(f"line {number} '{_show(raw)}': {reason}", line=raw)


def _number(number: int, raw: str, text: str, what: str, maximum: int | None = None) -> int:
    if not _is_digits(text) or len(text) > _MAX_NUMBER_DIGITS:
        raise _error(number, raw, f"{what} must be decimal digits")
    value = int(text)
    if maximum is not None and value > maximum:
        raise _error(number, raw, f"{what} must be at most {maximum}")
    return value


def _parse_origin(number: int, raw: str, value: str) -> Origin:
    parts = value.split(" ")
    if len(parts) != 6:
        raise _error(number, raw, "o= needs 6 fields: username sess-id sess-version nettype addrtype address")
    username, sess_id, sess_version, nettype, addrtype, address = parts
    if not _is_non_ws(username) or not _is_non_ws(address):
        raise _error(number, raw, "o= username and address must be visible characters")
    if not is_token(nettype) or not is_token(addrtype):
        raise _error(number, raw, "o= nettype and addrtype must be tokens")
    return Origin(
        username,
        _number(number, raw, sess_id, "o= sess-id"),
        _number(number, raw, sess_version, "o= sess-version"),
        nettype,
        addrtype,
        address,
    )


def _parse_connection(number: int, raw: str, value: str) -> Connection:
    parts = value.split(" ")
    if len(parts) != 3 or not is_token(parts[0]) or not is_token(parts[1]) or not _is_non_ws(parts[2]):
        raise _error(number, raw, "c= must be <nettype> <addrtype> <connection-address>")
    return Connection(parts[0], parts[1], parts[2])


def _parse_bandwidth(number: int, raw: str, value: str) -> Bandwidth:
    bwtype, colon, amount = value.partition(":")
    if not colon or not is_token(bwtype):
        raise _error(number, raw, "b= must be <bwtype>:<bandwidth>")
    return Bandwidth(bwtype, _number(number, raw, amount, "b= bandwidth"))


def _check_typed_time(number: int, raw: str, text: str) -> None:
    digits = text[:-1] if text and text[-1] in _TIME_UNITS else text
    if not _is_digits(digits):
        raise _error(number, raw, f"'{_show(text)}' is not a time (digits with an optional d/h/m/s unit)")


def _check_field(number: int, raw: str, kind: str, value: str) -> None:
    """Structure checks of the lines kept as text."""
    if kind == "t":
        parts = value.split(" ")
        if len(parts) != 2 or not _is_digits(parts[0]) or not _is_digits(parts[1]):
            raise _error(number, raw, "t= must be <start-time> <stop-time>")
    elif kind == "r":
        parts = value.split(" ")
        if len(parts) < 3:
            raise _error(number, raw, "r= needs <repeat-interval> <active-duration> <offsets>")
        for part in parts:
            _check_typed_time(number, raw, part)
    elif kind == "z":
        parts = value.split(" ")
        if len(parts) % 2:
            raise _error(number, raw, "z= must be pairs of <adjustment-time> <offset>")
        for index, part in enumerate(parts):
            if index % 2:
                _check_typed_time(number, raw, part.removeprefix("-"))
            elif not _is_digits(part):
                raise _error(number, raw, "z= adjustment time must be digits")


def _parse_media(number: int, raw: str, value: str) -> MediaDescription:
    parts = value.split(" ")
    if len(parts) < 4:
        raise _error(number, raw, "m= must be <media> <port> <proto> <fmt> ...")
    media, port_text, proto = parts[0], parts[1], parts[2]
    if not is_token(media):
        raise _error(number, raw, "m= media must be a token")
    port_text, slash, count_text = port_text.partition("/")
    port = _number(number, raw, port_text, "m= port", 65_535)
    port_count = _number(number, raw, count_text, "m= port count", 65_535) if slash else None
    if not all(is_token(piece) for piece in proto.split("/")):
        raise _error(number, raw, "m= proto must be tokens separated by '/'")
    formats = tuple(parts[3:])
    if not all(is_token(fmt) for fmt in formats):
        raise _error(number, raw, "m= formats must be tokens separated by single spaces")
    return MediaDescription(media, port, proto, formats, (), port_count)


def _decode(data: bytes | bytearray | memoryview | str) -> str:
    if isinstance(data, str):
        if len(data) > MAX_SDP_BYTES:
            raise SdpError(f"SDP body longer than {MAX_SDP_BYTES} characters", status_hint=413)
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"SDP body must be bytes or str, not {type(data).__name__}")
    if len(data) > MAX_SDP_BYTES:
        raise SdpError(f"SDP body longer than {MAX_SDP_BYTES} bytes", status_hint=413)
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError(f"SDP body is not UTF-8 (bad byte at offset {exc.start})") from None


def parse_sdp_untrusted(data: bytes | bytearray | memoryview | str) -> SessionDescription:
    """Parse an SDP body received from the network.

    Args:
        data: the body, as bytes (UTF-8) or text; CRLF or LF line ends.

    Returns:
        The description with every line kept in order.

    Raises:
        SdpError: the body breaks RFC 8866; ``.line`` is the offending line (``None`` for whole-body errors).
    """
    text = _decode(data)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    raw_lines = text.split("\n")
    # Trailing line ends and blank lines at the very end are tolerated; the last line may lack its CRLF.
    while raw_lines and raw_lines[-1] in ("", "\r"):
        raw_lines.pop()
    if not raw_lines:
        raise SdpError("empty SDP body")
    raw_lines[-1] = raw_lines[-1].removesuffix("\r")
    if "\r" in text or "\x00" in text:
        # One scan of the whole body instead of two per line; find the culprit only when there is one.
        for number, line in enumerate(raw_lines, 1):
            if "\r" in line or "\x00" in line:
                raise _error(number, line, "CR or NUL inside a line")

    session_lines: list[Line] = []
    media: list[MediaDescription] = []
    current: MediaDescription | None = None
    current_lines: list[Line] = []
    origin: Origin | None = None
    session_name = ""
    rank = 0
    previous = "s"
    seen_time = False
    number = 0
    for number, line in enumerate(raw_lines, 1):
        if len(line) < 3 or line[1] != "=":
            if not line:
                raise _error(number, line, "empty line inside the SDP body")
            if len(line) == 2 and line[1] == "=":
                raise _error(number, line, f"{_show(line[0])}= has an empty value")
            raise _error(number, line, "not a '<type>=<value>' line")
        kind = line[0]
        if kind not in _KNOWN_TYPES:
            # RFC 8866 §5: an unknown type letter invalidates the whole description.
            raise _error(number, line, f"unknown line type '{_show(kind)}='")
        value = line[2:]
        if value[0] == " " and kind != "s":
            raise _error(number, line, "whitespace after '=' (RFC 8866 section 5)")
        if number <= 3:
            expected = "vos"[number - 1]
            if kind != expected:
                raise _error(number, line, f"expected an {expected}= line here (SDP starts with v=, o=, s=)")
            if number == 1:
                if value != "0":
                    raise _error(number, line, "unsupported SDP version (only v=0 exists)")
            elif number == 2:
                origin = _parse_origin(number, line, value)
            else:
                session_name = value
            continue
        if kind == "a":
            # Parsed inline: a= lines are most of a body.
            name, colon, rest = value.partition(":")
            if not name or name.strip(_TOKEN_CHARS):
                raise _error(number, line, "a= attribute name must be a token")
            typed: Line = Attribute(name, rest if colon else None)
        elif kind == "m":
            if not seen_time:
                raise _error(number, line, "no t= line before the first m= line")
            if current is not None:
                media.append(_with_lines(current, current_lines))
            current = _parse_media(number, line, value)
            current_lines = []
            rank = 0
            previous = kind
            continue
        else:
            typed = _typed(number, line, kind, value)
        if current is None:
            new_rank = _SESSION_RANK.get(kind)
            if new_rank is None:
                raise _error(number, line, f"{kind}= may appear only once, at the start")
            if kind == "t":
                if rank > _SESSION_RANK["z"]:
                    raise _error(number, line, "t= after k= or a= (RFC 8866 section 9 order)")
                seen_time = True
            elif kind == "r" and previous not in ("t", "r"):
                raise _error(number, line, "r= must follow a t= or r= line")
            elif kind == "z" and previous != "r":
                raise _error(number, line, "z= must follow an r= line (RFC 8866 section 5.11)")
            elif new_rank < rank or (new_rank == rank and kind in _SESSION_ONCE):
                raise _error(number, line, f"{kind}= out of order or repeated (RFC 8866 section 9 order)")
            elif new_rank > _SESSION_RANK["z"] and not seen_time:
                raise _error(number, line, f"no t= line before this {kind}= line")
            rank = new_rank
            session_lines.append(typed)
        else:
            new_rank = _MEDIA_RANK.get(kind)
            if new_rank is None:
                raise _error(number, line, f"{kind}= is not allowed inside a media section")
            if new_rank < rank or (new_rank == rank and kind in _MEDIA_ONCE):
                raise _error(number, line, f"{kind}= out of order or repeated in the media section")
            rank = new_rank
            current_lines.append(typed)
        previous = kind
    if origin is None or number < 3:
        raise _error(number, raw_lines[-1], "the body ends here, but SDP must start with v=, o= and s= lines")
    if current is not None:
        media.append(_with_lines(current, current_lines))
    if not seen_time:
        raise _error(number, raw_lines[-1], "the body ends without a t= line (RFC 8866 section 5.9)")
    return SessionDescription(origin, session_name, tuple(session_lines), tuple(media), 0)


def _typed(number: int, raw: str, kind: str, value: str) -> Line:
    if kind == "b":
        return _parse_bandwidth(number, raw, value)
    if kind == "c":
        return _parse_connection(number, raw, value)
    _check_field(number, raw, kind, value)
    return Field(kind, value)


def _with_lines(media: MediaDescription, lines: list[Line]) -> MediaDescription:
    return MediaDescription(
        media.media, media.port, media.proto, media.formats, tuple(lines), media.port_count
    )


def format_sdp(desc: SessionDescription) -> str:
    """Format a description as SDP text with CRLF line ends (RFC 8866 §5).

    Raises:
        LocalProtocolError: a value holds CR, LF or NUL (it would inject lines).
    """
    out = [f"v={desc.version}", str(desc.origin), f"s={desc.session_name}"]
    out.extend(map(str, desc.lines))
    for media in desc.media:
        out.append(media.media_line())
        out.extend(map(str, media.lines))
    text = "\r\n".join(out) + "\r\n"
    # One cheap check over the result instead of one per value: each line adds exactly one CR and one LF.
    if text.count("\n") != len(out) or text.count("\r") != len(out) or "\x00" in text:
        raise LocalProtocolError("an SDP value contains CR, LF or NUL")
    return text


def format_sdp_bytes(desc: SessionDescription) -> bytes:
    """Format a description as a UTF-8 SDP body (what goes into a SIP message).

    Raises:
        LocalProtocolError: a value holds CR, LF, NUL or text that cannot be UTF-8 encoded.
    """
    try:
        return format_sdp(desc).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"an SDP value cannot be encoded as UTF-8: {exc.reason}") from None
