"""The relay path's head reader and splicer as round 10 wrote them (server/splice.py at af186be: a loop over the
lines in Python), kept as the reference the faster reader of round 11 is held to (tests/server/test_head_reader.py):
the same messages read, the same fields, the same bytes spliced. Not used by the server."""

from __future__ import annotations

import re
from collections.abc import Sequence

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip._grammar import is_digits
from gamesdk.sip.headers import CSeq

#: Header names as they appear before the colon (any case, compact forms, whitespace before the colon) to what the
#: relay path reads of them: one of the keys below, "" for a valid name it does not read. Filled as names are
#: met (each is checked once: they repeat from message to message), bounded (names come from the network).
_NAMES: dict[str, str] = {}
#: The names read (lower case, long and compact forms) to their key.
_READ = {"via": "v", "v": "v", "call-id": "i", "i": "i", "cseq": "cseq", "to": "t", "t": "t", "from": "f",
         "f": "f", "max-forwards": "mf", "content-length": "l", "l": "l", "route": "route",
         "proxy-require": "pr"}
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
#: CSeq values already parsed ("2 INVITE", "3 BYE": they repeat from call to call), bounded.
_CSEQS: dict[str, CSeq] = {}
_MEMO_MAX = 1024
#: Longest text a memo keeps (a line, a name, a value): the memos' size stays bounded in bytes, not only in
#: entries, whatever the network sends (8,192 lines of 60 KB would be half a gigabyte).
_MEMO_ENTRY = 512
#: Whole header lines already read to (key, value): most lines of a relayed message were in an earlier one of its
#: call (From, To, Call-ID, CSeq, our Via, Content-Length), and a hit saves splitting and stripping. Bounded.
_LINES: dict[str, tuple[str, str]] = {}
_LINES_MAX = 8192


def _name_key(name: str) -> str | None:
    """The key of a header name as it appeared before the colon (see _NAMES), or None when it is no token."""
    bare = name.rstrip(" \t")
    if _TOKEN.fullmatch(bare) is None:
        return None
    key = _READ.get(bare.lower(), "")
    if len(_NAMES) < _MEMO_MAX and len(name) <= _MEMO_ENTRY:
        _NAMES[name] = key
    return key


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


def read_head(data: bytes) -> Head | None:
    """The head of ``data`` as the relay path reads it (see above), or None when it is not in that plain shape."""
    end = data.find(b"\r\n\r\n")
    if end <= 0:
        return None
    head = data[:end]
    if not head.isascii():
        return None
    text = head.decode("ascii")
    lines = text.split("\r\n")
    joined = "".join(lines)  # what is left of a bare LF or CR once the CRLFs are gone (cheaper than two counts)
    if "\n" in joined or "\r" in joined:
        return None  # a bare LF or CR
    start = lines[0]
    method = uri = ""
    status = 0
    if start[:8] == "SIP/2.0 ":
        code = start[8:11]
        if not ("100" <= code <= "699" and is_digits(code) and (len(start) == 11 or start[11] == " ")):
            return None
        status = int(code)
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[1] or _TOKEN.fullmatch(parts[0]) is None:
            return None
        method = parts[0]
        uri = parts[1]
    names = _NAMES
    vias: list[str] = []
    edited: list[tuple[str, bool]] = []  # the Via and Max-Forwards lines in order (True: Max-Forwards)
    call_id = cseq_text = to = from_ = length_text = mf_text = None
    routes = proxy_require = False
    known = _LINES
    for line in lines[1:]:
        hit = known.get(line)
        if hit is not None:
            key, value = hit
            if not key:
                continue
        else:
            name, colon, value = line.partition(":")
            seen = names.get(name)
            if seen is None or not colon:
                # A name not met before (or a line without a colon): it must be a token, the line no
                # continuation of a folded one.
                if not colon or line[:1] in (" ", "\t"):
                    return None
                seen = _name_key(name)
                if seen is None:
                    return None
            key = seen
            value = value.strip(" \t") if key else ""
            if len(line) <= _MEMO_ENTRY:
                if len(known) >= _LINES_MAX:
                    known.clear()
                known[line] = (key, value)
            if not key:
                continue
        if key == "v":
            vias.append(value)
            edited.append((line, False))
        elif key == "i":
            if call_id is not None:
                return None  # a single header twice: the full path says what of it
            call_id = value
        elif key == "cseq":
            if cseq_text is not None:
                return None
            cseq_text = value
        elif key == "t":
            if to is not None:
                return None
            to = value
        elif key == "f":
            if from_ is not None:
                return None
            from_ = value
        elif key == "l":
            if length_text is not None:
                return None
            length_text = value
        elif key == "mf":
            if mf_text is not None:
                return None
            mf_text = value
            edited.append((line, True))
        elif key == "route":
            routes = True
        else:
            proxy_require = True
    if (not vias or not call_id or cseq_text is None or to is None or from_ is None or length_text is None
            or " " in call_id or "\t" in call_id or not is_digits(length_text, 10)):
        return None
    stop = end + 4 + int(length_text)
    if stop > len(data):
        return None  # Content-Length larger than the message
    max_forwards: int | None = None
    if mf_text is not None:
        if not is_digits(mf_text, 10) or int(mf_text) > 255:
            return None
        max_forwards = int(mf_text)
    cseq = _CSEQS.get(cseq_text)
    if cseq is None:
        try:
            cseq = CSeq.parse(cseq_text)
        except RemoteProtocolError:
            return None
        if len(cseq_text) <= _MEMO_ENTRY:
            if len(_CSEQS) >= _MEMO_MAX:
                _CSEQS.clear()
            _CSEQS[cseq_text] = cseq
    if method and cseq.method != method:
        return None
    # Where the edited lines are (the CRLF before each, the end of the line), found in order: a line found is the
    # one read, as the text of every line before it differs or was found before.
    via_spans: list[tuple[int, int]] = []
    mf_spans: list[tuple[int, int]] = []
    pos = len(start)
    for line, is_mf in edited:
        pos = text.find(line, pos + 2) - 2
        stop_line = pos + 2 + len(line)
        if pos < 0 or text[pos:pos + 2] != "\r\n" or (stop_line != end and text[stop_line] != "\r"):
            return None
        (mf_spans if is_mf else via_spans).append((pos, stop_line))
        pos = stop_line
    return Head(data if stop == len(data) else data[:stop], method, uri, status, vias, call_id, cseq, cseq_text,
                to, from_, max_forwards, routes, proxy_require, len(start), end, via_spans, mf_spans)


def spliced(head: Head, start: bytes | None, vias: Sequence[str], lower_vias: bool,
            max_forwards: int | None) -> bytes:
    """The message of ``head`` as :func:`forward_request` and :func:`with_vias` edit it, from the places
    :func:`read_head` noted: ``start`` replacing the start line (None keeps it); ``vias`` (one line each) where
    the first Via line was, the other Via lines kept where they are when ``lower_vias``, else left out;
    Max-Forwards set to ``max_forwards`` (added at the end of the head when absent; None leaves it alone)."""
    raw = head.raw
    spans = head.via_spans
    first_at, first_end = spans[0]
    edits = [(first_at, first_end, b"".join([_via_line(v) for v in vias]))]
    if not lower_vias:
        edits.extend((a, b, b"") for a, b in spans[1:])
    tail = b""
    if max_forwards is not None:
        mf = b"\r\nMax-Forwards: %d" % max_forwards
        if head.mf_spans:
            a, b = head.mf_spans[0]
            edits.append((a, b, mf))
            edits.sort()
        else:
            tail = mf
    out = [raw[:head.first] if start is None else start]
    pos = head.first
    for a, b, text in edits:
        out.append(raw[pos:a])
        out.append(text)
        pos = b
    end = head.end
    if tail:
        out.append(raw[pos:end])
        out.append(tail)
        pos = end
    out.append(raw[pos:])
    return b"".join(out)



def _via_line(value: str) -> bytes:
    return b"\r\nVia: " + value.encode()
