"""Typed SIP header values, one ``parse``/``__str__`` pair per header (RFC 3261 section 20).

Every ``parse`` takes text from the network and raises only ``RemoteProtocolError`` (400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from gamesdk.address import Address
from gamesdk.sip._grammar import (
    QUOTED_STRING,
    TOKEN,
    find_param,
    is_digits,
    quote,
    split_outside_quotes,
    split_simple_params,
    unquote,
)
from gamesdk.sip._grammar import bad_value as _bad
from gamesdk.sip.uri import Params, format_params, parse_params

__all__ = [
    "MAX_CSEQ",
    "CSeq",
    "Reason",
    "Via",
    "Warning",
    "split_header_values",
]

#: CSeq sequence numbers are 32-bit and below 2**31 (RFC 3261 section 8.1.1.5).
MAX_CSEQ = 2**31 - 1


def split_header_values(value: str) -> list[str]:
    """Split a header value on commas that are outside quotes and ``<...>`` (RFC 3261 section 7.3.1)."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(",")]
    return [part.strip() for part in split_outside_quotes(value, ",", angle_brackets=True)]


_VIA_RE = re.compile(
    rf"[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)"
    r"(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*(;.*)?$",
    re.DOTALL,
)
# The usual shape, ``SIP/2.0/UDP host:port;branch=x;rport``, without LWS or quotes.
_VIA_FAST_RE = re.compile(
    r"SIP/2\.0/(UDP|TCP|TLS|SCTP|WS|WSS) "
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)(?::([0-9]{1,5}))?"
    rf"((?:;{TOKEN}(?:=(?:{TOKEN}|\[[0-9A-Fa-f:.]+\]))?)*)"
)


#: A NamedTuple of the parsers' values made by tuple's own constructor: the class's generated ``__new__`` is a
#: Python function (its frame and default arguments cost about a microsecond per value in CPython, and every
#: message makes several). Every field is given, in order: the same tuple as ``cls(...)`` makes.
_new_tuple = tuple.__new__


class Via(NamedTuple):
    """One Via header value: ``SIP/2.0/UDP host:port;branch=...``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        fast = _VIA_FAST_RE.fullmatch(text)
        if fast is not None:
            transport, host, port, ptext = fast.groups()
            number: int | None = None
            if port is not None:
                number = int(port)
                if number > 65535:
                    raise _bad("Via port", text)
            return _new_tuple(cls, (transport, host, number, split_simple_params(ptext), "SIP/2.0"))
        m = _VIA_RE.match(text)
        if m is None:
            raise _bad("Via", text)
        name, version, transport, host, port, ptext = m.groups()
        if port is not None and int(port) > 65535:
            raise _bad("Via port", text)
        params = parse_params(ptext, "Via parameters") if ptext else ()
        return cls(
            transport=transport.upper(),
            host=host,
            port=int(port) if port is not None else None,
            params=params,
            protocol=f"{name}/{version}",
        )

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.protocol}/{self.transport} {hp}{format_params(self.params)}"

    def param(self, name: str) -> str | None:
        """The value of Via parameter ``name`` ("" for a flag), or None."""
        return find_param(self.params, name)

    @property
    def branch(self) -> str | None:
        return find_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def rport(self) -> str | None:
        return self.param("rport")

    @property
    def sent_by(self) -> Address:
        """``(host, port)`` with the transport's default port filled in (RFC 3261 section 18.2.2)."""
        default = 5061 if self.transport == "TLS" else 5060
        return (self.host.lower(), self.port if self.port is not None else default)

    def with_param(self, name: str, value: str | None) -> Via:
        kept = [(k, v) for k, v in self.params if k.lower() != name.lower()]
        kept.append((name, value))
        return self._replace(params=tuple(kept))


_CSEQ_RE = re.compile(rf"[ \t]*([0-9]+)[ \t]+({TOKEN})[ \t]*$")


class CSeq(NamedTuple):
    """``CSeq: <seq> <method>``."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = _CSEQ_RE.match(text)
        if m is None:
            raise _bad("CSeq", text)
        digits = m.group(1)
        if not is_digits(digits) or int(digits) > MAX_CSEQ:
            raise _bad("CSeq (sequence number above 2**31-1)", text)
        return _new_tuple(cls, (int(digits), m.group(2)))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_WARNING_RE = re.compile(rf'[ \t]*([0-9]{{3}})[ \t]+(\S+)[ \t]+({QUOTED_STRING})[ \t]*$')


@dataclass(frozen=True, slots=True)
class Warning:
    """``Warning: 370 eu.gamesdk.test "insufficient uplink in eu-dsl"``."""

    code: int
    agent: str
    text: str

    @classmethod
    def parse(cls, text: str) -> Warning:
        m = _WARNING_RE.match(text)
        if m is None:
            raise _bad("Warning", text)
        return cls(code=int(m.group(1)), agent=m.group(2), text=unquote(m.group(3)))

    def __str__(self) -> str:
        return f"{self.code} {self.agent} {quote(self.text)}"


_REASON_RE = re.compile(rf"[ \t]*({TOKEN})[ \t]*(;.*)?$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Reason:
    """``Reason: SIP;cause=580;text="..."`` (RFC 3326)."""

    protocol: str
    cause: int | None = None
    text: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reason:
        m = _REASON_RE.match(text)
        if m is None:
            raise _bad("Reason", text)
        params = parse_params(m.group(2) or "", "Reason parameters")
        cause: int | None = None
        rtext: str | None = None
        for key, value in params:
            lkey = key.lower()
            if lkey == "cause" and value is not None:
                if not is_digits(value):
                    raise _bad("Reason cause", text)
                cause = int(value)
            elif lkey == "text" and value is not None:
                rtext = unquote(value) if value.startswith('"') else value
        return cls(protocol=m.group(1), cause=cause, text=rtext)

    def __str__(self) -> str:
        out = self.protocol
        if self.cause is not None:
            out += f";cause={self.cause}"
        if self.text is not None:
            out += f";text={quote(self.text)}"
        return out
