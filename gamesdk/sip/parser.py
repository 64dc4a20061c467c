"""SIP message parsers for datagrams and streams (RFC 3261 sections 7 and 18.3).

Network data is untrusted: ``parse_message_untrusted`` and ``StreamParser`` raise only
``RemoteProtocolError``, whose ``status_hint`` is the status to answer a request with (400, 413, 505, 513) and whose
message is fit for a reason phrase. A message that parses has a valid start line, well-formed header fields, exactly
one From, To, Call-ID and CSeq, at least one Via, and a CSeq method that matches the request method.
"""

from __future__ import annotations

import re

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip._grammar import TOKEN, TOKEN_CHARS, is_digits
from gamesdk.sip.headers import CSeq, Via, split_header_values
from gamesdk.sip.message import RAW_KEY, Headers, Message, Request, Response, header_key
from gamesdk.sip.uri import NameAddr, SipUri, check_name_addr_untrusted

__all__ = ["MAX_MESSAGE_BYTES", "StreamParser", "checked_value", "known_via", "parse_message_untrusted",
           "validate_untrusted"]

#: Largest message accepted: the largest UDP payload (RFC 3261 section 18.1.1 lets UDP carry up to 65,535).
MAX_MESSAGE_BYTES = 65535

_METHOD_RE = re.compile(TOKEN)
_HEADER_NAME_RE = re.compile(TOKEN)
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
# Headers that may appear only once (RFC 3261 section 7.3.1: not comma-separable).
_SINGLE = ("from", "to", "call-id", "cseq", "max-forwards", "content-length", "content-type")
_TYPED = frozenset(("via", "from", "to", "cseq", "call-id", "max-forwards", "contact", "expires", "date"))
_REQUIRED = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


# Header names already seen valid, mapped to their key (bounded: names come from the network).
_VALID_NAMES: dict[str, str] = {}


def _fail(message: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(message, status)


def _parse_head(head: str) -> tuple[str, list[tuple[str, str, str]]]:
    plain = _parse_head_plain(head)
    if plain is not None:
        return plain
    lines = head.split("\n")
    start = lines[0].rstrip("\r")
    items: list[tuple[str, str, str]] = []
    for raw in lines[1:]:
        line = raw.removesuffix("\r")
        if line[:1] in (" ", "\t"):
            # Header folding: a continuation line joins the previous field with one SP (RFC 3261 section 7.3.1).
            if not items:
                raise _fail("Continuation line before any header")
            # A continuation of only whitespace adds nothing: LWS = [*WSP CRLF] 1*WSP (RFC 3261 section 25.1).
            continued = line.strip(" \t")
            if continued:
                last_key, last_name, last_value = items[-1]
                joined = f"{last_value} {continued}" if last_value else continued
                items[-1] = (last_key, last_name, joined)
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _fail(f"Bad header line: {line[:40]!r}")
        key = _VALID_NAMES.get(name)
        if key is None:
            name = name.rstrip(" \t")
            if not _HEADER_NAME_RE.fullmatch(name):
                raise _fail(f"Bad header name: {name[:40]!r}")
            key = header_key(name)
            if len(_VALID_NAMES) < 512:
                _VALID_NAMES[name] = key
        items.append((key, name, value.strip(" \t")))
    return start, items


def _parse_head_plain(head: str) -> tuple[str, list[tuple[str, str, str]]] | None:
    # CRLF everywhere and no folding: the shape of nearly every message, parsed with fewer steps. None when the
    # head is not of that shape (a bare LF, a continuation line): the caller then takes the general path. The
    # shape is checked on the way instead of by scanning the head first: a continuation line is a line whose
    # name is not a known one and that starts with whitespace, and a bare LF shows in the count of LFs.
    lines = head.split("\r\n")
    if head.count("\n") != len(lines) - 1:
        return None
    items: list[tuple[str, str, str]] = []
    append = items.append
    valid = _VALID_NAMES
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = valid.get(name)
        if key is None or not sep:  # a known name is a field only with its colon
            if line[:1] in (" ", "\t"):
                return None
            if not sep:
                raise _fail(f"Bad header line: {line[:40]!r}")
            name = name.rstrip(" \t")
            if not _HEADER_NAME_RE.fullmatch(name):
                raise _fail(f"Bad header name: {name[:40]!r}")
            key = header_key(name)
            if len(valid) < 512:
                valid[name] = key
        append((key, name, value.strip(" \t")))
    return lines[0], items


def _parse_start(start: str, headers: Headers, body: bytes) -> Message:
    if start.startswith("SIP/"):
        parts = start.split(" ", 2)
        if len(parts) < 2:
            raise _fail("Bad status line")
        version, code = parts[0], parts[1]
        if version != "SIP/2.0":
            raise _fail(f"Unsupported version {version[:20]!r}", 505)
        if len(code) != 3 or not is_digits(code) or not ("100" <= code <= "699"):
            raise _fail(f"Bad status code {code[:20]!r}")
        return Response(int(code), parts[2] if len(parts) == 3 else "", headers, body, version)
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise _fail("Bad request line")
    method, uri, version = parts
    if not _METHOD_RE.fullmatch(method):
        raise _fail(f"Bad method {method[:20]!r}")
    if version != "SIP/2.0":
        if _VERSION_RE.fullmatch(version):
            raise _fail(f"Unsupported version {version[:20]!r}", 505)
        raise _fail("Bad request line")
    parsed_uri = SipUri.parse(uri)
    if parsed_uri.headers is not None:
        # A Request-URI may not carry URI headers (RFC 3261 section 19.1.1, table 1; RFC 4475 3.1.2.11).
        raise _fail("Request-URI with headers")
    request = Request(method, uri, headers, body, version)
    request._uri_cache = (uri, parsed_uri)
    return request


#: Header values already checked, by (key, value): the parsed result. The values of one call repeat in every
#: message of it (From, To, Call-ID, CSeq; a response's Vias are its request's), so a proxy sees each about four
#: times. Results are immutable (NamedTuples) and depend only on the text, so sharing them is safe; only values
#: that passed are kept (bad ones raise every time). Bounded (it is fed by the network) in two generations: when
#: it is full its values become the old generation and it starts empty; a value read again from the old one comes
#: back, the rest go at the next turn. (Cleared outright, the values seen once — a new Via branch per request, a
#: new From tag per call — pushed out the ones that come back: a registrar serving 1,000 players parsed every
#: To and Contact again every 2,700 logins: half a parse of each per login.)
_MEMO: dict[tuple[str, str], object] = {}
_MEMO_OLD: dict[tuple[str, str], object] = {}
#: Values per generation: the two hold at most 8,192, as the single memo did (a flood of new values cannot grow
#: the server: tests/attacks test_8).
_MEMO_MAX = 4096
#: Longest value the memo keeps: its size stays bounded in bytes, not only in entries (8,192 unique 30,000-character
#: Vias and Froms held half a gigabyte; real values are under 300 characters and still hit).
_MEMO_VALUE_MAX = 512
_MISSING = object()
_new_tuple = tuple.__new__


def clear_memo() -> None:
    """Forget every checked value (both generations) and every header line split before."""
    _MEMO.clear()
    _MEMO_OLD.clear()
    _LINES.clear()
    _UNTAGGED.clear()


#: The parts before ">;tag=" of From and To values already parsed (a player's From in each of its calls, the To of
#: each answer; the tag is new in each), to their name-addr without the tag. Bounded: they come from the network.
_UNTAGGED: dict[str, NameAddr] = {}
#: A tag the twin below takes: a token without "%" (which sends the full parse another way).
_TAG_CHARS = TOKEN_CHARS.replace("%", "")


def _tagged_name_addr(value: str) -> NameAddr | None:
    """``NameAddr.parse(value)`` for a value ``<prefix>;tag=<tag>`` whose prefix (no ">" but the one that closes the
    URI) was parsed lately, the tag a token: the prefix's name-addr with the tag, without parsing the URI again
    (about 15k instructions a call's INVITE, compiled). None for anything else, which the full parse takes
    (tests/sip/test_tagged_twin.py holds the two to the same value)."""
    prefix, sep, tag = value.partition(">;tag=")
    if not sep or not tag or tag.strip(_TAG_CHARS):
        return None
    base = _UNTAGGED.get(prefix)
    if base is None:
        if ">" in prefix or "<" not in prefix or len(prefix) > _MEMO_VALUE_MAX:
            return None
        try:
            base = NameAddr.parse(prefix + ">")
        except RemoteProtocolError:
            return None
        if len(_UNTAGGED) >= _MEMO_MAX:
            _UNTAGGED.clear()
        _UNTAGGED[prefix] = base
    return _new_tuple(NameAddr, (base.uri, base.display_name, (("tag", tag),)))


def _checked(key: str, value: str) -> object:
    """The parsed form of a typed header value (None for a Contact, which is only checked)."""
    memo_key = (key, value)
    hit = _MEMO.get(memo_key, _MISSING)
    if hit is not _MISSING:
        return hit
    result: object = _MEMO_OLD.get(memo_key, _MISSING)
    if result is not _MISSING:
        pass  # read again: it moves back to the current generation below
    elif key == "via":
        # One Via per line is the usual form: no list to split, no generator to run.
        result = ((Via.parse(value.strip()),) if "," not in value
                  else tuple([Via.parse(part) for part in split_header_values(value)]))
    elif key == "from" or key == "to":
        # Parsed in full (not only checked): the value comes back in about four messages of the call and the
        # proxy reads From (authentication) and To (tags) of several of them; the memo pays for one parse.
        # (NameAddr.parse raises what check_name_addr_untrusted raises, and takes the plain shape first.)
        result = _tagged_name_addr(value) or NameAddr.parse(value)
    elif key == "contact":
        if value != "*":
            for part in split_header_values(value) if "," in value else (value,):
                check_name_addr_untrusted(part)
        result = None
    else:  # cseq
        result = CSeq.parse(value)
    if len(value) > _MEMO_VALUE_MAX:
        return result
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO_OLD.clear()
        _MEMO_OLD.update(_MEMO)
        _MEMO.clear()
    _MEMO[memo_key] = result
    return result


def checked_value(key: str, value: str) -> object:
    """The parsed form of the typed header value ``value`` ("from", "to" or "cseq" as ``key``) as the parser's
    checks make it, remembered as they remember it (raises ``RemoteProtocolError`` like them): a reader of plain
    heads (server/splice.py's ``read_call``) that builds the message a parse would build leaves the memo as that
    parse would, so the messages after it (a call's 2xx repeats its INVITE's From and CSeq) find them there."""
    return _checked(key, value)


def known_via(value: str) -> Via | None:
    """The Via of the header value ``value`` (one Via, whitespace stripped) when the parser met that value lately,
    else None: a reader of heads that skips parsing again what the parser has seen (a proxy's relay path: the ACK
    of a challenge repeats the Via of the INVITE it answers). Nothing is parsed or remembered here."""
    key = ("via", value)
    hit = _MEMO.get(key)
    if hit is None:
        hit = _MEMO_OLD.get(key)
    if isinstance(hit, tuple) and len(hit) == 1:
        via = hit[0]
        if isinstance(via, Via):
            return via
    return None


def _validate(message: Message, items: list[tuple[str, str, str]]) -> None:
    # One pass over the fields: parse every header the stack relies on and store the typed values in the
    # accessor cache, so a proxy reading them afterwards pays nothing more.
    cache = message.headers._cache
    seen: dict[str, int] = {}
    vias: list[Via] = []
    for key, _, value in items:
        count = seen.get(key, 0) + 1
        seen[key] = count
        if key in _TYPED:
            if count > 1 and key != "via" and key != "contact":
                raise _fail(f"More than one {key} header")
            if key == "via":
                vias.extend(_checked(key, value))  # type: ignore[arg-type]
            elif key == "from" or key == "to" or key == "cseq":
                cache[key] = _checked(key, value)
            elif key == "call-id":
                if not value or " " in value or "\t" in value:
                    raise _fail("Bad Call-ID")
                cache[key] = value
            elif key == "max-forwards":
                if not is_digits(value) or len(value) > 10 or int(value) > 255:
                    raise _fail("Bad Max-Forwards")
                cache[key] = int(value)
            elif key == "contact":
                _checked(key, value)
            elif key == "expires":
                _ = message.expires  # raises on a bad value
            elif key == "date" and not value.rstrip().endswith("GMT"):
                # SIP dates are always GMT (RFC 3261 section 20.17; RFC 4475 3.1.2.12).
                raise _fail("Bad Date header")
        elif count > 1 and key in _SINGLE:
            raise _fail(f"More than one {key} header")
    for key, name in _REQUIRED.items():
        if key not in seen:
            raise _fail(f"Missing {name} header")
    if not vias:
        raise _fail("Missing Via header")
    cache["via"] = vias
    if isinstance(message, Request) and cache["cseq"].method != message.method:
        raise _fail("CSeq method does not match the request method")


#: What a relayed message must get right: what the proxy reads of every message, and what any answer to it
#: copies (RFC 3261 section 8.2.6.2), so that even a refusal of it is well-formed.
_RELAY_CHECKED = frozenset(("via", "from", "to", "cseq", "call-id"))


def _validate_relayed(message: Message, items: list[tuple[str, str, str]]) -> None:
    # Via, From, To, Call-ID and CSeq as the full check does them (memoised: the values repeat within a call);
    # Contact, Max-Forwards, Expires and the rest are parsed when first read (the accessors raise then).
    cache = message.headers._cache
    vias: list[Via] = []
    seen: set[str] = set()
    for key, _, value in items:
        if key in _RELAY_CHECKED:
            if key == "via":
                vias.extend(_checked(key, value))  # type: ignore[arg-type]
            elif key in seen:
                raise _fail(f"More than one {key} header")
            elif key == "call-id":
                if not value or " " in value or "\t" in value:
                    raise _fail("Bad Call-ID")
                cache[key] = value
            else:
                cache[key] = _checked(key, value)
            seen.add(key)  # only the checked keys are asked about below
    for key, name in _REQUIRED.items():
        if key not in seen:
            raise _fail(f"Missing {name} header")
    cache["via"] = vias
    if isinstance(message, Request) and cache["cseq"].method != message.method:
        raise _fail("CSeq method does not match the request method")


def validate_untrusted(message: Request | Response) -> None:
    """The checks a lazily parsed message skipped (see ``parse_message_untrusted(..., lazy=True)``): every
    typed header parsed, single headers single. Raises ``RemoteProtocolError`` like the parser. Checking changes
    no header, so the bytes the message was parsed from stay with it (``Message.raw_unchanged``: the proxy forwards
    a validated INVITE and its final response by editing them, server/splice.py)."""
    cache = message.headers._cache
    plain = cache.pop(_PLAIN_KEY, None)
    if plain is not None:
        # Parsed by _parse_plain, unchanged since: its single headers are single, Via, From, To, Call-ID and
        # CSeq checked; the rest is checked here, and anything _validate would refuse goes to it for the error.
        try:
            if _rest_checked(message, plain[0], plain[1]):
                return
        except RemoteProtocolError:
            pass
    items = message.headers._items
    _validate(message, items)


def _content_length(items: list[tuple[str, str, str]]) -> int | None:
    values = [v for k, _, v in items if k == "content-length"]
    if not values:
        return None
    if len(values) > 1:
        raise _fail("More than one Content-Length header")
    text = values[0].strip()
    if not is_digits(text) or len(text) > 10:
        raise _fail("Bad Content-Length")
    return int(text)


def _find_head_end(data: bytes | bytearray) -> tuple[int, int]:
    """Where the empty line after the headers starts and how long it is; ``(-1, 0)`` when not there yet.

    The head ends at the FIRST empty line, CRLF CRLF or bare LF LF (RFC 3261 section 7.5 asks receivers to take
    a bare LF as a line end): a CRLF CRLF inside the body of a bare-LF message is body.
    """
    end = data.find(b"\r\n\r\n")
    lf_end = data.find(b"\n\n", 0, end if end >= 0 else len(data))
    if lf_end >= 0:
        return lf_end, 2
    if end >= 0:
        return end, 4
    return -1, 0


def _split_head(data: bytes) -> tuple[bytes, int]:
    end, sep = _find_head_end(data)
    if end < 0:
        raise _fail("Incomplete message: no empty line after the headers")
    return data[:end], end + sep


def _decode(head: bytes) -> str:
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("Header bytes are not UTF-8") from None


# -- the plain shape, parsed in one loop -----------------------------------------------------------------------
#
# Nearly every message is "plain": CRLF line ends, no folding, no header that may appear once appearing twice.
# For those one loop over the lines splits the fields and picks out the values the checks need, and the checks
# run on those without another pass over the fields. Anything that is not plain, or not valid, returns None from
# here and goes through _parse_general, which gives the answer (a message, or the error) exactly as before: the
# plain path only takes messages the general one takes, with the same result.

_PLAIN_MAX = 1024
#: Start lines already parsed (the Request-URIs of a region's players and the status lines repeat).
_REQUEST_LINES: dict[str, tuple[str, str, SipUri]] = {}
_STATUS_LINES: dict[str, tuple[int, str]] = {}
#: Keys whose values the checks read: Via and Contact may repeat, the others may not here.
_WATCHED = frozenset(("via", "contact", "from", "to", "call-id", "cseq", "content-length", "max-forwards",
                      "expires", "date", "content-type"))
#: Key in Headers._cache under which a plainly parsed message keeps what validate_untrusted needs: the single
#: headers' values and the Contact values (the cache is cleared by every change, so they stay true).
_PLAIN_KEY = "\x00plain"


#: Header lines already split, by their whole text: the field (key, name, value) they gave. Most lines of a message
#: repeat lines of earlier ones (Max-Forwards, Content-Length, a player's To and Contact, a call's Call-ID, From and
#: CSeq in every message of it), and a hit costs one lookup instead of the split, two strings and a tuple. The field
#: depends only on the text, and tuples of strings are immutable, so messages share them. Bounded (fed by the
#: network): emptied when full, lines over _LINE_MEMO_ENTRY characters never kept.
_LINES: dict[str, tuple[str, str, str]] = {}
_LINES_MAX = 4096
_LINE_MEMO_ENTRY = 256
#: Lines new in nearly every request (a new branch, fresh credentials), not kept: they would only push out the
#: lines that come back.
_UNIQUE_LINES = frozenset(("via", "authorization", "proxy-authorization"))


def _request_line(start: str) -> tuple[str, str, SipUri] | None:
    hit = _REQUEST_LINES.get(start)
    if hit is not None:
        return hit
    parts = start.split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[1] or not _METHOD_RE.fullmatch(parts[0]):
        return None
    try:
        uri = SipUri.parse(parts[1])
    except RemoteProtocolError:
        return None
    if uri.headers is not None:
        return None
    hit = (parts[0], parts[1], uri)
    if len(start) > _MEMO_VALUE_MAX:
        return hit
    if len(_REQUEST_LINES) >= _PLAIN_MAX:
        _REQUEST_LINES.clear()
    _REQUEST_LINES[start] = hit
    return hit


def _status_line(start: str) -> tuple[int, str] | None:
    hit = _STATUS_LINES.get(start)
    if hit is not None:
        return hit
    parts = start.split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0":
        return None
    code = parts[1]
    if len(code) != 3 or not is_digits(code) or not ("100" <= code <= "699"):
        return None
    hit = (int(code), parts[2] if len(parts) == 3 else "")
    if len(start) > _MEMO_VALUE_MAX:
        return hit
    if len(_STATUS_LINES) >= _PLAIN_MAX:
        _STATUS_LINES.clear()
    _STATUS_LINES[start] = hit
    return hit


def _relay_checked(message: Message, vias: list[str], single: dict[str, str]) -> bool:
    """What _validate_relayed checks, on the values the loop picked out; False where it would raise."""
    from_ = single.get("from")
    to = single.get("to")
    call_id = single.get("call-id")
    cseq_text = single.get("cseq")
    if from_ is None or to is None or call_id is None or cseq_text is None or not vias:
        return False
    if not call_id or " " in call_id or "\t" in call_id:
        return False
    # The memo's hits looked up here (a call per value saved); its values are never None, empty or false.
    memo = _MEMO
    cseq: CSeq = memo.get(("cseq", cseq_text)) or _checked("cseq", cseq_text)  # type: ignore[assignment]
    if isinstance(message, Request) and cseq.method != message.method:
        return False
    parsed: list[Via] = []
    for value in vias:
        parsed.extend(memo.get(("via", value)) or _checked("via", value))  # type: ignore[arg-type]
    cache = message.headers._cache
    cache["via"] = parsed
    cache["from"] = memo.get(("from", from_)) or _checked("from", from_)
    cache["to"] = memo.get(("to", to)) or _checked("to", to)
    cache["call-id"] = call_id
    cache["cseq"] = cseq
    return True


def _rest_checked(message: Message, single: dict[str, str], contacts: list[str]) -> bool:
    """What _validate checks beyond _relay_checked (single headers are single already); False where it would
    raise."""
    value = single.get("max-forwards")
    if value is not None:
        if not is_digits(value, 10) or int(value) > 255:
            return False
        message.headers._cache["max-forwards"] = int(value)
    for value in contacts:
        if ("contact", value) not in _MEMO:  # checked lately (a player's Contact comes back): no call
            _checked("contact", value)
    value = single.get("expires")
    if value is not None:
        # What the accessor (Message.expires) reads, read here from the text at hand; a bad value goes to the
        # full check, which raises the accessor's error.
        if not is_digits(value) or int(value) > 2**32 - 1:
            return False
        message.headers._cache["expires"] = int(value)
    value = single.get("date")
    return value is None or value.rstrip().endswith("GMT")


def _parse_plain(data: bytes, end: int, lazy: bool) -> Request | Response | None:
    """The message of a plain head ending at ``end`` (its CRLF CRLF), or None for _parse_general to decide."""
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = head.split("\r\n")
    if "\n" in "".join(lines):
        return None  # a bare LF (what is left of one once the CRLFs are gone; cheaper than counting LFs)
    items: list[tuple[str, str, str]] = []
    append = items.append
    valid = _VALID_NAMES
    watched = _WATCHED
    vias: list[str] = []
    contacts: list[str] = []
    single: dict[str, str] = {}
    known = _LINES
    fields = iter(lines)
    start = next(fields)
    for line in fields:
        item = known.get(line)
        if item is None:
            # "Name: value", the usual shape, splits at ": " with the value's leading space already off; any
            # other shape (no space after the colon, a colon in the name's place) is split at the first colon.
            name, sep, value = line.partition(": ")
            key = valid.get(name)
            if key is None or not sep:  # a known name is a field only with its colon
                name, sep, value = line.partition(":")
                key = valid.get(name)
            if key is None or not sep:
                # Not a name seen before (as the general path: a name may have whitespace before the colon).
                if not sep or line[:1] in (" ", "\t"):
                    return None
                name = name.rstrip(" \t")
                if not _HEADER_NAME_RE.fullmatch(name):
                    return None
                key = header_key(name)
                if len(valid) < 512:
                    valid[name] = key
            item = (key, name, value.strip(" \t"))
            if len(line) <= _LINE_MEMO_ENTRY and key not in _UNIQUE_LINES:
                if len(known) >= _LINES_MAX:
                    known.clear()
                known[line] = item
        # else: a line met before, its field as split then (no new strings, no new tuple)
        append(item)
        key = item[0]
        if key in watched:
            value = item[2]
            if key == "via":
                vias.append(value)
            elif key == "contact":
                contacts.append(value)
            elif key in single:
                return None  # twice: the general path says what of it
            else:
                single[key] = value
    body_start = end + 4
    text = single.get("content-length")
    if text is None:
        length = -1
        body = data[body_start:]
    else:
        if not is_digits(text, 10):
            return None
        length = int(text)
        body = data[body_start : body_start + length]
        if len(body) < length:
            return None
    headers = Headers._from_keyed(items)
    message: Request | Response
    if start.startswith("SIP/"):
        status_line = _status_line(start)
        if status_line is None:
            return None
        message = Response(status_line[0], status_line[1], headers, body, "SIP/2.0")
    else:
        request_line = _request_line(start)
        if request_line is None:
            return None
        method, uri, parsed_uri = request_line
        message = Request(method, uri, headers, body, "SIP/2.0")
        message._uri_cache = (uri, parsed_uri)
    try:
        if not _relay_checked(message, vias, single):
            return None
        if lazy:
            cache = headers._cache
            cache[_PLAIN_KEY] = (single, contacts)
            if length >= 0:
                stop = body_start + length
                cache[RAW_KEY] = data if stop == len(data) else data[:stop]
        elif not _rest_checked(message, single, contacts):
            return None
    except RemoteProtocolError:
        return None
    return message


def parse_message_untrusted(data: bytes, max_size: int = MAX_MESSAGE_BYTES, *,
                            lazy: bool = False) -> Request | Response:
    """Parse one SIP message from one datagram.

    Bytes after the body (by Content-Length) are ignored (RFC 3261 section 18.3); a datagram without
    Content-Length has the rest of the datagram as body. Raises ``RemoteProtocolError`` only.

    ``lazy`` (a proxy's relay path): the start line, the framing, every header line's shape, Via, From, To,
    Call-ID and CSeq are checked as in full; the other typed headers are parsed when first read, and
    :func:`validate_untrusted` runs the rest of the checks when the message turns out to be for this element.
    A lazily parsed message with a Content-Length keeps its bytes (:meth:`Message.raw_unchanged`) until its
    headers change, so a proxy can forward it by splicing bytes instead of serialising it again.
    """
    if len(data) <= max_size and data[:1] not in (b"\r", b"\n"):
        end = data.find(b"\r\n\r\n")  # the head's end, as _find_head_end says when the head has no bare LF
        if end > 0:
            message = _parse_plain(data, end, lazy)
            if message is not None:
                return message
    return _parse_general(data, max_size, lazy)


def _parse_general(data: bytes, max_size: int, lazy: bool) -> Request | Response:
    # Every shape of message, and the errors: the answer _parse_plain must agree with.
    if len(data) > max_size:
        raise _fail("Message Too Large", 513)
    # Leading CRLFs before the start line are ignored (RFC 3261 section 7.5).
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
        if not data:
            raise _fail("Empty message")
    head, body_start = _split_head(data)
    start, items = _parse_head(_decode(head))
    length = _content_length(items)
    if length is None:
        body = data[body_start:]
    else:
        body = data[body_start : body_start + length]
        if len(body) < length:
            raise _fail("Content-Length larger than the message")
    message = _parse_start(start, Headers._from_keyed(items), body)
    if lazy:
        _validate_relayed(message, items)
        if length is not None:
            end = body_start + length
            message.headers._cache[RAW_KEY] = data if end == len(data) else data[:end]
    else:
        _validate(message, items)
    return message  # type: ignore[return-value]


class StreamParser:
    """Frames SIP messages on a byte stream by Content-Length (RFC 3261 section 18.3).

    Feed bytes as they arrive with ``feed``; take complete messages with ``next_message`` (parsed) or
    ``next_frame`` (the message's bytes, for a driver that hands datagram-shaped input on) until None.
    ``pings`` counts the CRLFCRLF keep-alives seen (RFC 5626 section 3.5.1: each is answered with CRLF).
    """

    def __init__(self, max_size: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._max_size = max_size
        self.pings = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a message."""
        return len(self._buf)

    def next_frame(self) -> bytes | None:
        """The bytes of the next complete message, or None when more bytes are needed."""
        buf = self._buf
        skip = 0
        while skip < len(buf) and buf[skip] in (13, 10):
            skip += 1  # keep-alive CRLFs between messages (RFC 5626 section 3.5.1)
        if skip:
            self.pings += bytes(buf[:skip]).count(b"\r\n\r\n")
            del buf[:skip]
        end, sep = _find_head_end(buf)
        if end < 0:
            if len(buf) > self._max_size:
                raise _fail("Message Too Large", 513)
            return None
        _, items = _parse_head(_decode(bytes(buf[:end])))
        length = _content_length(items)
        if length is None:
            raise _fail("Missing Content-Length on a stream")
        total = end + sep + length
        if total > self._max_size:
            raise _fail("Message Too Large", 513)
        if len(buf) < total:
            return None
        data = bytes(buf[:total])
        del buf[:total]
        return data

    def next_message(self) -> Request | Response | None:
        """The next complete message, or None when more bytes are needed."""
        data = self.next_frame()
        return None if data is None else parse_message_untrusted(data, self._max_size)
