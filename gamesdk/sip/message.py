"""SIP messages: ordered headers, requests, responses and their serializer (RFC 3261 section 7).

Header names are case-insensitive and compact forms equal their long forms (``v`` is ``Via``). Names are kept as
they were given so that a parsed message serializes back to the same bytes. Typed accessors parse on first use,
cache the result until the headers change, and raise ``RemoteProtocolError`` (400) on bad values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip._grammar import is_digits
from gamesdk.sip.headers import CSeq, Reason, Via, Warning, split_header_values
from gamesdk.sip.uri import NameAddr, SipUri

__all__ = [
    "COMPACT_FORMS",
    "RAW_KEY",
    "REASON_PHRASES",
    "Headers",
    "Message",
    "Request",
    "Response",
    "header_key",
    "response_for",
]

#: Compact header forms (RFC 3261 section 7.3.3 and the IANA SIP header registry).
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_KEY_CACHE: Final[dict[str, str]] = {}
_KEY_CACHE_MAX: Final = 512  # names come from the network: keep the cache bounded


def header_key(name: str) -> str:
    """Canonical lookup key of a header name: lower case, compact form expanded."""
    key = _KEY_CACHE.get(name)
    if key is None:
        lower = name.lower()
        key = COMPACT_FORMS.get(lower, lower)
        if len(_KEY_CACHE) < _KEY_CACHE_MAX:
            _KEY_CACHE[name] = key
    return key


#: Key in :attr:`Headers._cache` under which a lazily parsed message keeps its bytes. Every change of the headers
#: clears the cache, so the bytes are there only while they still say what the headers say.
RAW_KEY = "\x00raw"


class Headers:
    """Ordered SIP header fields; several fields may share a name."""

    __slots__ = ("_cache", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = [(header_key(n), n, v) for n, v in items] if items else []
        self._cache: dict[str, Any] = {}

    @classmethod
    def _from_keyed(cls, items: list[tuple[str, str, str]]) -> Headers:
        h = cls()  # not cls.__new__(cls): mypyc compiles this module and has no __new__ to call
        h._items = items
        return h

    def get(self, name: str) -> str | None:
        """Value of the first field called ``name``, or None."""
        key = _KEY_CACHE.get(name) or header_key(name)
        for item in self._items:
            if item[0] == key:
                return item[2]
        return None

    def get_all(self, name: str) -> list[str]:
        """Values of every field called ``name``, one per header line."""
        key = _KEY_CACHE.get(name) or header_key(name)
        out: list[str] = []
        for item in self._items:
            if item[0] == key:
                out.append(item[2])
        return out

    def values(self, name: str) -> list[str]:
        """Every comma-separated value of every field called ``name`` (Via, Contact, Route, ...)."""
        out: list[str] = []
        for value in self.get_all(name):
            out.extend(split_header_values(value))
        return out

    def count(self, name: str) -> int:
        key = header_key(name)
        return sum(1 for k, _, _ in self._items if k == key)

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        self._items.append((header_key(name), name, value))
        self._cache.clear()

    def insert_first(self, name: str, value: str) -> None:
        """Put a field before every other field of the same name (a proxy's Via, RFC 3261 16.6 step 8)."""
        key = header_key(name)
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items.insert(i, (key, name, value))
                break
        else:
            self._items.append((key, name, value))
        self._cache.clear()

    def set(self, name: str, value: str) -> None:
        """Replace every field called ``name`` by one field, where the first one was (else appended)."""
        key = header_key(name)
        out: list[tuple[str, str, str]] = []
        done = False
        for item in self._items:
            if item[0] == key:
                if not done:
                    out.append((key, item[1], value))
                    done = True
            else:
                out.append(item)
        if not done:
            out.append((key, name, value))
        self._items = out
        self._cache.clear()

    def remove(self, name: str) -> int:
        """Remove every field called ``name``; returns how many were removed."""
        key = header_key(name)
        before = len(self._items)
        self._items = [item for item in self._items if item[0] != key]
        self._cache.clear()
        return before - len(self._items)

    def remove_first(self, name: str) -> str | None:
        """Remove the first value of ``name`` (one comma-separated value, e.g. the top Via)."""
        key = header_key(name)
        for i, (k, n, v) in enumerate(self._items):
            if k == key:
                parts = split_header_values(v)
                if len(parts) > 1:
                    self._items[i] = (k, n, ", ".join(parts[1:]))
                else:
                    del self._items[i]
                self._cache.clear()
                return parts[0]
        return None

    def replace_first(self, name: str, value: str) -> str | None:
        """Put ``value`` in place of the first value of ``name`` (one comma-separated value, e.g. the top Via),
        where it was (other values of its line stay on a line of their own after it); returns the value replaced,
        or None (and nothing changes) when there is none. For a message whose Via lines come together, what
        :meth:`remove_first` then :meth:`insert_first` give, in one edit."""
        key = _KEY_CACHE.get(name) or header_key(name)
        items = self._items
        for i in range(len(items)):
            item = items[i]
            if item[0] == key:
                old = item[2]
                if "," in old:
                    parts = split_header_values(old)
                    if len(parts) > 1:  # the rest stays on its line, the new value on its own before it
                        items[i] = (key, item[1], ", ".join(parts[1:]))
                        items.insert(i, (key, name, value))
                        self._cache.clear()
                        return parts[0]
                    old = parts[0]
                items[i] = (key, name, value)
                self._cache.clear()
                return old
        return None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _KEY_CACHE.get(name) or header_key(name)
        for item in self._items:
            if item[0] == key:
                return True
        return False

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        return Headers._from_keyed(list(self._items))

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """Memoize a parsed value until the next change (used by the typed accessors)."""
        try:
            return self._cache[key]
        except KeyError:
            value = compute()
            self._cache[key] = value
            return value


_T = TypeVar("_T")


class Message:
    """Shared part of requests and responses."""

    __slots__ = ("body", "headers", "version")

    headers: Headers
    body: bytes
    version: str

    def _start_line(self) -> str:
        raise NotImplementedError

    @property
    def is_request(self) -> bool:
        return isinstance(self, Request)

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length is set to the body's length (added when missing)."""
        body = self.body
        body_len = str(len(body))
        lines = [self._start_line()]
        append = lines.append
        has_length = False
        for key, name, value in self.headers._items:
            if key == "content-length":
                has_length = True
                value = body_len
            append(f"{name}: {value}")
        if not has_length:
            append(f"Content-Length: {body_len}")
        append("\r\n")
        return "\r\n".join(lines).encode() + body if body else "\r\n".join(lines).encode()

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def raw_unchanged(self) -> bytes | None:
        """The bytes this message was parsed from (``parse_message_untrusted(..., lazy=True)``, with a
        Content-Length), or None once its headers changed or when it was built in memory."""
        raw: bytes | None = self.headers._cache.get(RAW_KEY)
        return raw

    # --- typed accessors -------------------------------------------------------------------------------------
    def _single(self, name: str) -> str:
        values = self.headers.get_all(name)
        if not values:
            raise RemoteProtocolError(f"Missing {name} header", 400)
        if len(values) > 1:
            raise RemoteProtocolError(f"More than one {name} header", 400)
        return values[0]

    def _typed(self, key: str, compute: Callable[[], _T]) -> _T:
        result: _T = self.headers.cached(key, compute)
        return result

    @property
    def call_id(self) -> str:
        hit = self.headers._cache.get("call-id")
        if hit is not None:  # parsed before (by the parser or a previous read)
            return hit  # type: ignore[no-any-return]

        def compute() -> str:
            value = self._single("Call-ID").strip()
            if not value or " " in value or "\t" in value:
                raise RemoteProtocolError(f"Bad Call-ID: {value!r}", 400)
            return value

        return self._typed("call-id", compute)

    @property
    def cseq(self) -> CSeq:
        hit = self.headers._cache.get("cseq")
        if hit is not None:  # parsed before (by the parser or a previous read)
            return hit  # type: ignore[no-any-return]
        return self._typed("cseq", lambda: CSeq.parse(self._single("CSeq")))

    @property
    def vias(self) -> list[Via]:
        hit = self.headers._cache.get("via")
        if hit is not None:  # parsed before (by the parser or a previous read)
            return hit  # type: ignore[no-any-return]
        return self._typed("via", lambda: [Via.parse(v) for v in self.headers.values("Via")])

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise RemoteProtocolError("Missing Via header", 400)
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        hit = self.headers._cache.get("from")
        if hit is not None:  # parsed before (by the parser or a previous read)
            return hit  # type: ignore[no-any-return]
        return self._typed("from", lambda: NameAddr.parse(self._single("From")))

    @property
    def to(self) -> NameAddr:
        hit = self.headers._cache.get("to")
        if hit is not None:  # parsed before (by the parser or a previous read)
            return hit  # type: ignore[no-any-return]
        return self._typed("to", lambda: NameAddr.parse(self._single("To")))

    @property
    def contact_star(self) -> bool:
        """True for ``Contact: *`` (REGISTER removing every binding, RFC 3261 section 10.2.2)."""
        values = self.headers.values("Contact")
        return len(values) == 1 and values[0] == "*"

    @property
    def contacts(self) -> list[NameAddr]:
        hit = self.headers._cache.get("contact")
        if hit is not None:  # parsed before (by the parser or a previous read)
            return hit  # type: ignore[no-any-return]

        def compute() -> list[NameAddr]:
            values = self.headers.values("Contact")
            if len(values) == 1 and values[0] == "*":
                return []
            return [NameAddr.parse(v) for v in values]

        return self._typed("contact", compute)

    def _int_header(self, name: str, limit: int) -> int | None:
        values = self.headers.get_all(name)
        if not values:
            return None
        if len(values) > 1:
            raise RemoteProtocolError(f"More than one {name} header", 400)
        text = values[0].strip()
        if not is_digits(text) or len(text) > 12 or int(text) > limit:
            raise RemoteProtocolError(f"Bad {name}: {text[:40]!r}", 400)
        return int(text)

    @property
    def max_forwards(self) -> int | None:
        return self._typed("max-forwards", lambda: self._int_header("Max-Forwards", 255))

    @property
    def expires(self) -> int | None:
        return self._typed("expires", lambda: self._int_header("Expires", 2**32 - 1))

    @property
    def min_expires(self) -> int | None:
        """``Min-Expires`` (RFC 3261 20.23): the shortest lifetime a 423 Interval Too Brief allows."""
        return self._int_header("Min-Expires", 2**32 - 1)

    @property
    def content_length(self) -> int | None:
        return self._int_header("Content-Length", 2**32 - 1)

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.strip() if value is not None else None

    @property
    def warnings(self) -> list[Warning]:
        return self._typed("warning", lambda: [Warning.parse(v) for v in self.headers.values("Warning")])

    @property
    def reasons(self) -> list[Reason]:
        return self._typed("reason", lambda: [Reason.parse(v) for v in self.headers.values("Reason")])

    @property
    def routes(self) -> list[NameAddr]:
        return self._typed("route", lambda: [NameAddr.parse(v) for v in self.headers.values("Route")])

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._typed(
            "record-route", lambda: [NameAddr.parse(v) for v in self.headers.values("Record-Route")]
        )


class Request(Message):
    """A SIP request. ``uri`` is the Request-URI text; ``request_uri`` parses it."""

    __slots__ = ("_uri_cache", "method", "uri")

    def __init__(
        self,
        method: str,
        uri: str | SipUri,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        self.method = method
        self.uri = str(uri)
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body
        self.version = version
        self._uri_cache: tuple[str, SipUri] | None = None

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    @property
    def request_uri(self) -> SipUri:
        cached = self._uri_cache
        if cached is not None and cached[0] == self.uri:
            return cached[1]
        parsed = SipUri.parse(self.uri)
        self._uri_cache = (self.uri, parsed)
        return parsed

    def copy(self) -> Request:
        return Request(self.method, self.uri, self.headers.copy(), self.body, self.version)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.method, self.uri, self.version, self.headers, self.body) == (
            other.method,
            other.uri,
            other.version,
            other.headers,
            other.body,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.headers.get('Call-ID')!r}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        self.status = status
        self.reason = REASON_PHRASES.get(status, "Unknown") if reason is None else reason
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body
        self.version = version

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(), self.body, self.version)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self.status, self.reason, self.version, self.headers, self.body) == (
            other.status,
            other.reason,
            other.version,
            other.headers,
            other.body,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.headers.get('Call-ID')!r}>"


def response_for(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response to ``request`` (RFC 3261 section 8.2.6): Via, From, To, Call-ID and CSeq copied.

    ``to_tag`` is added to To when the request's To has no tag yet (never for 100 Trying, section 8.2.6.2).
    """
    items: list[tuple[str, str, str]] = []
    append = items.append
    tag = to_tag if status != 100 else None
    for item in request.headers._items:
        key = item[0]
        if key in ("via", "from", "to", "call-id", "cseq"):  # RFC 3261 section 8.2.6.2
            if key == "to" and tag is not None:
                value = item[2]
                if "tag=" not in value and "tag=" not in value.lower():
                    item = (key, item[1], f"{value};tag={tag}")
            append(item)  # the request's field as it is: fields are immutable tuples
    for name, value in extra:
        append((header_key(name), name, value))
    return Response(status, reason, Headers._from_keyed(items), body)


#: Reason phrases of RFC 3261 section 21 plus the ones gamesdk uses (RFC 3313, 3903, 4412, 3329 ...).
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    429: "Too Many Requests",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
