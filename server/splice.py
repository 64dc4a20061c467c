"""Forwarding by splicing bytes (what Kamailio does with its "lumps"). Pure.

A relayed message is forwarded as the bytes it arrived in with a few edits: the Vias (ours inserted, the
sender's noted with ``received``/``rport``, or hidden; a response's replaced by the ones its request came with),
Max-Forwards rewritten, a new Request-URI, header lines taken out (our credentials, a player's Identity) or added
at the end of the head. Nothing else is decoded, re-encoded or re-ordered, and the body is never touched. Every
function returns None when the message is not in the plain shape it handles (bare LF line ends, folded lines,
several Vias on an edited line, no Via): the caller then serialises the parsed message as before, so splicing
changes the cost, never the meaning.

The header lines to edit are found with one regular expression over the head (a line whose name starts with one
of the letters of the names wanted), then checked by name: the lines in between are copied as slices, never
split or decoded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final, cast

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip._grammar import TOKEN, TOKEN_CHARS, is_digits
from gamesdk.sip.headers import CSeq, Via
from gamesdk.sip.message import RAW_KEY, Headers, Request, Response
from gamesdk.sip.parser import checked_value, known_via
from gamesdk.sip.uri import NameAddr, SipUri

__all__ = ["ANSWER_SPANS", "CALL_SPANS", "Head", "PlainInvite", "PlainRegister", "forward_request", "read_ack", "read_answer", "read_call",
           "read_head", "read_invite", "read_login", "read_register", "request_uri", "spliced", "with_vias",
           "with_vias_at"]

_VIA_NAMES = (b"via", b"v")

#: Lines a forwarded request or response may have edited: Via (v), Max-Forwards, Proxy-Authorization, Identity
#: (y), Route. The name is checked after the match (the letter class only narrows the candidates).
_EDITED = re.compile(rb"\r\n([VvMmPpIiYyRr][^:\r\n]*):")
_EDITED_NAMES = frozenset({b"via", b"v", b"max-forwards", b"proxy-authorization", b"identity", b"y", b"route"})


def _head_end(raw: bytes) -> int:
    """Where the head ends (its CRLF CRLF), or -1 when it is not plain CRLF without folding."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return -1
    if raw.count(b"\n", 0, end) != raw.count(b"\r\n", 0, end) or raw.find(b"\n ", 0, end) >= 0 \
            or raw.find(b"\n\t", 0, end) >= 0:
        return -1
    return end


def _lines(raw: bytes, end: int, pattern: re.Pattern[bytes], names: frozenset[bytes]) -> list[tuple[int, int, bytes]]:
    """The header lines named in ``names``: (start of the CRLF before the line, end of the line, lower-case name)."""
    found: list[tuple[int, int, bytes]] = []
    for match in pattern.finditer(raw, 0, end):
        name = match.group(1).rstrip(b" \t").lower()
        if name in names:
            found.append((match.start(), raw.find(b"\r\n", match.end()), name))
    return found


def _via_line(value: str) -> bytes:
    return b"\r\nVia: " + value.encode()


def with_vias(raw: bytes, vias: Sequence[str], extra: Sequence[tuple[str, str]] = (),
              drop: Collection[bytes] = ()) -> bytes | None:
    """A response as a proxy passes it upstream: every Via line replaced by ``vias`` (one line each, where the
    first Via line was), the lines of the headers named in ``drop`` (lower case, long and compact forms) left
    out, ``extra`` header lines added at the end of the head (RFC 3261 section 16.7 step 3)."""
    end = _head_end(raw)
    if end < 0:
        return None
    out: list[bytes] = []
    pos = 0
    placed = False
    for start, stop, name in _lines(raw, end, _EDITED, _EDITED_NAMES):
        if name in _VIA_NAMES:
            out.append(raw[pos:start])
            pos = stop
            if not placed:
                out.extend(_via_line(v) for v in vias)
                placed = True
        elif name in drop:
            out.append(raw[pos:start])
            pos = stop
    if not placed:
        return None
    out.append(raw[pos:end])
    out.extend(f"\r\n{name}: {value}".encode() for name, value in extra)
    out.append(raw[end:])
    return b"".join(out)


def with_vias_at(raw: bytes, end: int, via_spans: Sequence[tuple[int, int]], vias: Sequence[str],
                 extra: Sequence[tuple[str, str]]) -> bytes:
    """:func:`with_vias` (nothing dropped) for a head whose end and Via lines a reader noted (:func:`read_answer`:
    plain, ``end`` its CRLF CRLF, each span the CRLF before a Via line to the end of the line), without looking
    for them again."""
    first_at, first_end = via_spans[0]
    # The Via lines as one text and the added lines as one, each encoded once (a line's own encode and its bytes
    # in the join were most of this function's cost: two Vias and four added lines a 2xx).
    out = [raw[:first_at], ("\r\nVia: " + "\r\nVia: ".join(vias)).encode() if vias else b""]
    pos = first_end
    for at, stop in via_spans[1:]:
        out.append(raw[pos:at])
        pos = stop
    out.append(raw[pos:end])
    if extra:
        out.append("".join([f"\r\n{name}: {value}" for name, value in extra]).encode())
    out.append(raw[end:])
    return b"".join(out)


def forward_request(raw: bytes, *, request_line: bytes | None, our_via: str, top_via: str | None, hide: bool,
                    max_forwards: int, drop: Collection[bytes] = (), add: Sequence[str] = (),
                    at: tuple[int, int, list[tuple[int, int, bytes]]] | None = None) -> bytes | None:
    """A request as a proxy forwards it (RFC 3261 section 16.6): ``request_line`` replacing the first line (None
    keeps it), ``our_via`` where the first Via was; then, unless ``hide`` drops every other Via (topology
    hiding), the sender's top Via replaced by ``top_via`` (None keeps it) and the rest as they were;
    Max-Forwards set to ``max_forwards`` (added at the end of the head when absent); the lines of the headers
    named in ``drop`` (lower case, long and compact forms: Proxy-Authorization, Identity) left out; the header
    lines ``add`` ("Name: value") put at the end of the head, after Max-Forwards when it was added. ``at``: where
    the start line and the head end and the ``_lines`` of the head, when a reader noted them (read_call's
    ``CALL_SPANS``)."""
    if at is None:
        end = _head_end(raw)
        if end < 0:
            return None
        first = raw.find(b"\r\n")
        edited = _lines(raw, end, _EDITED, _EDITED_NAMES)
    else:
        first, end, edited = at
    out = [request_line if request_line is not None else raw[:first]]
    pos = first
    seen_via = False
    mf_set = False
    mf = b"\r\nMax-Forwards: %d" % max_forwards
    for start, stop, name in edited:
        if name in _VIA_NAMES:
            if seen_via and not hide:
                continue  # a lower Via: kept as it is
            out.append(raw[pos:start])
            pos = stop
            if seen_via:
                continue  # hidden
            seen_via = True
            out.append(_via_line(our_via))
            if hide:
                continue
            if top_via is None:
                out.append(raw[start:stop])
            elif raw.find(b",", start, stop) >= 0:
                return None  # several Vias on the line to edit: leave it to the serialiser
            else:
                out.append(_via_line(top_via))
        elif name == b"max-forwards":
            out.append(raw[pos:start])
            pos = stop
            if not mf_set:
                out.append(mf)
                mf_set = True
        elif name in drop:
            out.append(raw[pos:start])
            pos = stop
    if not seen_via:
        return None
    out.append(raw[pos:end])
    if not mf_set:
        out.append(mf)
    for line in add:
        out.append(b"\r\n" + line.encode())
    out.append(raw[end:])
    return b"".join(out)


# -- the relay path's head reader ---------------------------------------------------------------------------------
#
# What the proxy reads of a message it only relays or drops (a provisional response, the final response of a
# relayed BYE, an ACK, an in-dialog request), read from the bytes without building a Message: the start line, the
# Via values, Call-ID, CSeq, To, From, Max-Forwards, Route and Content-Length. The head must be plain (ASCII, CRLF
# line ends, no folding, every line "token: value") and From, To, Call-ID, CSeq, Max-Forwards and Content-Length
# single; anything else is None, and the message takes the full parser's way (which answers, refuses or drops it
# as before). Only what is read is checked: the proxy relays the rest of the head as it came (RFC 3261 section
# 16.6 step 1), as Kamailio does. The reader notes where the Via and Max-Forwards lines are, so that
# :func:`spliced` edits them without another pass over the head.

#: What the relay path reads of a header, as small ints (compared natively in the compiled build, where a
#: comparison of two strings is a call): 0 for a valid name it does not read.
_K_VIA: Final = 1
_K_CALL_ID: Final = 2
_K_CSEQ: Final = 3
_K_TO: Final = 4
_K_FROM: Final = 5
_K_LENGTH: Final = 6
_K_MAX_FORWARDS: Final = 7
_K_ROUTE: Final = 8
_K_PROXY_REQUIRE: Final = 9
#: Header names as they appear before the colon (any case, compact forms, whitespace before the colon) to what the
#: relay path reads of them (one of the keys above). Filled as names are met (each is checked once: they repeat
#: from message to message), bounded (names come from the network).
_NAMES: Final[dict[str, int]] = {}
#: The names read (lower case, long and compact forms) to their key.
_READ = {"via": _K_VIA, "v": _K_VIA, "call-id": _K_CALL_ID, "i": _K_CALL_ID, "cseq": _K_CSEQ, "to": _K_TO,
         "t": _K_TO, "from": _K_FROM, "f": _K_FROM, "max-forwards": _K_MAX_FORWARDS, "content-length": _K_LENGTH,
         "l": _K_LENGTH, "route": _K_ROUTE, "proxy-require": _K_PROXY_REQUIRE}
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
#: Request methods that are tokens, checked before the expression (a set lookup is cheaper than a match).
_METHODS: Final = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO", "MESSAGE",
                      "NOTIFY", "SUBSCRIBE", "REFER", "PUBLISH"))
#: CSeq values already parsed ("2 INVITE", "3 BYE": they repeat from call to call), bounded.
_CSEQS: Final[dict[str, CSeq]] = {}
_MEMO_MAX: Final = 1024
#: Longest text a memo keeps (a line, a name, a value): the memos' size stays bounded in bytes, not only in
#: entries, whatever the network sends (8,192 lines of 60 KB would be half a gigabyte).
_MEMO_ENTRY: Final = 512
#: Whole header lines already read to (key, value, number): most lines of a relayed message were in an earlier one
#: of its call (From, To, Call-ID, CSeq, our Via, Content-Length), and a hit saves splitting and stripping. The
#: number is a Content-Length's or Max-Forwards' value read (-1 when it is not 1-10 digits). Only lines without a
#: bare CR or LF are kept, so a hit needs no such check. Bounded.
_LINES: Final[dict[str, tuple[int, str, int]]] = {}
_LINES_MAX: Final = 8192


def _name_key(name: str) -> int | None:
    """The key of a header name as it appeared before the colon (see _NAMES), or None when it is no token."""
    bare = name.rstrip(" \t")
    if _TOKEN.fullmatch(bare) is None:
        return None
    key = _READ.get(bare.lower(), 0)
    if len(_NAMES) < _MEMO_MAX and len(name) <= _MEMO_ENTRY:
        _NAMES[name] = key
    return key


#: The usual top Via of a relayed request (``SIP/2.0/UDP host:port;branch=x;rport``): read by one expression into
#: the Via that ``Via.parse`` makes of it (20k -> ~13k instructions pure); any other shape goes to ``Via.parse``.
_PLAIN_VIA = re.compile(
    r"SIP/2\.0/(UDP|TCP|TLS|SCTP|WS|WSS) (\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)"
    rf"(?::([0-9]{{1,5}}))?;branch=({TOKEN})(;rport)?")


_new_tuple: Final = tuple.__new__


class Head:
    """The head fields of a relayed message as :func:`read_head` read them (values without surrounding
    whitespace, as the parser keeps them)."""

    __slots__ = ("call_id", "cseq", "cseq_text", "end", "first", "from_", "max_forwards", "method", "mf_spans",
                 "proxy_require", "raw", "routes", "status", "to", "uri", "via_lines", "via_spans")

    def __init__(self, raw: bytes, method: str, uri: str, status: int, via_lines: list[str], call_id: str,
                 cseq: CSeq, cseq_text: str, to: str, from_: str, max_forwards: int | None, routes: bool,
                 proxy_require: bool, first: int, end: int, via_spans: list[tuple[int, int]],
                 mf_spans: list[tuple[int, int]]) -> None:
        #: The message up to the end of its body (by Content-Length): what is forwarded, edited.
        self.raw = raw
        #: A request's method and Request-URI text ("" for a response), a response's status (0 for a request).
        self.method = method
        self.uri = uri
        self.status = status
        #: The Via header values, one per line, top first.
        self.via_lines = via_lines
        self.call_id = call_id
        self.cseq = cseq
        self.cseq_text = cseq_text
        self.to = to
        self.from_ = from_
        self.max_forwards = max_forwards
        #: Whether the head has Route or Proxy-Require lines (the relay path then leaves it to the full path).
        self.routes = routes
        self.proxy_require = proxy_require
        #: Where the start line ends and the head ends (its CRLF CRLF), and the Via and Max-Forwards lines:
        #: (start of the CRLF before the line, end of the line).
        self.first = first
        self.end = end
        self.via_spans = via_spans
        self.mf_spans = mf_spans

    def top_via(self) -> Via:
        """The top Via, parsed (raises RemoteProtocolError when it does not parse, or shares its line)."""
        line = self.via_lines[0]
        if "," in line:
            raise RemoteProtocolError("Several Vias on the top Via line", 400)
        # A player's Via of the everyday shape (a BYE's, an ACK's): its sent-by remembered, the branch checked
        # alone (:func:`_via_of`, ~5k instructions less than the expression below in the compiled build).
        via = _via_of(line)
        if via is not None:
            return via
        # The ACK of a challenge carries its INVITE's Via, which the parser has just parsed.
        known = known_via(line)
        if known is not None:
            return known
        plain = _PLAIN_VIA.fullmatch(line)
        if plain is not None:
            transport, host, port, branch, rport = plain.groups()
            number = None if port is None else int(port)
            if number is None or number <= 65535:
                # tuple's own constructor, every field given (Via's generated __new__ is a Python function)
                return _new_tuple(Via, (transport, host, number, (("branch", branch), ("rport", None)) if rport
                                        else (("branch", branch),), "SIP/2.0"))
        return Via.parse(line)


def _head_text(data: bytes) -> str | None:
    """The head of ``data`` (before its first CRLF CRLF) as text, or None when there is no such blank line, the head
    is empty or it is not ASCII. (The whole datagram decoded at once and cut as text: compiled, str methods are
    native calls where bytes.partition, bytes.find and bytes.isascii go through the interpreter; a body that is not
    ASCII falls back to decoding the head alone.)"""
    try:
        whole = data.decode("ascii")
    except UnicodeDecodeError:
        end = data.find(b"\r\n\r\n")
        if end <= 0:
            return None
        try:
            return data[:end].decode("ascii")
        except UnicodeDecodeError:
            return None
    end = whole.find("\r\n\r\n")
    return whole[:end] if end > 0 else None


#: Start lines already read to (method, Request-URI, status): "SIP/2.0 180 Ringing", or an in-dialog request's
#: "BYE <the callee's Contact> SIP/2.0", come back call after call. Only lines read without a bare CR or LF are
#: kept, so a hit needs no such check; the same strings come back each time (their hashes kept: the Request-URI
#: is looked up again by the proxy). Bounded.
_STARTS: Final[dict[str, tuple[str, str, int]]] = {}


def _start_of(start: str) -> tuple[str, str, int] | None:
    """The start line ``start`` of a relayed message read to (method, Request-URI, status) ("", "" and the status
    for a response, 0 for a request), remembered; None when it is not of that plain shape."""
    if "\n" in start or "\r" in start:
        return None  # a bare LF or CR (the header lines are checked as they are read)
    method = uri = ""
    status = 0
    if start[:8] == "SIP/2.0 ":
        code = start[8:11]
        if not ("100" <= code <= "699" and is_digits(code) and (len(start) == 11 or start[11] == " ")):
            return None
        status = int(code)
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[1]:
            return None
        method = parts[0]
        if method not in _METHODS and _TOKEN.fullmatch(method) is None:
            return None
        uri = parts[1]
    read = (method, uri, status)
    _remember(_STARTS, start, read)
    return read


def read_head(data: bytes) -> Head | None:
    """The head of ``data`` as the relay path reads it (see above), or None when it is not in that plain shape."""
    text = _head_text(data)
    if text is None:
        return None
    end = len(text)
    lines = text.split("\r\n")
    start = lines[0]
    read = _STARTS.get(start)
    if read is None:
        read = _start_of(start)
        if read is None:
            return None
    method, uri, status = read
    names = _NAMES
    vias: list[str] = []
    # Where the Via and Max-Forwards lines are (the CRLF before each, the end of the line), counted as the lines
    # are read: the offset of each line's CRLF in the text, which is the bytes' (ASCII).
    via_spans: list[tuple[int, int]] = []
    mf_spans: list[tuple[int, int]] = []
    pos = len(start)
    call_id = cseq_text = to = from_ = None
    length = max_forwards = -2  # -2: no such line; -1: a line whose value is not 1-10 digits
    routes = proxy_require = False
    known = _LINES
    for line in lines[1:]:
        at = pos
        pos = at + 2 + len(line)
        hit = known.get(line)
        if hit is not None:
            key, value, number = hit
            if not key:
                continue
        else:
            if "\n" in line or "\r" in line:
                return None  # a bare LF or CR
            # (find and slices: partition makes a tuple and a string more)
            colon = line.find(":")
            if colon < 0:
                return None  # a line without a colon
            name = line[:colon]
            seen = names.get(name)
            if seen is None:
                # A name not met before: it must be a token, the line no continuation of a folded one.
                if line[:1] in (" ", "\t"):
                    return None
                seen = _name_key(name)
                if seen is None:
                    return None
            key = seen
            value = line[colon + 1:].strip(" \t") if key else ""
            number = int(value) if (key == _K_LENGTH or key == _K_MAX_FORWARDS) and is_digits(value, 10) else -1
            if len(line) <= _MEMO_ENTRY:
                if len(known) >= _LINES_MAX:
                    known.clear()
                known[line] = (key, value, number)
            if not key:
                continue
        if key == _K_VIA:
            vias.append(value)
            via_spans.append((at, pos))
        elif key == _K_CALL_ID:
            if call_id is not None:
                return None  # a single header twice: the full path says what of it
            call_id = value
        elif key == _K_CSEQ:
            if cseq_text is not None:
                return None
            cseq_text = value
        elif key == _K_TO:
            if to is not None:
                return None
            to = value
        elif key == _K_FROM:
            if from_ is not None:
                return None
            from_ = value
        elif key == _K_LENGTH:
            if length != -2:
                return None
            length = number
        elif key == _K_MAX_FORWARDS:
            if max_forwards != -2:
                return None
            max_forwards = number
            mf_spans.append((at, pos))
        elif key == _K_ROUTE:
            routes = True
        else:
            proxy_require = True
    if (not vias or not call_id or cseq_text is None or to is None or from_ is None or length < 0
            or " " in call_id or "\t" in call_id):
        return None
    stop = end + 4 + length
    if stop > len(data):
        return None  # Content-Length larger than the message
    if max_forwards == -1 or max_forwards > 255:
        return None
    cseq = _CSEQS.get(cseq_text)
    if cseq is None:
        try:
            cseq = CSeq.parse(cseq_text)
        except RemoteProtocolError:
            return None
        _remember(_CSEQS, cseq_text, cseq)
    if method and cseq.method != method:
        return None
    return Head(data if stop == len(data) else data[:stop], method, uri, status, vias, call_id, cseq, cseq_text,
                to, from_, None if max_forwards == -2 else max_forwards, routes, proxy_require, len(start), end,
                via_spans, mf_spans)


def spliced(head: Head, start: bytes | None, vias: Sequence[str], lower_vias: bool,
            max_forwards: int | None) -> bytes:
    """The message of ``head`` as :func:`forward_request` and :func:`with_vias` edit it, from the places
    :func:`read_head` noted: ``start`` replacing the start line (None keeps it); ``vias`` (one line each) where
    the first Via line was, the other Via lines kept where they are when ``lower_vias``, else left out;
    Max-Forwards set to ``max_forwards`` (added at the end of the head when absent; None leaves it alone).
    (One pass over the noted places in order, each piece straight into one join: no list of edits to sort, no
    join per Via.)"""
    raw = head.raw
    out = [raw[:head.first] if start is None else start]
    pos = head.first
    mf = b""
    mf_at = mf_end = -1  # the Max-Forwards line to replace, -1 when there is none (or no longer)
    if max_forwards is not None:
        mf = b"\r\nMax-Forwards: %d" % max_forwards
        if head.mf_spans:
            mf_at, mf_end = head.mf_spans[0]
    placed = False
    for at, stop in head.via_spans:
        if placed and lower_vias:
            continue  # a lower Via: kept as it is
        if 0 <= mf_at < at:
            out.append(raw[pos:mf_at])
            out.append(mf)
            pos = mf_end
            mf_at = -1
        out.append(raw[pos:at])
        pos = stop
        if not placed:
            for value in vias:
                out.append(b"\r\nVia: ")
                out.append(value.encode())
            placed = True
    if mf_at >= 0:
        out.append(raw[pos:mf_at])
        out.append(mf)
        pos = mf_end
    elif mf and not head.mf_spans:
        end = head.end
        out.append(raw[pos:end])
        out.append(mf)
        pos = end
    out.append(raw[pos:])
    return b"".join(out)


#: Request-URIs already parsed (an in-dialog request's is a party's Contact: it repeats), bounded.
_URIS: dict[str, SipUri] = {}


def request_uri(text: str) -> SipUri:
    """The Request-URI ``text`` parsed (memoised); raises RemoteProtocolError like SipUri.parse, and for a URI
    with headers (which the full parser's plain path leaves to its general one)."""
    hit = _URIS.get(text)
    if hit is not None:
        return hit
    uri = SipUri.parse(text)
    if uri.headers is not None:
        raise RemoteProtocolError("Request-URI with headers", 400)
    _remember(_URIS, text, uri)
    return uri


def _byte_table(chars: str) -> bytes:
    """The table of :func:`_all_in` for ``chars`` (ASCII, no NUL): each of their bytes to itself, any other to 0."""
    return bytes(b if chr(b) in chars else 0 for b in range(256))


def _all_in(text: str, table: bytes) -> bool:
    """Whether every character of ``text`` is ASCII and one ``table`` keeps (:func:`_byte_table`): one encode,
    translate and look for a 0, in C. (What a character class's fullmatch tells, without the match object and
    the call through the interpreter compiled: ~1k instructions fewer for a tag or branch, ~2.5k for the
    credentials' few hundred characters than ``str.isprintable``'s look-up of each character's class.)"""
    try:
        return 0 not in text.encode("ascii").translate(table)
    except UnicodeEncodeError:
        return False


#: RFC 3261's token characters; printable ASCII (space to "~"); a Call-ID's word characters and "@".
_TOKEN_TABLE: Final = _byte_table(TOKEN_CHARS)
_PRINTABLE_TABLE: Final = _byte_table("".join(map(chr, range(32, 127))))
_CALL_ID_TABLE: Final = _byte_table("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.!%*_+~-@")


# -- the challenge path's reader ----------------------------------------------------------------------------------
#
# A REGISTER without credentials gets a 401 (a stateless challenge) that copies its Via, From, To, Call-ID and
# CSeq: the answer needs nothing else of it. Most are one shape (SIPp's, a player's first REGISTER of a login),
# read here from the bytes by narrow expressions, each a subset of what the full parser accepts, so that a request
# read here is one the full parse and check would take, with the same fields. Anything else (another header, a
# compact name, whitespace, a parameter, credentials, a body) is None and takes the full path, which answers,
# challenges or refuses as before (tests/server/test_challenge_path.py holds the two to the same datagrams).

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: An IPv4 address, or a host name whose last label starts with a letter (what both grammars take, nothing else).
_HOST = (rf"(?:{_OCTET}(?:\.{_OCTET}){{3}}"
         r"|(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?)")
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_ADDR = rf"{_HOST}(?::{_PORT})?"
_PLAYER_URI = rf"sip:[A-Za-z0-9._~-]+@{_ADDR}"
#: The Via of the shape: what ``_VIA`` reads, read by :func:`_via_of`.
_VIA = re.compile(rf"SIP/2\.0/UDP ({_HOST})(?::({_PORT}))?;branch=(z9hG4bK{TOKEN})(;rport)?")
_SENT_BY: Final = re.compile(rf"SIP/2\.0/UDP ({_HOST})(?::({_PORT}))?")
#: The sent-by expression's fullmatch, bound once (a method called on a pattern is looked up by name each time).
_SENT_BY_MATCH: Final = _SENT_BY.fullmatch
#: Sent-by parts (``SIP/2.0/UDP host:port``) of that shape already read, to (host, port): a player's come back
#: in each of its requests, its branch is new in each. Bounded.
_SENT_BYS: Final[dict[str, tuple[str, int | None]]] = {}


def _via_of(value: str) -> Via | None:
    """The Via of ``value`` when ``_VIA`` matches it (else None): the sent-by part remembered, the branch (no
    ";" in a token, none in a host or port) checked alone."""
    sent_by, sep, rest = value.partition(";branch=")
    if not sep:
        return None
    hit = _SENT_BYS.get(sent_by)
    if hit is None:
        match = _SENT_BY_MATCH(sent_by)
        if match is None:
            return None
        host, port = match.groups()
        hit = (host, None if port is None else int(port))
        _remember(_SENT_BYS, sent_by, hit)
    rport = rest.endswith(";rport")
    branch = rest[:-6] if rport else rest
    # (z9hG4bK{TOKEN}: the cookie's characters are token characters)
    if len(branch) <= 7 or not branch.startswith("z9hG4bK") or not _all_in(branch, _TOKEN_TABLE):
        return None
    return _new_tuple(Via, ("UDP", hit[0], hit[1], (("branch", branch), ("rport", None)) if rport
                            else (("branch", branch),), "SIP/2.0"))


#: The From of the REGISTER's shape (``<{_PLAYER_URI}>;tag={TOKEN}``): the part before the tag is a player's in
#: each of its logins, the tag new in each. Those parts already read, bounded.
_TAGGED_PREFIX: Final = re.compile(rf"<{_PLAYER_URI}")
_TAGGED_PREFIXES: Final[set[str]] = set()


def _is_token(text: str) -> bool:
    """Whether ``text`` is an RFC 3261 token (``TOKEN``'s fullmatch), by :func:`_all_in`."""
    return bool(text) and _all_in(text, _TOKEN_TABLE)


def _tag_after(value: str, prefix_shape: re.Pattern[str], known: set[str]) -> str | None:
    """``value`` when it is a part ``prefix_shape`` takes, ">;tag=" and a token (else None): that part remembered
    in ``known`` (:func:`_known`; no ">" in a URI or display name of these shapes: the first ">;tag=" ends the
    part), the tag, new in each dialog, checked alone."""
    prefix, sep, tag = value.partition(">;tag=")
    if not sep or not _is_token(tag) or not _known(prefix, prefix_shape, known):
        return None
    return value


def _known(part: str, shape: re.Pattern[str], known: set[str]) -> bool:
    """Whether ``shape`` takes ``part``: looked up in ``known``, else matched and then kept there (bounded)."""
    if part in known:
        return True
    if shape.fullmatch(part) is None:
        return False
    if len(part) <= _MEMO_ENTRY:
        if len(known) >= _MEMO_MAX:
            known.clear()
        known.add(part)
    return True


def _tagged_of(value: str) -> str | None:
    """``value`` when it is ``<{_PLAYER_URI}>;tag={TOKEN}`` (else None), by :func:`_tag_after`."""
    return _tag_after(value, _TAGGED_PREFIX, _TAGGED_PREFIXES)


def _register_to_of(value: str) -> str | None:
    """``value`` when it is ``<{_PLAYER_URI}>`` (else None): the From's part before its tag with a ">" (the
    REGISTER's To names the same player as its From, whose part :func:`_tagged_of` has just remembered)."""
    return value if value[-1:] == ">" and _known(value[:-1], _TAGGED_PREFIX, _TAGGED_PREFIXES) else None


#: The user part's characters in ``_PLAYER_URI``.
_USER_TABLE: Final = _byte_table("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-")
#: What follows the user's "@" in the REGISTER's Contact: the player's address, its transport and expires.
_CONTACT_TAIL: Final = re.compile(rf"{_ADDR}(?:;transport=(?:udp|tcp|tls|UDP|TCP|TLS))?>(?:;expires=[0-9]{{1,9}})?")
#: Those tails already read (a player's address in each of its logins; one for the players behind one address).
_CONTACT_TAILS: Final[set[str]] = set()


def _contact_of(value: str) -> str | None:
    """``value`` when it is the REGISTER's Contact, ``<{_PLAYER_URI}>`` with a transport and expires as
    ``_CONTACT_TAIL`` takes them (else None): the user by a byte table, what follows it (no "@" in a user part:
    the first "@" ends it) by :func:`_known`. (A login's Contact is met in the line memo only when the player
    logged in within the memo's last thousand lines: with more players than that, this ran an expression over
    the whole value in each login, some 4k instructions.)"""
    head, at, tail = value.partition("@")
    if (not at or len(head) <= 5 or not head.startswith("<sip:") or not _all_in(head[5:], _USER_TABLE)
            or not _known(tail, _CONTACT_TAIL, _CONTACT_TAILS)):
        return None
    return value


def _call_id_of(value: str) -> str | None:
    """``value`` when it is a Call-ID of word characters with at most one "@", between two of them (what
    ``[A-Za-z0-9.!%*_+~-]+(?:@[A-Za-z0-9.!%*_+~-]+)?`` takes), else None."""
    if (not value or value[0] == "@" or value[-1] == "@" or not _all_in(value, _CALL_ID_TABLE)
            or value.count("@") > 1):
        return None
    return value


#: What a header value must be: an expression's fullmatch, or a reader of it; either gives None when it does not
#: fit (a reader gives what it read).
_Check = Callable[[str], object]
_Shapes = dict[str, tuple[str, _Check]]
#: The value of each header the shape allows (names as written, long forms only), by name: (key, check).
_REGISTER_LINES: Final[_Shapes] = {
    "Via": ("via", _via_of),
    "Max-Forwards": ("max-forwards", re.compile(r"[0-9]{1,3}").fullmatch),
    "From": ("from", _tagged_of),
    "To": ("to", _register_to_of),
    "Call-ID": ("call-id", _call_id_of),
    "CSeq": ("cseq", re.compile(r"[0-9]{1,9} REGISTER").fullmatch),
    "Contact": ("contact", _contact_of),
    "Expires": ("expires", re.compile(r"[0-9]{1,9}").fullmatch),
    "Content-Length": ("content-length", re.compile("0").fullmatch),
}
_REGISTER_START: Final = re.compile(rf"REGISTER (sip:(?:[A-Za-z0-9._~-]+@)?{_ADDR}) SIP/2\.0")
#: The headers the shape needs (the full check's required ones, Content-Length for the empty body).
_REGISTER_NEEDS = ("via", "from", "to", "call-id", "cseq", "content-length")


#: Lines of that shape already read, by their text: the field (key, name, value) each gave. Most repeat from login
#: to login (Max-Forwards, To, Contact, Expires, CSeq, Content-Length); bounded (they come from the network).
_REGISTER_KNOWN: Final[dict[str, tuple[str, str, str]]] = {}
#: Start lines of that shape already read, to their Request-URI (text, parsed: a region's few), bounded.
_REGISTER_URIS: Final[dict[str, tuple[str, SipUri]]] = {}
#: Lines new in nearly every REGISTER (a new branch, tag and Call-ID per login): not kept.
_REGISTER_UNIQUE: Final = frozenset(("via", "from", "call-id"))

_Field = tuple[str, str, str]


def _remember(memo: dict[str, Any], key: str, value: object) -> None:
    """``key`` -> ``value`` kept in one of the readers' bounded memos: a key longer than :data:`_MEMO_ENTRY` is not
    kept, and a memo that holds :data:`_MEMO_MAX` starts over. Called on a miss only."""
    if len(key) <= _MEMO_ENTRY:
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[key] = value


def _has_all(by_key: dict[str, _Field], keys: tuple[str, ...]) -> bool:
    """Whether ``by_key`` has each of ``keys`` (compiled, ``dict.keys() >= frozenset`` is a generic comparison
    through the interpreter, ~2k instructions; these few lookups a tenth of it)."""
    for key in keys:
        if key not in by_key:
            return False
    return True


def _read_lines(lines: list[str], shapes: _Shapes, known: dict[str, _Field],
                unique: frozenset[str]) -> tuple[list[_Field], dict[str, _Field], Via | None] | None:
    """The header lines ``lines`` (the start line left out) read by ``shapes`` (each header once, by its name as
    written): (the fields as the parser gives them (key, name, value), the same by key, the top Via when a Via
    line was read here rather than met in ``known``), or None when a line is not of the shape or a header
    comes twice. Lines of a key not in ``unique`` are kept in ``known``, where most lines are met: only the others
    are read. (One loop: compiled, it runs natively, where the builtins' iterators (map, compress, zip) it
    replaced cost a call into the interpreter each.)"""
    # The fields held as objects (Any), not as tuple[str, str, str]: compiled, a value of that type is a C struct,
    # unpacked from the memo's tuple and packed into a new tuple for the list and again for the dict (two tuples
    # made and freed per line, ~9k instructions an INVITE); held as objects, the memo's one tuple is shared.
    fields: list[Any] = []
    by_key: dict[str, Any] = {}
    via: Via | None = None
    field: Any
    for line in lines:
        field = known.get(line)
        if field is None:
            name, sep, value = line.partition(": ")
            shape = shapes.get(name)
            if shape is None or not sep:
                return None
            key, check = shape
            read = check(value)
            if read is None or (key == "max-forwards" and int(value) > 255):
                return None
            field = (key, name, value.lstrip(" ") if key == "content-length" else value)
            if key == "via":
                via = cast(Via, read)
            elif key not in unique:
                _remember(known, line, field)
        else:
            # (as a variable-length tuple: compiled, its item is a native read, an Any's a call through the
            # interpreter; the memo's tuple is not unpacked, a cast from Any being a type check)
            key = cast("tuple[Any, ...]", field)[0]
        by_key[key] = field
        fields.append(field)
    # A header twice left fewer keys than lines (one look at the end, not one per line).
    if len(by_key) != len(fields):
        return None
    return fields, by_key, via


def _uri_in(value: str) -> str:
    """The URI between ``<`` and ``>`` of a From or To value of the shapes here (no ``<`` or ``>`` before it)."""
    return value[value.find("<") + 1:value.find(">")]


class PlainRegister:
    """What the challenge path reads of a REGISTER (:func:`read_register`)."""

    __slots__ = ("items", "ruri", "to_uri", "via")

    def __init__(self, items: list[tuple[str, str, str]], via: Via, ruri: SipUri, to_uri: SipUri) -> None:
        #: Its header fields as the parser gives them (key, name, value), in order.
        self.items = items
        self.via = via
        self.ruri = ruri
        self.to_uri = to_uri


def read_register(data: bytes) -> PlainRegister | None:
    """The REGISTER of ``data`` when it has the plain shape above and no body, else None."""
    # (Decoded first: compiled, str.endswith and ``in`` are native where the bytes methods went through the
    # interpreter, ~3k instructions a login.)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text.endswith("\r\n\r\n") or "uthorization:" in text:
        return None  # (credentials: a login's second REGISTER, read_login's)
    # An empty line before the end (a body) is an empty line here, which no shape takes.
    lines = text[:-4].split("\r\n")
    start = _register_start(lines[0])
    if start is None:
        return None
    del lines[0]
    read = _read_lines(lines, _REGISTER_LINES, _REGISTER_KNOWN, _REGISTER_UNIQUE)
    if read is None:
        return None
    fields, by_key, via = read
    if via is None or not _has_all(by_key, _REGISTER_NEEDS):
        return None
    return PlainRegister(fields, via, start[1], request_uri(_uri_in(by_key["to"][2])))


def _register_start(first: str) -> tuple[str, SipUri] | None:
    """The Request-URI (text, parsed) of a REGISTER's start line of the shape, else None."""
    hit = _REGISTER_URIS.get(first)
    if hit is None:
        start = _REGISTER_START.fullmatch(first)
        if start is None:
            return None
        text = start.group(1)
        hit = (text, request_uri(text))
        _remember(_REGISTER_URIS, first, hit)
    return hit


# -- the INVITE's challenge ---------------------------------------------------------------------------------------
#
# A player's INVITE without credentials gets a stateless 407 that copies its Via, From, To, Call-ID and CSeq; the
# proxy reads nothing else of it before authentication but that it is a sip: URI, its Max-Forwards is not 0, it
# has one Via, no Proxy-Require, no Route and no To tag, and whom the From names (the 407 skips the per-source
# limit of strangers for a player registered from the source). SIPp's and the SDK's INVITE have one shape: the
# REGISTER's lines (From and To with a quoted display name or none), a Contact, a few header fields the proxy
# never reads before forwarding (Allow, Supported, Accept, User-Agent, Subject, Content-Type: printable text, each
# once) and a body framed by Content-Length. Read from the bytes the same way; anything else is None and takes the
# full path.

_DISPLAY = r'(?:"[A-Za-z0-9._~-]+" )?'
#: Printable ASCII without whitespace at either end: a value the parser keeps as it is and never reads here.
#: (:func:`_printable` tells it; the tests hold the two to each other.)
_TEXT: Final = re.compile(r"[!-~](?:[ -~]*[!-~])?")


def _printable(value: str) -> str | None:
    """``value`` when ``_TEXT`` matches it (else None): printable ASCII, no space at either end."""
    if not value or value[0] == " " or value[-1] == " " or not _all_in(value, _PRINTABLE_TABLE):
        return None
    return value


#: The INVITE's From: what ``_FROM`` takes, read by :func:`_from_of`.
_FROM = re.compile(rf"{_DISPLAY}<{_PLAYER_URI}>;tag={TOKEN}")
_FROM_PREFIX: Final = re.compile(rf"{_DISPLAY}<{_PLAYER_URI}")
#: The parts before ">;tag=" of such Froms already read (a player's, in each of its calls; the tag is new).
_FROM_PREFIXES: Final[set[str]] = set()


def _from_of(value: str) -> str | None:
    """``value`` when ``_FROM`` matches it (else None), by :func:`_tag_after`."""
    return _tag_after(value, _FROM_PREFIX, _FROM_PREFIXES)


_INVITE_LINES: Final[_Shapes] = {
    "Via": _REGISTER_LINES["Via"],
    "Max-Forwards": ("max-forwards", re.compile(r"[1-9][0-9]{0,2}").fullmatch),  # 0 is the proxy's 483
    "From": ("from", _from_of),
    "To": ("to", re.compile(rf"{_DISPLAY}<{_PLAYER_URI}>").fullmatch),
    "Call-ID": _REGISTER_LINES["Call-ID"],
    "CSeq": ("cseq", re.compile(r"[0-9]{1,9} INVITE").fullmatch),
    "Contact": ("contact", re.compile(rf"<{_PLAYER_URI}(?:;transport=(?:udp|tcp|tls|UDP|TCP|TLS))?>").fullmatch),
    # SIPp writes its [len] padded with spaces ("Content-Length:   387"), which the parser's value drops.
    "Content-Length": ("content-length", re.compile(r" {0,9}[0-9]{1,5}").fullmatch),
    "Allow": ("allow", _printable),
    "Supported": ("supported", _printable),
    "Accept": ("accept", _printable),
    "User-Agent": ("user-agent", _printable),
    "Subject": ("subject", _printable),
    "Content-Type": ("content-type", _printable),
}
_INVITE_START: Final = re.compile(rf"INVITE (sip:[A-Za-z0-9._~-]+@{_ADDR}) SIP/2\.0")
_INVITE_NEEDS = _REGISTER_NEEDS
_INVITE_KNOWN: Final[dict[str, _Field]] = {}
#: Start lines of that shape already read, to their Request-URI's text, bounded.
_INVITE_URIS: Final[dict[str, str]] = {}
#: New in every INVITE: its Via (a new branch). Its From and Call-ID lines are new in each call, but the call's
#: second INVITE (with credentials, read_call's) repeats them: kept, it reads neither again.
_INVITE_UNIQUE: Final = frozenset(("via",))


class PlainInvite:
    """What the challenge path reads of an INVITE (:func:`read_invite`)."""

    __slots__ = ("from_uri", "items", "uri", "via")

    def __init__(self, items: list[tuple[str, str, str]], via: Via, uri: str, from_uri: SipUri) -> None:
        #: Its header fields as the parser gives them (key, name, value), in order.
        self.items = items
        self.via = via
        #: The Request-URI's text, and the URI the From names.
        self.uri = uri
        self.from_uri = from_uri


def _invite_head(data: bytes, shapes: _Shapes, unique: frozenset[str]
                 ) -> tuple[list[_Field], dict[str, _Field], Via, str, str, list[str]] | None:
    """The INVITE of ``data`` read by ``shapes`` (the lines of ``unique`` keys not kept): its fields, the same by
    key, its top Via, the Request-URI's text, the head's text (the body whole after it and CRLF CRLF) and its
    header lines (one per field, in order), or None."""
    text = _head_text(data)
    if text is None:
        return None
    end = len(text)
    lines = text.split("\r\n")
    first = lines[0]
    uri = _INVITE_URIS.get(first)
    if uri is None:
        start = _INVITE_START.fullmatch(first)
        if start is None:
            return None
        uri = start.group(1)
        _remember(_INVITE_URIS, first, uri)
    del lines[0]
    read = _read_lines(lines, shapes, _INVITE_KNOWN, unique)
    if read is None:
        return None
    fields, by_key, via = read
    if (via is None or not _has_all(by_key, _INVITE_NEEDS)
            or end + 4 + int(by_key["content-length"][2]) > len(data)):
        return None
    return fields, by_key, via, uri, text, lines


def read_invite(data: bytes) -> PlainInvite | None:
    """The INVITE of ``data`` when it has the plain shape above (its body whole), else None."""
    # (Credentials are no line of the shape: the call's second INVITE is read_call's.)
    read = _invite_head(data, _INVITE_LINES, _INVITE_UNIQUE)
    if read is None:
        return None
    fields, by_key, via, uri, _, _ = read
    # The ACK of its 407 repeats its Via, From and Call-ID lines (read_ack): valid there as they are here.
    # (objects, as in _read_lines: the same tuples kept, none made again)
    via_field: Any = by_key["via"]
    from_field: Any = by_key["from"]
    call_id_field: Any = by_key["call-id"]
    ack_known = _ACK_KNOWN
    if len(ack_known) >= _MEMO_MAX - 3:
        ack_known.clear()
    ack_known[f"Via: {via_field[2]}"] = via_field
    ack_known[f"From: {from_field[2]}"] = from_field
    ack_known[f"Call-ID: {call_id_field[2]}"] = call_id_field
    if len(_ACK_VIAS) >= _MEMO_MAX:
        _ACK_VIAS.clear()
    _ACK_VIAS[via_field[2]] = via
    return PlainInvite(fields, via, uri, request_uri(_uri_in(from_field[2])))


# -- the call's INVITE --------------------------------------------------------------------------------------------
#
# The INVITE with credentials (a call's second) is the proxy's: it authenticates, routes and forwards it (by
# splicing its bytes) and hands its offer to the policy. The challenge path's shape with one Proxy-Authorization
# line more (printable text; the parser never reads that value) is read here into the Request the full parse and
# check make of it, with the typed values they leave in its cache (From and CSeq through the parser's memo, as the
# parse leaves them): no other header parsed. Anything else (a Route, Record-Route, a
# second Via or credentials, a compact name, ...) is None and takes the full path
# (tests/server/test_call_path.py holds the two to the same datagrams, counts and transactions).

_CALL_LINES: Final[_Shapes] = {**_INVITE_LINES, "Proxy-Authorization": ("proxy-authorization", _printable)}
#: Not kept: fresh in every call, a new nonce and response and the INVITE's new branch (its From and Call-ID lines
#: the call's first INVITE left in the memo).
_CALL_UNIQUE: Final = frozenset(("via", "from", "call-id", "proxy-authorization"))
#: To values of that shape already parsed (the callees of a region's calls), bounded.
_CALL_TOS: Final[dict[str, NameAddr]] = {}


def _to_of(memo: dict[str, NameAddr], text: str) -> NameAddr:
    """The To of ``text`` (raises as ``NameAddr.parse``), kept in ``memo``: a player's requests repeat it."""
    to = memo.get(text)
    if to is None:
        to = NameAddr.parse(text)
        _remember(memo, text, to)
    return to


def read_call(data: bytes) -> Request | None:
    """The INVITE of ``data`` with its credentials when it has the plain shape above (one Proxy-Authorization
    line, its body whole), as ``parse_message_untrusted(data, lazy=True)`` and ``validate_untrusted`` make it;
    else None."""
    read = _invite_head(data, _CALL_LINES, _CALL_UNIQUE)
    if read is None:
        return None
    fields, by_key, via, uri, text, lines = read
    if "proxy-authorization" not in by_key:
        return None
    end = len(text)
    to = _to_of(_CALL_TOS, by_key["to"][2])
    stop = end + 4 + int(by_key["content-length"][2])
    headers = Headers._from_keyed(fields)
    request = Request("INVITE", uri, headers, data[end + 4:stop], "SIP/2.0")
    request._uri_cache = (uri, request_uri(uri))
    cache = headers._cache
    cache["via"] = [via]
    # From and CSeq through the parser's memo, as the full parse takes them: the call's 2xx repeats both.
    cache["from"] = checked_value("from", by_key["from"][2])
    cache["to"] = to
    cache["call-id"] = by_key["call-id"][2]
    cache["cseq"] = checked_value("cseq", by_key["cseq"][2])
    field = by_key.get("max-forwards")
    if field is not None:
        cache["max-forwards"] = int(field[2])
    cache[RAW_KEY] = data if stop == len(data) else data[:stop]  # as the lazy parse keeps it
    cache[CALL_SPANS] = _call_spans(text, lines, fields)
    return request


#: Key in ``Headers._cache`` under which a Request read_call read keeps where its start line and head end and
#: where the lines a forwarded request edits are (``forward_request``'s ``at``), so that forwarding it does not
#: look for them again (~49k instructions compiled: bytes methods with a range and the regex's matches are calls
#: through the interpreter); cleared with the bytes by any change of its headers.
CALL_SPANS: Final = "\x00call-spans"
#: The lines of read_call's shape that forward_request edits (its ``_EDITED_NAMES``; no other name of the shape
#: starts with a letter of ``_EDITED``): the name ``_lines`` gives each, by the key of its field.
_CALL_EDITED: Final[dict[str, bytes]] = {"via": b"via", "max-forwards": b"max-forwards",
                                         "proxy-authorization": b"proxy-authorization"}


def _call_spans(text: str, lines: list[str], fields: list[_Field]) -> tuple[int, int, list[tuple[int, int, bytes]]]:
    """(the start line's end, the head's end, ``_lines`` of the head) for the head ``text`` of read_call's shape
    (ASCII: a character is a byte; CRLF only between lines) whose header lines are ``lines`` (after the start
    line) with their ``fields``: each line's place summed from the lengths before it (searching the head for
    each edited line's start cost ~7k instructions compiled)."""
    first = text.find("\r\n")
    edited: list[tuple[int, int, bytes]] = []
    at = first
    for i, line in enumerate(lines):
        stop = at + 2 + len(line)
        name = _CALL_EDITED.get(fields[i][0])
        if name is not None:
            edited.append((at, stop, name))
        at = stop
    return first, len(text), edited


# -- the ACK of a challenge ---------------------------------------------------------------------------------------
#
# The ACK of every stateless 407 reaches the proxy, which drops it: no transaction of ours has its branch, and its
# call was not set up here. The relay path (read_head, ProxyCore.relay_ack) reads its whole head to find that out.
# The ACK of a 407 the challenge path sent repeats the INVITE's Via, From and Call-ID lines, which read_invite
# notes here: an ACK whose Via is one of those, with the 407's To, CSeq n ACK, Content-Length: 0 and Max-Forwards
# (names as written, printable values, each once: a subset of what read_head takes) is read without reading its
# Via or From again. Anything else (the ACK of a 2xx, with a Via of its own, first of all) is None and goes the
# relay path's way.

_ACK_LINES: Final[_Shapes] = {
    "Max-Forwards": _REGISTER_LINES["Max-Forwards"],
    "From": ("from", _printable),
    "To": ("to", _printable),
    "Call-ID": _REGISTER_LINES["Call-ID"],
    "CSeq": ("cseq", re.compile(r"[0-9]{1,9} ACK").fullmatch),
    "Content-Length": _REGISTER_LINES["Content-Length"],
}
_ACK_START: Final = re.compile(r"ACK [!-~]+ SIP/2\.0")
_ACK_NEEDS = _REGISTER_NEEDS
#: Lines of that shape met before, and the Via, From and Call-ID lines of the INVITEs read_invite read, by their
#: text; the Vias of those by their value. Each bounded.
_ACK_KNOWN: Final[dict[str, _Field]] = {}
_ACK_VIAS: Final[dict[str, Via]] = {}
#: Start lines of that shape already met (the Request-URIs of a region's players), bounded.
_ACK_STARTS: Final[set[str]] = set()
_ACK_UNIQUE: Final = frozenset(("from", "to", "call-id"))


def read_ack(data: bytes) -> tuple[Via, str, int | None] | None:
    """The top Via, Call-ID and Max-Forwards (None when absent) of the ACK of ``data`` when it has the plain
    shape above, else None."""
    # (bytes methods are calls through the interpreter compiled; the str methods used below are not)
    text = _head_text(data)
    if text is None:
        return None
    # The first Via line must be one read_invite noted (the ACK of a 2xx, with a Via of its own, stops here).
    via_value = text.partition("\r\nVia: ")[2].partition("\r\n")[0]
    via = _ACK_VIAS.get(via_value)
    if via is None:
        return None
    lines = text.split("\r\n")
    if not _known(lines[0], _ACK_START, _ACK_STARTS):
        return None
    del lines[0]
    read = _read_lines(lines, _ACK_LINES, _ACK_KNOWN, _ACK_UNIQUE)
    if read is None:
        return None
    by_key = read[1]
    if not _has_all(by_key, _ACK_NEEDS) or by_key["via"][2] != via_value:
        return None
    max_forwards = by_key.get("max-forwards")
    return via, by_key["call-id"][2], None if max_forwards is None else int(max_forwards[2])


# -- the login's REGISTER -----------------------------------------------------------------------------------------
#
# A REGISTER with credentials (a login's second) is the registrar's: it reads the Request-URI, To, Call-ID, CSeq,
# Expires, Contact and Authorization of it (Require, Path and Supported when there), and its answer copies Via,
# From, To, Call-ID and CSeq. The challenge path's shape with one Authorization line more (printable text; the
# parser never reads that value) is read here into the Request the full parse and check make of it, with the
# typed values they leave in its cache but the From (the registrar never reads it; its accessor parses it if
# anything does): no other header parsed, no line split twice. Anything else is None and takes the full path
# (tests/server/test_login_path.py holds the two to the same datagrams and bindings).

_LOGIN_LINES: Final[_Shapes] = {**_REGISTER_LINES, "Authorization": ("authorization", _printable)}
_LOGIN_NEEDS = (*_REGISTER_NEEDS, "authorization")
#: Fresh in every login: a new nonce and response (besides the REGISTER's new branch, tag and Call-ID).
_LOGIN_UNIQUE: Final = _REGISTER_UNIQUE | {"authorization"}
#: To values of that shape already parsed (a player's, in each of its logins), bounded.
_LOGIN_TOS: Final[dict[str, NameAddr]] = {}


def _cseq_of(text: str) -> CSeq:
    cseq = _CSEQS.get(text)
    if cseq is None:
        cseq = CSeq.parse(text)
        if len(_CSEQS) >= _MEMO_MAX:
            _CSEQS.clear()
        _CSEQS[text] = cseq
    return cseq


def read_login(data: bytes) -> Request | None:
    """The REGISTER of ``data`` with its credentials when it has the plain shape above (one Authorization line)
    and no body, as ``parse_message_untrusted(data, lazy=True)`` and ``validate_untrusted`` make it; else None."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text.endswith("\r\n\r\n"):
        return None
    # An empty line before the end (a body) is an empty line here, which no shape takes.
    lines = text[:-4].split("\r\n")
    start = _register_start(lines[0])
    if start is None:
        return None
    del lines[0]
    read = _read_lines(lines, _LOGIN_LINES, _REGISTER_KNOWN, _LOGIN_UNIQUE)
    if read is None:
        return None
    fields, by_key, via = read
    if via is None or not _has_all(by_key, _LOGIN_NEEDS):
        return None
    to = _to_of(_LOGIN_TOS, by_key["to"][2])
    headers = Headers._from_keyed(fields)
    request = Request("REGISTER", start[0], headers, b"", "SIP/2.0")
    request._uri_cache = start
    cache = headers._cache
    cache["via"] = [via]
    cache["to"] = to
    cache["call-id"] = by_key["call-id"][2]
    cache["cseq"] = _cseq_of(by_key["cseq"][2])
    field = by_key.get("max-forwards")
    if field is not None:
        cache["max-forwards"] = int(field[2])
    field = by_key.get("expires")
    if field is not None:
        cache["expires"] = int(field[2])
    cache[RAW_KEY] = data  # as the lazy parse keeps it: Content-Length 0 frames the whole datagram
    return request


# -- the 2xx of an INVITE -----------------------------------------------------------------------------------------
#
# The callee's 2xx with the SDP answer is the one response the proxy reads beyond its head: the policy reads its
# answer, the proxy opens the dialog from its Contact and To tag, and the hooks may read any header. It is read here
# from the bytes into the Response the full parse and check make of it (``parse_message_untrusted(data,
# lazy=True)`` then ``validate_untrusted``), with the typed values they leave in its cache but the From (left to
# its accessor, which parses it as the parser does). The shape is a player's answer as SIPp and the SDK write it:
# its Vias (ours on top, the ones its INVITE came with below, marked with rport and received), From and To of the
# INVITE's shape (the To with the callee's tag), Call-ID, "n INVITE", a Contact of the INVITE's shape, a few
# header fields nobody parses (printable text, each once) and a body framed by Content-Length. Names as written,
# each header once but Via; anything else is None and takes the full path (tests/server/test_answer_path.py
# holds the two to the same datagrams, counts and state).

#: Key in ``Headers._cache`` under which a Response read_answer read keeps where its head ends and its Via lines
#: are (for :func:`with_vias_at`); cleared with the bytes by any change of its headers.
ANSWER_SPANS: Final = "\x00spans"
_ANSWER_START: Final = re.compile(r"SIP/2\.0 (2[0-9][0-9])(?: ([ -~]*))?")
#: Status lines of that shape already read, to (status, reason), bounded.
_ANSWER_STARTS: Final[dict[str, tuple[int, str]]] = {}
#: What follows a Via's branch in the shape: rport, with the port the proxy put there, and received (an IPv4
#: address), as ``marked_via`` writes them.
_VIA_TAIL: Final = re.compile(rf"rport(?:=({_PORT}))?(?:;received=({_OCTET}(?:\.{_OCTET}){{3}}))?")
#: Those tails already read, to the parameters they add after the branch, bounded.
_VIA_TAILS: Final[dict[str, tuple[tuple[str, str | None], ...]]] = {}


def _answer_via(value: str) -> Via | None:
    """The Via of ``value`` when it is ``_VIA``'s shape, or that shape with the tail ``_VIA_TAIL`` reads after the
    branch (else None): read by :func:`_via_of`, the tail remembered."""
    at = value.find(";", value.find(";branch=") + 8)
    if at < 0 or value.endswith(";rport", at):
        return _via_of(value)
    tail = value[at + 1:]
    params = _VIA_TAILS.get(tail)
    if params is None:
        match = _VIA_TAIL.fullmatch(tail)
        if match is None:
            return None
        port, received = match.groups()
        params = (("rport", port),) if received is None else (("rport", port), ("received", received))
        _remember(_VIA_TAILS, tail, params)
    via = _via_of(value[:at])
    if via is None:
        return None
    return _new_tuple(Via, (via[0], via[1], via[2], (via[3][0], *params), "SIP/2.0"))


#: The parts before ">;tag=" of the To values already read (a callee's, in each of its calls; the tag is new), to
#: the URI and display name ``NameAddr.parse`` makes of them, bounded.
_TO_PREFIXES: Final[dict[str, tuple[SipUri, str | None]]] = {}


def _answer_to(value: str) -> NameAddr | None:
    """The NameAddr of a To value of the INVITE's From shape (``_FROM``: a tag, no other parameter), else None:
    the part before the tag parsed once and remembered, the tag checked alone."""
    prefix, sep, tag = value.partition(">;tag=")
    if not sep or not _is_token(tag):
        return None
    hit = _TO_PREFIXES.get(prefix)
    if hit is None:
        if _FROM_PREFIX.fullmatch(prefix) is None:
            return None
        named = NameAddr.parse(prefix + ">")
        hit = (named.uri, named.display_name)
        _remember(_TO_PREFIXES, prefix, hit)
    return _new_tuple(NameAddr, (hit[0], hit[1], (("tag", tag),)))


#: The lines of the shape but "Via: ", "From: " and "To: " (read by their readers, told by their start): the
#: shape needs a Via, From, To, Call-ID, CSeq and Content-Length.
_ANSWER_LINES: Final[_Shapes] = {
    "Call-ID": _REGISTER_LINES["Call-ID"],
    "CSeq": _INVITE_LINES["CSeq"],
    "Contact": _INVITE_LINES["Contact"],
    "Content-Length": _INVITE_LINES["Content-Length"],
    "Content-Type": ("content-type", _printable),
    "Allow": ("allow", _printable),
    "Supported": ("supported", _printable),
    "Accept": ("accept", _printable),
    "User-Agent": ("user-agent", _printable),
    "Server": ("server", _printable),
}
#: Lines of that shape met before (CSeq, Contact, Content-Type, Content-Length, ... come back from call to call),
#: by their text: the field each gave; not the Call-ID, new in every call. Bounded.
_ANSWER_KNOWN: Final[dict[str, _Field]] = {}


def read_answer(data: bytes) -> Response | None:
    """The 2xx of ``data`` when it has the plain shape above, as ``parse_message_untrusted(data, lazy=True)`` and
    ``validate_untrusted`` make it (but the From left to its accessor); else None."""
    text = _head_text(data)
    if text is None:
        return None
    end = len(text)
    lines = text.split("\r\n")
    first = lines[0]
    start = _ANSWER_STARTS.get(first)
    if start is None:
        match = _ANSWER_START.fullmatch(first)
        if match is None:
            return None
        start = (int(match.group(1)), match.group(2) or "")
        _remember(_ANSWER_STARTS, first, start)
    del lines[0]
    known = _ANSWER_KNOWN
    shapes = _ANSWER_LINES
    fields: list[_Field] = []
    by_key: dict[str, str] = {}
    vias: list[Via] = []
    # Where the Via lines are (the CRLF before each, the end of the line), counted as the lines are read.
    via_spans: list[tuple[int, int]] = []
    pos = len(first)
    to: NameAddr | None = None
    for line in lines:
        at = pos
        pos = at + 2 + len(line)
        field = known.get(line)
        if field is None:
            # A line new in every answer (Via, To, From: told by their start and read by their readers directly;
            # compiled, a native call where the table's are generic calls), or one of the table's.
            if line.startswith("Via: "):
                value = line[5:]
                via = _answer_via(value)
                if via is None:
                    return None
                vias.append(via)
                fields.append(("via", "Via", value))
                via_spans.append((at, pos))
                continue
            if line.startswith("To: "):
                value = line[4:]
                to = _answer_to(value)
                if to is None:
                    return None
                field = ("to", "To", value)
            elif line.startswith("From: "):
                value = line[6:]
                if _from_of(value) is None:
                    return None
                field = ("from", "From", value)
            else:
                name, sep, value = line.partition(": ")
                shape = shapes.get(name)
                if shape is None or not sep:
                    return None
                key, check = shape
                if check(value) is None:
                    return None
                field = (key, name, value.lstrip(" ") if key == "content-length" else value)
                if key != "call-id":
                    _remember(known, line, field)
        fields.append(field)
        by_key[field[0]] = field[2]
    # A header twice (but Via) leaves fewer keys than its lines: the full path says what of it.
    if (to is None or not vias or len(by_key) != len(fields) - len(vias) or "from" not in by_key
            or "call-id" not in by_key or "cseq" not in by_key or "content-length" not in by_key):
        return None
    body_at = end + 4
    stop = body_at + int(by_key["content-length"])
    if stop > len(data):
        return None
    headers = Headers._from_keyed(fields)
    response = Response(start[0], start[1], headers, data[body_at:stop], "SIP/2.0")
    cache = headers._cache
    cache["via"] = vias
    cache["to"] = to
    cache["call-id"] = by_key["call-id"]
    cache["cseq"] = _cseq_of(by_key["cseq"])
    cache[RAW_KEY] = data if stop == len(data) else data[:stop]
    cache[ANSWER_SPANS] = (end, via_spans)
    return response
