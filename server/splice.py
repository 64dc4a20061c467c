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
from collections.abc import Collection, Sequence

__all__ = ["forward_request", "with_vias"]

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


def forward_request(raw: bytes, *, request_line: bytes | None, our_via: str, top_via: str | None, hide: bool,
                    max_forwards: int, drop: Collection[bytes] = (), add: Sequence[str] = ()) -> bytes | None:
    """A request as a proxy forwards it (RFC 3261 section 16.6): ``request_line`` replacing the first line (None
    keeps it), ``our_via`` where the first Via was; then, unless ``hide`` drops every other Via (topology
    hiding), the sender's top Via replaced by ``top_via`` (None keeps it) and the rest as they were;
    Max-Forwards set to ``max_forwards`` (added at the end of the head when absent); the lines of the headers
    named in ``drop`` (lower case, long and compact forms: Proxy-Authorization, Identity) left out; the header
    lines ``add`` ("Name: value") put at the end of the head, after Max-Forwards when it was added."""
    end = _head_end(raw)
    if end < 0:
        return None
    first = raw.find(b"\r\n")
    out = [request_line if request_line is not None else raw[:first]]
    pos = first
    seen_via = False
    mf_set = False
    mf = b"\r\nMax-Forwards: %d" % max_forwards
    for start, stop, name in _lines(raw, end, _EDITED, _EDITED_NAMES):
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
