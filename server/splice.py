"""Forwarding by splicing bytes (what Kamailio does with its "lumps"). Pure.

A relayed message is forwarded as the bytes it arrived in with a few edits: the Vias (ours inserted, the
sender's noted with ``received``/``rport``, or hidden; a response's replaced by the ones its request came with),
Max-Forwards rewritten, a new Request-URI, extra header lines at the end of the head. Nothing else is decoded,
re-encoded or re-ordered, and the body is never touched. Every function returns None when the message is not in
the plain shape it handles (bare LF line ends, folded lines, several Vias on an edited line, no Via): the caller
then serialises the parsed message as before, so splicing changes the cost, never the meaning.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["forward_request", "with_vias"]

_VIA_NAMES = (b"via", b"v")


def _head(raw: bytes) -> tuple[list[bytes], int] | None:
    """The head's lines and where the head ends (its CRLF CRLF), or None when it is not plain CRLF without
    folding."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    if raw.count(b"\n", 0, end) != raw.count(b"\r\n", 0, end) or raw.find(b"\n ", 0, end) >= 0 \
            or raw.find(b"\n\t", 0, end) >= 0:
        return None
    return raw[:end].split(b"\r\n"), end


def _name(line: bytes) -> bytes:
    colon = line.find(b":")
    return line[:colon].rstrip(b" \t").lower() if colon > 0 else b""


def _via_line(value: str) -> bytes:
    return b"Via: " + value.encode()


def with_vias(raw: bytes, vias: Sequence[str], extra: Sequence[tuple[str, str]] = ()) -> bytes | None:
    """A response as a proxy passes it upstream: every Via line replaced by ``vias`` (one line each, where the
    first Via line was), ``extra`` header lines added at the end of the head (RFC 3261 section 16.7 step 3)."""
    head = _head(raw)
    if head is None:
        return None
    lines, end = head
    out = [lines[0]]
    placed = False
    for line in lines[1:]:
        if _name(line) in _VIA_NAMES:
            if not placed:
                out.extend(_via_line(v) for v in vias)
                placed = True
            continue
        out.append(line)
    if not placed:
        return None
    out.extend(f"{name}: {value}".encode() for name, value in extra)
    return b"\r\n".join(out) + raw[end:]


def forward_request(raw: bytes, *, request_line: bytes | None, our_via: str, top_via: str | None, hide: bool,
                    max_forwards: int) -> bytes | None:
    """A request as a proxy forwards it (RFC 3261 section 16.6): ``request_line`` replacing the first line (None
    keeps it), ``our_via`` where the first Via was; then, unless ``hide`` drops every other Via (topology
    hiding), the sender's top Via replaced by ``top_via`` (None keeps it) and the rest as they were;
    Max-Forwards set to ``max_forwards`` (added at the end of the head when absent)."""
    head = _head(raw)
    if head is None:
        return None
    lines, end = head
    out = [request_line if request_line is not None else lines[0]]
    seen_via = False
    mf_set = False
    mf = f"Max-Forwards: {max_forwards}".encode()
    for line in lines[1:]:
        name = _name(line)
        if name in _VIA_NAMES:
            if hide:
                if not seen_via:
                    out.append(_via_line(our_via))
                    seen_via = True
                continue
            if not seen_via:
                seen_via = True
                out.append(_via_line(our_via))
                if top_via is not None:
                    if b"," in line:
                        return None  # several Vias on the line to edit: leave it to the serialiser
                    out.append(_via_line(top_via))
                    continue
            out.append(line)
        elif name == b"max-forwards":
            if not mf_set:
                out.append(mf)
                mf_set = True
        else:
            out.append(line)
    if not seen_via:
        return None
    if not mf_set:
        out.append(mf)
    return b"\r\n".join(out) + raw[end:]
