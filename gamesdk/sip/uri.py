"""SIP URIs and name-addr values (RFC 3261 sections 19.1 and 20.10).

``SipUri.parse`` and ``NameAddr.parse`` take text from the network and raise only
``RemoteProtocolError`` (status hint 400) on bad input.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gamesdk.sip._grammar import (
    QUOTED_STRING,
    TOKEN,
    Params,
    find_param,
    quote,
    split_outside_quotes,
    split_simple_params,
    unquote,
)
from gamesdk.sip._grammar import bad_value as _bad

__all__ = ["NameAddr", "Params", "SipUri", "check_name_addr_untrusted", "format_params", "parse_params",
           "plain_name_addr_host_port"]


_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_OPAQUE_RE = re.compile(r"[^\s<>\"]+")
# One pass over a sip/sips URI (RFC 3261 section 25.1); escapes are checked apart by _check_escapes.
_SIP_URI_NO_HEADERS = (
    r"([Ss][Ii][Pp][Ss]?):"
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/%]+)(?::([A-Za-z0-9\-_.!~*'()&=+$,%]*))?@)?"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?)"
    r"(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\[\]/:&+$\-_.!~*'()%]+(?:=[A-Za-z0-9\[\]/:&+$\-_.!~*'()%]+)?)*)"
)
_SIP_URI_RE = re.compile(_SIP_URI_NO_HEADERS + r"(?:\?([A-Za-z0-9\[\]/?:+$\-_.!~*'()=&%]*))?")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _check_escapes(text: str) -> bool:
    return _BAD_ESCAPE_RE.search(text) is None

# generic-param value = token / host / quoted-string (RFC 3261 section 25.1)
# A bare IPv6 address is allowed too: RFC 3261's via-received is IPv6address without brackets (RFC 5118 s4.5).
_GEN_VALUE_RE = re.compile(rf"{TOKEN}|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*|{QUOTED_STRING}")
_TOKEN_FULL_RE = re.compile(TOKEN)
# The common shape ``;name=token;flag`` with no LWS or quotes, parsed without the general loop.
_SIMPLE_PARAMS_RE = re.compile(rf"(?:;{TOKEN}(?:={TOKEN})?)+")


#: A NamedTuple of the parsers' values made by tuple's own constructor: the class's generated ``__new__`` is a
#: Python function (its frame and default arguments cost about a microsecond per value in CPython). Every field
#: is given, in order: the same tuple as ``cls(...)`` makes (tests/sip/test_uri.py compares them).
_new_tuple = tuple.__new__


class SipUri(NamedTuple):
    """A URI as used in SIP. For ``sip``/``sips`` every field is parsed; other schemes keep ``opaque``."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: str | None = None
    opaque: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI; raises ``RemoteProtocolError`` (400) when it breaks the grammar."""
        m = _SIP_URI_RE.fullmatch(text)
        if m is None:
            return cls._parse_other(text)
        scheme, user, password, host, port, paramtext, headers = m.groups()
        if "%" in text and not _check_escapes(text):
            raise _bad("URI escape", text)
        number: int | None = None
        if port is not None:
            number = int(port)
            if number > 65535:
                raise _bad("URI port", text)
        # Positional arguments: a NamedTuple takes them faster than keywords.
        return _new_tuple(cls, (scheme.lower(), host, user, password, number, split_simple_params(paramtext), headers,
                                None))

    @classmethod
    def _parse_other(cls, text: str) -> SipUri:
        scheme, sep, rest = text.partition(":")
        if not sep or not _SCHEME_RE.fullmatch(scheme) or scheme.lower() in ("sip", "sips"):
            raise _bad("URI", text)
        if not rest or not _OPAQUE_RE.fullmatch(rest):
            raise _bad("URI", text)
        return cls(scheme=scheme.lower(), host="", opaque=rest)

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params:
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)

    def param(self, name: str) -> str | None:
        """The value of URI parameter ``name`` ("" for a parameter without value), or None."""
        return find_param(self.params, name)

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(key.lower() == lname for key, _ in self.params)

    def with_params(self, **values: str | None) -> SipUri:
        """A copy with the given parameters set (None = flag parameter without value)."""
        kept = [(k, v) for k, v in self.params if k.lower() not in {n.lower() for n in values}]
        kept.extend(values.items())
        return self._replace(params=tuple(kept))

    @property
    def is_sip(self) -> bool:
        return self.opaque is None

    @property
    def transport(self) -> str:
        """The ``transport`` parameter, lower case; "udp" when absent."""
        return (self.param("transport") or "udp").lower()

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def aor(self) -> str:
        """Address of record: ``sip:user@host`` lower-cased host, no port or parameters (RFC 3261 10.3 step 5)."""
        if self.opaque is not None:
            return str(self)
        user = f"{self.user}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host.lower()}"


def parse_params(text: str, what: str) -> Params:
    """Parse ``;name=value`` generic parameters (LWS allowed around ``;`` and ``=``)."""
    if _SIMPLE_PARAMS_RE.fullmatch(text) is not None:
        return split_simple_params(text)
    params: list[tuple[str, str | None]] = []
    if not text.strip():
        return ()
    stripped = text.strip()
    if not stripped.startswith(";"):
        raise _bad(what, text)
    for item in _split_semicolons(stripped[1:]):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not _TOKEN_FULL_RE.fullmatch(name):
            raise _bad(what, text)
        if eq:
            value = value.strip()
            if not _GEN_VALUE_RE.fullmatch(value):
                raise _bad(what, text)
            params.append((name, value))
        else:
            params.append((name, None))
    return tuple(params)


def _split_semicolons(text: str) -> list[str]:
    return text.split(";") if '"' not in text else split_outside_quotes(text, ";")


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


_DISPLAY_TOKENS_RE = re.compile(rf"(?:{TOKEN})(?:[ \t]+{TOKEN})*")
# The common shapes ``"Name" <uri>;tag=x`` and ``<uri>`` without escapes or LWS in parameters.
_NAMEADDR_FAST_RE = re.compile(
    rf'(?:"([^"\\\r\n]*)"[ \t]*|((?:{TOKEN})(?:[ \t]+{TOKEN})*)[ \t]+)?<([^<>\s]+)>((?:;{TOKEN}(?:={TOKEN})?)*)'
)


# Validates, without building anything, the everyday name-addr: optional display name, a sip/sips URI without
# URI headers in <>, simple header parameters. Values of other shapes go through NameAddr.parse.
_PLAIN_NAMEADDR_RE = re.compile(
    rf'(?:"([^"\\\r\n]*)"[ \t]*|((?:{TOKEN})(?:[ \t]+{TOKEN})*)[ \t]+)?<{_SIP_URI_NO_HEADERS}>'
    rf"((?:;{TOKEN}(?:={TOKEN})?)*)"
)


def check_name_addr_untrusted(text: str) -> NameAddr | None:
    """Check a From/To/Contact value for the grammar; returns the parsed value when checking needed a full
    parse, None when a cheap check sufficed (the value is then parsed on first use).

    Raises:
        RemoteProtocolError: the value breaks the grammar (400).
    """
    match = _PLAIN_NAMEADDR_RE.fullmatch(text)
    if match is not None and "%" not in text:
        port = match.group(7)
        if port is None or int(port) <= 65535:
            return None
    return NameAddr.parse(text)


def plain_name_addr_host_port(text: str) -> tuple[str, int | None] | None:
    """The URI host and port of the name-addr ``text`` when it is of the everyday shape that ``NameAddr.parse``
    reads with one expression (the same expression, so the same host and port), without building the NameAddr;
    None for any other shape (``NameAddr.parse`` then says what it is)."""
    match = _PLAIN_NAMEADDR_RE.fullmatch(text)
    if match is None or "%" in text:
        return None
    port = match.group(7)
    if port is None:
        return match.group(6), None
    number = int(port)
    return (match.group(6), number) if number <= 65535 else None


class NameAddr(NamedTuple):
    """A From/To/Contact/Route value: optional display name, URI, header parameters."""

    uri: SipUri
    display_name: str | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse ``name-addr`` or ``addr-spec`` followed by header parameters."""
        plain = _PLAIN_NAMEADDR_RE.fullmatch(text)
        if plain is not None and "%" not in text:
            quoted, tokens, scheme, user, password, host, port, uparams, hparams = plain.groups()
            number = int(port) if port is not None else None
            if number is None or number <= 65535:
                uri = _new_tuple(SipUri, (scheme.lower(), host, user, password, number,
                                          split_simple_params(uparams), None, None))
                return _new_tuple(cls, (uri, quoted if quoted is not None else tokens, split_simple_params(hparams)))
        fast = _NAMEADDR_FAST_RE.fullmatch(text)
        if fast is not None:
            quoted, tokens, inner, ptext = fast.groups()
            display = quoted if quoted is not None else tokens
            return cls(uri=SipUri.parse(inner), display_name=display, params=split_simple_params(ptext))
        s = text.strip()
        lt = s.find("<")
        if lt >= 0:
            display = s[:lt].strip()
            gt = s.find(">", lt)
            if gt < 0:
                raise _bad("name-addr", text)
            inner = s[lt + 1 : gt]
            if inner != inner.strip() or not inner:
                raise _bad("name-addr", text)
            name: str | None
            if not display:
                name = None
            elif display.startswith('"'):
                if not re.fullmatch(QUOTED_STRING, display):
                    raise _bad("display name", text)
                name = unquote(display)
            elif _DISPLAY_TOKENS_RE.fullmatch(display):
                name = display
            else:
                raise _bad("display name", text)
            uri = SipUri.parse(inner)
            params = parse_params(s[gt + 1 :], "header parameters")
            return cls(uri=uri, display_name=name, params=params)
        if s.startswith('"'):
            raise _bad("name-addr", text)
        # addr-spec without <>: parameters after ';' belong to the header and the URI may not carry
        # ';', '?' or ',' of its own (RFC 3261 section 20.10).
        uritext, semi, rest = s.partition(";")
        uritext = uritext.rstrip(" \t")
        if "?" in uritext or "," in uritext or " " in uritext or "\t" in uritext:
            raise _bad("addr-spec", text)
        uri = SipUri.parse(uritext)
        params = parse_params(semi + rest, "header parameters") if semi else ()
        return cls(uri=uri, display_name=None, params=params)

    def __str__(self) -> str:
        name = ""
        if self.display_name is not None:
            dn = self.display_name
            name = (dn if _DISPLAY_TOKENS_RE.fullmatch(dn) else quote(dn)) + " "
        return f"{name}<{self.uri}>{format_params(self.params)}"

    def param(self, name: str) -> str | None:
        """The value of header parameter ``name`` ("" for a flag), or None."""
        return find_param(self.params, name)

    @property
    def tag(self) -> str | None:
        return find_param(self.params, "tag")

    def with_param(self, name: str, value: str | None) -> NameAddr:
        kept = tuple((k, v) for k, v in self.params if k.lower() != name.lower())
        return self._replace(params=kept + ((name, value),))

    def with_tag(self, tag: str) -> NameAddr:
        return self.with_param("tag", tag)
