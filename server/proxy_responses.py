"""The proxy's transaction side: answers of its own, responses from downstream, CANCEL and the RFC 3261 timers.

Split from :mod:`server.proxy` (the request path) to keep each module small. :class:`TransactionSide` is the base
of :class:`server.proxy.ProxyCore` and uses the state that class sets up. Rules kept here:

- Provisional responses except 100 and every 2xx are forwarded immediately (RFC 3261 section 16.7 step 5); a 2xx
  also when late or retransmitted (RFC 6026 Accepted state), with the policy's headers cached per To-tag.
- A non-2xx final is ACKed hop by hop by the proxy (section 17.1.1.3) and passed upstream once.
- A response that matches no client transaction but carries our Via on top is forwarded statelessly along the
  next Via (section 16.7 step 1 hands it to section 16.11; section 18.2.2 picks the address), after the same
  sanity checks as a stateless proxy: the top Via is ours and its branch carries this process's HMAC over the
  branch and the next hop (so nobody can aim it elsewhere), another Via follows, the next hop is an IP address
  (never resolved) and not this server.
- Timers A/E retransmit over UDP, B/F give up (408 upstream for an INVITE only, RFC 4320), C cancels a ringing
  INVITE after 3 minutes (section 16.8), D/K/M and G/H/I/J/L end transactions.
"""

from __future__ import annotations

import heapq
import hmac
import logging
from collections import deque
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Final, cast

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError
from gamesdk.identity import IdentitySigner
from gamesdk.sip.headers import Via, split_header_values
from gamesdk.sip.ids import BRANCH_MAGIC_COOKIE, IdFactory
from gamesdk.sip.message import Headers, Request, Response, response_for
from gamesdk.sip.timers import TimerConfig
from gamesdk.sip.transaction import (
    NO_ENTRY,
    Input,
    Timed,
    TimerHeap,
    TransactionState,
    TransactionTerminated,
    TransactionTimedOut,
)
from gamesdk.sip.transaction_client import ClientNonInviteTransaction, build_ack_for_non2xx, build_cancel
from server.config import TimerSettings
from server.hooks import CallInfo, PolicyHooks, PolicyQuery
from server.location import is_ip_literal
from server.splice import ANSWER_SPANS, Head, spliced, with_vias, with_vias_at

__all__ = ["ENDED_ACCEPTED", "ENDED_COMPLETED", "ENDED_CONFIRMED", "ClientTx", "EndedClient", "EndedServer", "Out",
           "ProxyStats", "ServerTx", "TransactionSide", "answer_bytes", "forwarded_request", "mark_received",
           "marked_via", "marked_vias", "trying_bytes"]

log: Final = logging.getLogger("server.proxy")


Out = list[tuple[bytes, Address]]
S = TransactionState
I = Input  # short alias, as in the SDK's tables

# The states and timers as module globals (server/proxy.py reads them from here too): in CPython 3.11
# ``TransactionState.PROCEEDING`` goes through EnumType.__getattr__'s hook (some 30 times the cost of a global),
# and a call reads them some 40 times in the two modules.
_ACCEPTED: Final = S.ACCEPTED
_CALLING: Final = S.CALLING
_COMPLETED: Final = S.COMPLETED
_CONFIRMED: Final = S.CONFIRMED
_PROCEEDING: Final = S.PROCEEDING
_TERMINATED: Final = S.TERMINATED
_TRYING: Final = S.TRYING
_TIMER_A: Final = I.TIMER_A
_TIMER_B: Final = I.TIMER_B
_TIMER_C: Final = I.TIMER_C
_TIMER_D: Final = I.TIMER_D
_TIMER_E: Final = I.TIMER_E
_TIMER_F: Final = I.TIMER_F
_TIMER_G: Final = I.TIMER_G
_TIMER_H: Final = I.TIMER_H
_TIMER_I: Final = I.TIMER_I
_TIMER_J: Final = I.TIMER_J
_TIMER_K: Final = I.TIMER_K
_TIMER_L: Final = I.TIMER_L
_TIMER_M: Final = I.TIMER_M


class ServerTx(Timed):
    """Upstream side of a proxied request (RFC 3261 section 16.2): the request as received and what we answered.

    Its states are those of the SDK's server transactions (figures 7 and 8 with RFC 6026's Accepted), its timers
    sit in the proxy's one :class:`~gamesdk.sip.transaction.TimerHeap`. Only what a UDP proxy needs is kept: the
    bytes of the last response while a retransmission of the request may ask for them, and the deadlines, because
    at 1,000 calls/s some 60,000 completed transactions wait out their 32 s. From its final response on (RFC 3261
    section 17.2: Completed, Confirmed, RFC 6026's Accepted) it keeps no parsed message: its key, the response
    bytes, the Vias responses go up with and three strings for log lines (:meth:`TransactionSide._finished`),
    so the objects every collection of the cyclic collector walks stay few.

    A class with its own ``__init__`` rather than a dataclass: the compiled build runs a dataclass's generated
    ``__init__`` as interpreted code setting each attribute through its descriptor (6,700 instructions per
    transaction, callgrind), where a written one stores them natively.
    """

    __slots__ = ("call", "call_id", "caller", "client", "final_status", "from_", "g_interval", "key",
                 "last_response", "method", "request", "source", "state", "upstream_vias", "uri")

    def __init__(self, key: tuple[str, ...], method: str, request: Request | None, source: Address,
                 state: TransactionState = TransactionState.TRYING, last_response: bytes | None = None,
                 final_status: int = 0, client: ClientTx | None = None, timers: dict[Input, float] | None = None,
                 heap_at: float = NO_ENTRY, g_interval: float = 0.0, call: CallInfo | None = None,
                 upstream_vias: list[str] | None = None, call_id: str = "", from_: str = "", uri: str = "",
                 caller: tuple[Address, ...] | None = None) -> None:
        self.key = key
        self.method = method
        #: The request as received while the transaction may still answer it (our own final, a CANCEL or the ACK
        #: of a non-2xx built from it); None from its final response on.
        self.request = request
        self.source = source
        #: Trying (a non-INVITE) or Proceeding (an INVITE, whose 100 goes out at once) until the first answer.
        self.state = state
        #: Bytes of the last response sent upstream (answers retransmissions of the request).
        self.last_response = last_response
        self.final_status = final_status
        self.client = client
        self.timers = {} if timers is None else timers
        #: The deadline of its one entry in the proxy's TimerHeap (NO_ENTRY while it has none).
        self.heap_at = heap_at
        #: Timer G interval (doubles up to T2).
        self.g_interval = g_interval
        #: Facts for the policy hooks (who called whom, which side is local); set by the proxy, without the
        #: INVITE from the final response on.
        self.call = call
        #: The Via values responses go upstream with (the request's, marked), made at the first response
        #: forwarded.
        self.upstream_vias = upstream_vias
        #: What log lines name once ``request`` is gone: its Call-ID, From value and Request-URI.
        self.call_id = call_id
        self.from_ = from_
        self.uri = uri
        #: The caller's addresses of the call a 2xx of this INVITE opened (another 2xx, with another To tag, opens
        #: its dialog with the same).
        self.caller = caller


class ClientTx(Timed):
    """Downstream side of a proxied request: the request as forwarded (states of the SDK's client transactions,
    figures 5 and 6 with RFC 6026's Accepted; Calling for an INVITE, Trying for the others). A class with its own
    ``__init__``, as :class:`ServerTx`."""

    __slots__ = ("ack_bytes", "added_2xx_headers", "branch", "cancel_pending", "cancelled", "dest",
                 "got_provisional", "interval", "method", "request", "request_bytes", "revived", "routes",
                 "server", "state", "uri", "via")

    def __init__(self, branch: str, method: str, request: Request | None, dest: Address,
                 state: TransactionState = TransactionState.CALLING, request_bytes: bytes | None = None,
                 ack_bytes: bytes | None = None, server: ServerTx | None = None,
                 timers: dict[Input, float] | None = None, heap_at: float = NO_ENTRY, interval: float = 0.0,
                 got_provisional: bool = False, cancel_pending: bool = False, cancelled: bool = False,
                 added_2xx_headers: dict[str, list[tuple[str, str]]] | None = None, uri: str = "", via: str = "",
                 routes: tuple[str, ...] = (), revived: bool = False) -> None:
        self.branch = branch
        self.method = method
        #: The request as forwarded when it was serialised; None when it went out spliced from the bytes received
        #: (:func:`forwarded_request` rebuilds what a CANCEL or an ACK needs of it), and from its final response on.
        self.request = request
        self.dest = dest
        self.state = state
        #: Bytes of the forwarded request while Timer A/E may retransmit them.
        self.request_bytes = request_bytes
        #: Bytes of the ACK we sent for a non-2xx final (re-sent when the final is retransmitted).
        self.ack_bytes = ack_bytes
        self.server = server
        self.timers = {} if timers is None else timers
        #: The deadline of its one entry in the proxy's TimerHeap (NO_ENTRY while it has none).
        self.heap_at = heap_at
        self.interval = interval
        self.got_provisional = got_provisional
        #: A CANCEL arrived before any provisional: send it as soon as one arrives (RFC 3261 section 9.1).
        self.cancel_pending = cancel_pending
        self.cancelled = cancelled
        #: Headers added to a forwarded 2xx, cached per To tag so retransmissions get identical ones (made at the
        #: first 2xx: most forwarded requests never get one, and an empty dict per transaction is one more object
        #: for the collector to walk while the transaction waits out its timers).
        self.added_2xx_headers = added_2xx_headers
        #: The Request-URI, our Via and the Route values (a player's Path) the request was forwarded with.
        self.uri = uri
        self.via = via
        self.routes = routes
        #: Brought back from its ended entry (:meth:`TransactionSide._revive`), whose expiry is queued already.
        self.revived = revived


# -- ended transactions ----------------------------------------------------------------------------------------
#
# From its final response on (RFC 3261 section 17: Completed, Confirmed, RFC 6026's Accepted) a transaction only
# answers retransmissions and waits out its last timer (J, L, M: 64*T1; I, K: T4; D: 32 s). At 1,000 calls/s some
# 60,000 of them wait, and as objects (the dataclasses, their timer dicts keyed by Input members, their heap
# entries) every collection of the cyclic collector walked them. Ended, each is one tuple of strings, numbers
# and bytes in ``ended_server`` / ``ended_client`` (untracked by the collector from the first collection that
# sees it), and its expiry one such tuple in a first-in first-out queue per timer duration (no heap).

#: What an ended transaction is: a non-INVITE's Completed (its final answers a retransmitted request; a client
#: INVITE's Completed keeps the ACK of the non-2xx instead), an INVITE's Accepted or Confirmed.
ENDED_COMPLETED: Final = 0
ENDED_ACCEPTED: Final = 1
ENDED_CONFIRMED: Final = 2

#: An ended server transaction: (kind, deadline, source host, source port, the final answering a retransmission
#: or None). Flat: a tuple is untracked by a collection only once what it holds is, which may take a collection
#: per level.
EndedServer = tuple[int, float, str, int, bytes | None]
#: An ended client transaction: (kind, deadline, destination host and port, the ACK of a non-2xx final, True for
#: an Accepted INVITE (else None), the INVITE's offer (the policy's facts for a fork's 2xx: the bytes received,
#: shared, not copied)); an Accepted INVITE's also has after these, flattened (:func:`_accepted_flat`), what a
#: further 2xx goes upstream with (its ServerTx's key, source, final status, upstream Vias, log names, caller
#: addresses, policy facts (CallInfo's fields but ``invite`` and ``offer``), the headers added per To tag; its own
#: Request-URI, Via and Route set), see :meth:`TransactionSide._revive`. One tuple of strings, numbers and bytes,
#: which a collection untracks the first time it sees it, where nested tuples would stay tracked for a collection
#: per level.
EndedClient = tuple[Any, ...]

_CALL_FIELDS = tuple(f.name for f in fields(CallInfo) if f.name not in ("invite", "offer"))
#: CallInfo's fields but ``invite`` (gone from the final response on) and ``offer`` (kept beside, not copied), as
#: one tuple.
_call_values: Final = attrgetter(*_CALL_FIELDS)
#: Written in an Accepted INVITE's flattened facts before the host and port of a policy fact that is an address.
_ADDRESS: Final = object()


def _accepted_flat(ctx: ClientTx, tx: ServerTx) -> list[Any] | None:
    """The facts of :data:`Accepted` of ``ctx`` and ``tx`` flattened after seven places for the ended entry's first
    fields: each sequence as its length and its items, an address as its host and port. None when a policy's
    header is not two strings (it might hold an object the collector walks: the transaction then stays an
    object). :meth:`TransactionSide._revive` reads it back. (Flat, built by list displays: ~10k instructions
    compiled where ``marshal.dumps`` of the nested tuple took ~21k, encoding each string; a nested tuple would
    stay tracked for a collection per level.)"""
    key = tx.key
    source = tx.source
    vias = upstream_vias(tx)
    routes = ctx.routes
    flat: list[Any] = [None, None, None, None, None, None, None, len(key), *key, source[0], source[1],
                       tx.final_status, len(vias), *vias, tx.call_id, tx.from_, tx.uri, ctx.uri, ctx.via,
                       len(routes), *routes]
    caller = tx.caller
    if caller is None:
        flat.append(-1)
    else:
        flat.append(len(caller))
        # (appended one by one: ``flat += (host, port)`` made a tuple to concatenate, some 200 instructions each)
        for host, port in caller:
            flat.append(host)
            flat.append(port)
    call = tx.call
    if call is None:
        flat.append(False)
    else:
        flat.append(True)
        for value in _call_values(call):
            if type(value) is tuple:  # (an address: the only tuples of CallInfo's)
                host, port = value
                flat.append(_ADDRESS)
                flat.append(host)
                flat.append(port)
            else:
                flat.append(value)
    added = ctx.added_2xx_headers
    flat.append(0 if added is None else len(added))
    if added is not None:
        for tag, extra in added.items():
            flat.append(tag)
            flat.append(len(extra))
            # (each pair read as an object: a compiled unpacking of a tuple[str, str] would raise on another type)
            for pair in cast("list[object]", extra):
                if type(pair) is not tuple:
                    return None
                item = cast("tuple[object, ...]", pair)
                if len(item) != 2 or type(item[0]) is not str or type(item[1]) is not str:
                    return None
                flat.append(item[0])
                flat.append(item[1])
    return flat


def forwarded_request(ctx: ClientTx) -> Request:
    """The request of ``ctx`` as forwarded, as far as a CANCEL (section 9.1) or the ACK of a non-2xx (section
    17.1.1.3) copies it: Request-URI, our Via, the Route set as sent, From, To, Call-ID, CSeq."""
    if ctx.request is not None:
        return ctx.request
    tx = ctx.server
    # A pending client transaction has its server transaction, whose final is not sent yet (internal invariant:
    # :meth:`TransactionSide._finished` keeps the request on the client side otherwise).
    assert tx is not None and tx.request is not None
    original = tx.request.headers
    # Spliced only without a route set to edit: the Path put on it, else the Route lines it came with.
    routes = ctx.routes or tuple(original.get_all("Route"))
    headers = Headers([("Via", ctx.via), *(("Route", value) for value in routes)])
    for name in ("From", "To", "Call-ID", "CSeq"):
        headers.add(name, original.get(name) or "")
    return Request(ctx.method, ctx.uri, headers)



def restore_vias(headers: Headers, tx: ServerTx) -> None:
    """Section 16.7 step 3 under topology hiding: a response goes upstream with the Vias of the request as it
    reached us (marked with where it came from: :func:`upstream_vias`), not with what came back from
    downstream: the request may have gone on with our Via alone (:meth:`server.proxy.ProxyCore._push_via`), and
    a downstream party cannot make us send other Vias upstream."""
    values = upstream_vias(tx)
    headers.set("Via", values[-1])  # where the first Via was; then the others above it, in order
    for value in reversed(values[:-1]):
        headers.insert_first("Via", value)


@dataclass(slots=True)
class ProxyStats:
    requests: int = 0
    forwarded: int = 0
    stateless_acks: int = 0
    responses_forwarded: int = 0
    stray_responses: int = 0
    stray_forwarded: int = 0
    rejected: int = 0
    challenges: int = 0
    auth_failures: int = 0
    retransmissions_absorbed: int = 0
    timeouts: int = 0
    identities_signed: int = 0
    #: Decisions asked of a separate policy process (the message waited, the loop did not).
    policy_queries: int = 0
    #: ACKs neither absorbed by a transaction nor relayable (mostly the ACK of a stateless 407).
    acks_dropped: int = 0
    #: Calls seen set up (2xx forwarded), refused (final >= 300 sent upstream) and ended (BYE 2xx) here.
    sessions_set_up: int = 0
    sessions_refused: int = 0
    sessions_ended: int = 0


sessions: Final = logging.getLogger("server.sessions")
#: logging's own memo of whether ``sessions`` logs a level (level -> bool), which logging empties whenever a level
#: changes anywhere (``setLevel``, ``logging.disable``; the control's log-level, a reload): read natively by
#: :func:`_sessions_info` where ``isEnabledFor`` is a call into the interpreter (a call's 2xx and BYE each). Another
#: logging without it: an empty dict, and each check asks ``isEnabledFor``.
_SESSIONS_LEVELS: Final[dict[int, bool]] = getattr(sessions, "_cache", {})
_INFO: Final = logging.INFO


def _sessions_info() -> bool:
    """``sessions.isEnabledFor(logging.INFO)``, from logging's memo when it has the answer. (A logger disabled
    after the memo said yes: its ``info`` checks again and writes nothing.)"""
    on = _SESSIONS_LEVELS.get(_INFO)
    return sessions.isEnabledFor(_INFO) if on is None else on


def _party(value: str | None) -> str:
    """The URI of a From/To value, for a log line (no display name, no tag)."""
    if not value:
        return "-"
    start, end = value.find("<"), value.find(">")
    return value[start + 1:end] if 0 <= start < end else value.split(";", 1)[0].strip()


def _refuser(response: Response) -> str:
    """Who refused: the agent of the response's Warning (RFC 3261 section 20.43), else "downstream"."""
    warning = response.headers.get("Warning")
    parts = warning.split() if warning else []
    return parts[1] if len(parts) >= 2 else "downstream"


def _log_refused(tx: ServerTx, status: int, data: bytes, refused_by: str) -> None:
    if status in (401, 407):
        return  # the routine first half of every call
    line_end = data.find(b"\r\n")
    reason = data[12:line_end if line_end > 0 else 80].decode("utf-8", "replace")
    call_id, caller, uri = log_names(tx)
    sessions.info('session refused call-id=%s caller=%s callee=%s status=%d reason="%s" by=%s', call_id, caller,
                  uri, status, reason, refused_by)


#: The lines of Identity (long and compact form) a 2xx of a player registered here loses (see
#: :meth:`TransactionSide._answer_identity`).
_IDENTITY = (b"identity", b"y")


def _upstream_bytes(response: Response, tx: ServerTx, extra: list[tuple[str, str]] | None,
                    drop_identity: bool = False) -> bytes:
    """A downstream response as passed upstream: with the Vias its request came with (:func:`restore_vias`),
    ``extra`` added, its Identity dropped when ``drop_identity``. Spliced from the bytes it came in when they are
    at hand (:mod:`server.splice`), else serialised."""
    raw = response.raw_unchanged()
    if raw is not None:
        spans = response.headers._cache.get(ANSWER_SPANS)
        if spans is not None:
            # Read by read_answer: a plain head whose Via lines it noted, and no Identity line (not of its shape).
            return with_vias_at(raw, spans[0], spans[1], upstream_vias(tx), extra or ())
        data = _upstream_spliced(raw, tx, extra, drop_identity)
        if data is not None:
            return data
    headers = response.headers
    restore_vias(headers, tx)
    if drop_identity:
        headers.remove("Identity")
    if extra:
        for name, value in extra:
            headers.add(name, value)
    return response.to_bytes()


def _upstream_spliced(raw: bytes, tx: ServerTx, extra: list[tuple[str, str]] | None,
                      drop_identity: bool = False) -> bytes | None:
    """:func:`_upstream_bytes` as byte edits of the response ``raw`` (:func:`~server.splice.with_vias`); None
    when it is not in the shape splicing handles."""
    return with_vias(raw, upstream_vias(tx), extra or (), _IDENTITY if drop_identity else ())


def upstream_vias(tx: ServerTx) -> list[str]:
    """The Via values the responses of ``tx`` go upstream with (its request's, the top one marked), made once per
    transaction: its 100, 180 and final all go up with them."""
    vias = tx.upstream_vias
    if vias is None:
        # Made at the latest when the request is let go (:meth:`TransactionSide._finished`).
        assert tx.request is not None
        vias = tx.upstream_vias = marked_vias(tx.request, tx.source)
    return vias


def marked_vias(request: Request, source: Address) -> list[str]:
    """The Via values (one per line) of ``request`` with the top one marked by :func:`mark_received`: what every
    response to it goes upstream with."""
    values = request.headers.get_all("Via")
    via = request.top_via
    first = values[0]
    # A top line of one Via ending in a bare ``;rport`` (a player's, nearly always) is marked whatever its host:
    # that Via has an rport parameter, which the test below would read from the parameters (a scan).
    if ("," in first or not first.endswith(";rport")) and via.host == source[0] and via.rport is None:
        return values
    if "," not in first:
        return [marked_via(via, first, source), *values[1:]]
    parts = split_header_values(first)
    rest = [", ".join(parts[1:])] if len(parts) > 1 else []
    return [marked_via(via, parts[0], source), *rest, *values[1:]]


#: The fields a response copies from its request (RFC 3261 section 8.2.6.2), by their keys in a header list.
COPIED_FIELDS: Final = frozenset(("via", "from", "to", "call-id", "cseq"))


def trying_bytes(tx: ServerTx) -> bytes:
    """The 100 Trying of the INVITE of ``tx`` (section 16.2): the bytes of ``answer_bytes(tx.request, tx.source,
    100)``, written with the Via values the transaction's responses go up with (:func:`upstream_vias`, made here
    once for its 100, its provisionals and its final alike) in one pass over the request's fields."""
    request = tx.request
    assert request is not None  # kept until the transaction's final (internal invariant)
    vias = upstream_vias(tx)
    lines = ["SIP/2.0 100 Trying"]
    append = lines.append
    first = True
    for key, name, value in request.headers._items:
        if key not in COPIED_FIELDS:
            continue
        if first and key == "via":
            first = False
            # Marked (:func:`marked_vias`) exactly when the first value differs from the top line: unmarked they
            # are the lines themselves, and marking always adds to the text.
            if vias[0] != value:
                # As mark_received: the top value replaced where it is, the rest of its line after it.
                append(f"Via: {vias[0]}")
                if "," in value and len(split_header_values(value)) > 1:
                    append(f"{name}: {vias[1]}")
                continue
        append(f"{name}: {value}")
    append("Content-Length: 0\r\n\r\n")
    return "\r\n".join(lines).encode()


def answer_bytes(request: Request, source: Address, status: int, reason: str | None = None, *,
                 to_tag: str | None = None, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A response of the proxy's own to ``request`` (from ``source``): ``response_for``, its top Via marked
    (:func:`mark_received`), serialised. (Cutting it from the request's bytes instead was measured: no cheaper,
    the parsed header list is at hand.)"""
    response = response_for(request, status, reason, to_tag=to_tag, extra=extra)
    mark_received(response.headers, request.top_via, source)
    return response.to_bytes()


def _fill_rport(via_text: str, port: int) -> str:
    """Give the bare ``rport`` parameter of a Via value its port (text level: cheaper than re-serialising)."""
    lower = via_text.lower()
    start = 0
    while True:
        pos = lower.find(";rport", start)
        if pos < 0:
            return f"{via_text};rport={port}"
        end = pos + len(";rport")
        if end == len(via_text) or via_text[end] in "; \t":
            return f"{via_text[:end]}={port}{via_text[end:]}"
        start = end


def mark_received(headers: Headers, via: Via, source: Address) -> None:
    """Record in the top Via of ``headers`` where the request with top Via ``via`` really came from:
    ``received`` (RFC 3261 section 18.2.1) and the port in ``rport`` (RFC 3581 section 4).

    Applied to the copy a proxy forwards and to the server's own responses, never to the received request: editing
    its headers would drop every header the parser already parsed (re-parsing them cost 9% of the CPU per call).
    """
    if via.host == source[0] and via.rport is None:
        return
    # The top Via replaced where it is (one list edit), not removed and inserted again.
    line = headers.get("Via")
    if line is None:
        headers.insert_first("Via", marked_via(via, str(via), source))
        return
    text = split_header_values(line)[0] if "," in line else line
    headers.replace_first("Via", marked_via(via, text, source))


def marked_via(via: Via, text: str, source: Address) -> str:
    """The text ``text`` of the Via ``via`` with ``received``/``rport`` noted (see :func:`mark_received`)."""
    if text.endswith(";rport"):
        lower = text.lower()
        if lower.count("rport") == 1 and "received" not in lower:
            # The usual shape: the one rport is the bare flag at the end and there is no received (what the
            # general way below makes of it, without reading the parameters).
            if via.host != source[0]:
                return f"{text}={source[1]};received={source[0]}"
            return f"{text}={source[1]}"
    return marked_via_generally(via, text, source)


def marked_via_generally(via: Via, text: str, source: Address) -> str:
    """:func:`marked_via` by the rules of RFC 3261 section 18.2.1 and RFC 3581 section 4 alone, for every shape of
    Via (``marked_via`` writes the usual one without reading its parameters)."""
    rport = via.rport
    if rport is not None:
        # "rport" without a value is the usual form; a value already there is replaced.
        text = str(via.with_param("rport", str(source[1]))) if rport else _fill_rport(text, source[1])
    if via.host != source[0] and via.received is None:
        text = f"{text};received={source[0]}"
    return text


#: Timers that end a server transaction (RFC 3261 17.2.1, 17.2.2; RFC 6026 Timer L).
_SERVER_ENDS = frozenset({_TIMER_H, _TIMER_I, _TIMER_J, _TIMER_L})
#: States of an INVITE client transaction that may still send a CANCEL (section 9.1) or the ACK of a non-2xx.
_INVITE_PENDING: Final = (_CALLING, _PROCEEDING)


def log_names(tx: ServerTx) -> tuple[str, str, str]:
    """The Call-ID, caller (From URI) and Request-URI of ``tx`` for a log line, with its request or after it."""
    request = tx.request
    if request is None:
        return tx.call_id, _party(tx.from_), tx.uri
    return request.call_id, _party(request.headers.get("From")), request.uri


class TransactionSide:
    """Responses, CANCEL and timers of the stateful proxy (see :class:`server.proxy.ProxyCore`)."""

    # Set up by ProxyCore.__init__.
    via_host: str
    domain: str
    via_port: int
    t: TimerSettings
    ids: IdFactory
    hooks: PolicyHooks
    queries: list[PolicyQuery[Any]]
    pending_answers: set[tuple[str, str]]
    server_txs: dict[tuple[str, ...], ServerTx]
    client_txs: dict[tuple[str, str], ClientTx]
    #: Our CANCELs of forwarded INVITEs, by branch: the SDK's non-INVITE client transactions.
    cancels: dict[str, ClientNonInviteTransaction]
    timers: TimerHeap[ServerTx | ClientTx | ClientNonInviteTransaction]
    #: Ended transactions (see ENDED_COMPLETED) by the keys of ``server_txs`` and ``client_txs``.
    ended_server: dict[tuple[str, ...], EndedServer]
    ended_client: dict[tuple[str, str], EndedClient]
    #: Their keys (a client's has two parts, a server's four or six) in deadline order, per duration; the few
    #: that come out of order in a heap, with their deadlines.
    _ended_queues: dict[float, deque[tuple[str, ...]]]
    _ended_heap: list[tuple[float, tuple[str, ...]]]
    stats: ProxyStats
    _timeout_64t1: float
    _instance: str
    #: The start of our Via as :meth:`_via` writes it, up to the branch ("" when the host is not lower case: the
    #: relay path then parses the Via, and compares as handle_response does).
    _via_prefix: str
    #: Signs the Identity of INVITEs from players authenticated here and of 2xx from players registered here.
    identity: IdentitySigner | None

    def _dialog_opened(self, tx: ServerTx, ctx: ClientTx, response: Response, now: float) -> None:
        """Overridden by ProxyCore: an INVITE forwarded here got a 2xx (its in-dialog requests may follow)."""

    def branch_mark(self, body: str, back_to: Address) -> str:
        """Overridden by ProxyCore: the HMAC mark of one of our branches."""
        raise NotImplementedError

    def _via(self, branch: str) -> str:
        # rport (RFC 3581): a player answers to the address the request came from, so one that got it over its
        # TLS flow (RFC 5626 outbound) answers over that flow, not to our UDP port.
        return f"SIP/2.0/UDP {self.via_host}:{self.via_port};branch={branch};rport"

    def _answer(self, tx: ServerTx, status: int, reason: str | None, extra: tuple[tuple[str, str], ...],
                now: float, out: Out) -> None:
        """Send a final response of our own on a server transaction (one without a final yet)."""
        assert tx.request is not None  # let go only with the final response
        self._send_final(tx, answer_bytes(tx.request, tx.source, status, reason, to_tag=self.ids.tag(), extra=extra),
                         status, now, out)

    def _finished(self, tx: ServerTx, vias: bool) -> None:
        """The final response of ``tx`` went out: what it keeps for its remaining life (RFC 3261 section 17.2:
        the response bytes, the key, the deadlines) is all it keeps. The request goes, with the strings its log
        lines name, and the Vias a further 2xx goes up with (``vias``: an INVITE in Accepted). A client side still
        pending (a final of our own sent meanwhile) keeps the request as forwarded, for its CANCEL or ACK."""
        request = tx.request
        if request is None:
            return
        if vias and tx.upstream_vias is None:
            tx.upstream_vias = marked_vias(request, tx.source)
        ctx = tx.client
        if ctx is not None and ctx.request is None and ctx.state in _INVITE_PENDING and ctx.method == "INVITE":
            ctx.request = forwarded_request(ctx)
        tx.call_id = request.call_id
        tx.from_ = request.headers.get("From") or ""
        tx.uri = request.uri
        tx.request = None
        call = tx.call
        if call is not None:
            call.invite = None

    # -- ended transactions --------------------------------------------------------------------------------

    def _ended_at(self, duration: float, key: tuple[str, ...], deadline: float,
                  table: dict[Any, tuple[Any, ...]]) -> None:
        """Queue the expiry of an ended transaction (in ``table`` already): last in the queue of its duration,
        where nearly every one goes (deadlines come in order), else in a heap (one whose final waited for the
        policy process, a duration changed by a reload)."""
        queue = self._ended_queues.get(duration)
        if queue is None:
            queue = self._ended_queues[duration] = deque()
        if queue:
            last = queue[-1]
            # (_ended_table's choice, without the call)
            of_last: dict[Any, tuple[Any, ...]] = self.ended_client if len(last) == 2 else self.ended_server
            ended = of_last.get(last)
            if ended is not None and ended[1] > deadline:
                heapq.heappush(self._ended_heap, (deadline, key))
                return
        queue.append(key)

    def _server_ended(self, tx: ServerTx, kind: int, duration: float, now: float) -> bool:
        """``tx`` (its final sent, no timer armed) waits out its last timer, ``duration`` long, as an entry of
        ``ended_server``; False when it stays an object (the caller arms the timer)."""
        key = tx.key
        deadline = now + duration
        if self.server_txs.get(key) is not tx or tx.timers:
            return False
        del self.server_txs[key]
        source = tx.source
        self.ended_server[key] = (kind, deadline, source[0], source[1], tx.last_response)
        self._ended_at(duration, key, deadline, self.ended_server)
        tx.client = None  # (as _end_server: no cycle left to the collector)
        return True

    def _client_ended(self, ctx: ClientTx, kind: int, duration: float, deadline: float, ack: bytes | None,
                      accepted: list[Any] | None = None, offer: bytes | None = None) -> bool:
        """``ctx`` (its final received, no other timer armed) waits out its last timer until ``deadline`` as an
        entry of ``ended_client`` (``accepted``: an Accepted INVITE's :data:`Accepted` flattened after seven places
        for the entry's first fields); False when it stays an object (the caller arms the timer)."""
        key = (ctx.branch, ctx.method)
        if self.client_txs.get(key) is not ctx:
            return False
        del self.client_txs[key]
        dest = ctx.dest
        if accepted is None:
            self.ended_client[key] = (kind, deadline, dest[0], dest[1], ack, None, offer)
        else:
            # (the seven places :meth:`_accepted_ended` left before the flattened facts, filled)
            accepted[0] = kind
            accepted[1] = deadline
            accepted[2] = dest[0]
            accepted[3] = dest[1]
            accepted[4] = ack
            accepted[5] = True
            accepted[6] = offer
            self.ended_client[key] = tuple(accepted)
        if ctx.revived:
            # Its key may have left its queue while it was an object again.
            heapq.heappush(self._ended_heap, (deadline, key))
        else:
            self._ended_at(duration, key, deadline, self.ended_client)
        # Its heap entry (Timer A or E, at the latest T1 after it was sent) still refers to it: it goes then.
        ctx.timers.clear()
        ctx.state = _TERMINATED
        ctx.request_bytes = None
        ctx.ack_bytes = None
        tx = ctx.server
        ctx.server = None
        if tx is not None and tx.client is ctx:
            tx.client = None
        return True

    def _accepted_ended(self, ctx: ClientTx, tx: ServerTx) -> None:
        """An INVITE whose first 2xx (with a To tag) went upstream: its client side, Accepted (Timer M), becomes
        an entry of ``ended_client`` with what a further 2xx needs (:meth:`_revive`). Not while a 2xx of it waits
        for the policy (its headers are not there yet), nor when the server side has a final of its own."""
        if ctx.state is not _ACCEPTED or tx.state is not _ACCEPTED or len(ctx.timers) != 1:
            return
        deadline = ctx.timers.get(_TIMER_M)
        if deadline is None or (self.pending_answers and any(branch == ctx.branch
                                                             for branch, _ in self.pending_answers)):
            return
        flat = _accepted_flat(ctx, tx)
        if flat is None:
            return
        call = tx.call
        self._client_ended(ctx, ENDED_ACCEPTED, self._timeout_64t1, deadline, None, flat,
                           None if call is None else call.offer)

    def _revive(self, key: tuple[str, str], ended: EndedClient) -> ClientTx:
        """The INVITE client transaction of ``key``, Accepted, as an object again (with its server side) for a
        further 2xx: as it was when it ended. :meth:`_ended_response` ends it again after."""
        deadline, host, port, packed, offer = ended[1], ended[2], ended[3], ended[5], ended[6]
        assert packed is not None  # only an Accepted INVITE is revived (internal invariant)
        # (read back in the order _accepted_flat wrote it)
        at = 8 + ended[7]
        skey = ended[8:at]
        source = (ended[at], ended[at + 1])
        final_status = ended[at + 2]
        count = ended[at + 3]
        at += 4
        vias = ended[at:at + count]
        at += count
        call_id, from_, uri, ctx_uri, ctx_via, count = ended[at:at + 6]
        at += 6
        routes = ended[at:at + count]
        at += count
        count = ended[at]
        at += 1
        caller: tuple[Address, ...] | None = None
        if count >= 0:
            caller = tuple([(ended[i], ended[i + 1]) for i in range(at, at + 2 * count, 2)])
            at += 2 * count
        call: list[Any] | None = None
        if ended[at]:
            at += 1
            call = []
            for _ in _CALL_FIELDS:
                value = ended[at]
                if value is _ADDRESS:
                    call.append((ended[at + 1], ended[at + 2]))
                    at += 3
                else:
                    call.append(value)
                    at += 1
        else:
            at += 1
        added: list[tuple[str, list[tuple[str, str]]]] = []
        tags = ended[at]
        at += 1
        for _ in range(tags):
            tag, count = ended[at], ended[at + 1]
            at += 2
            added.append((tag, [(ended[i], ended[i + 1]) for i in range(at, at + 2 * count, 2)]))
            at += 2 * count
        tx = ServerTx(skey, "INVITE", None, source, _ACCEPTED, final_status=final_status,
                      call=None if call is None else CallInfo(**{**dict(zip(_CALL_FIELDS, call)), "offer": offer},
                                                              invite=None),
                      upstream_vias=list(vias), call_id=call_id, from_=from_, uri=uri, caller=caller)
        ctx = ClientTx(key[0], "INVITE", None, (host, port), _ACCEPTED, server=tx, got_provisional=True,
                       added_2xx_headers=dict(added) or None, uri=ctx_uri,
                       via=ctx_via, routes=routes, revived=True)
        del self.ended_client[key]
        self.client_txs[key] = ctx
        self.timers.arm(ctx, _TIMER_M, deadline)
        return ctx

    def _ended_response(self, key: tuple[str, str], ended: EndedClient, response: Response, now: float,
                        out: Out) -> None:
        """A response to an ended client transaction: a 2xx of an Accepted INVITE goes upstream (RFC 6026), a
        retransmitted non-2xx final gets the ACK again (section 17.1.1.3), anything else is absorbed."""
        status = response.status
        if ended[5] is not None:
            if 200 <= status < 300:
                ctx = self._revive(key, ended)
                tx = ctx.server
                assert tx is not None
                self._forward_2xx(ctx, tx, response, now, out)
                self._accepted_ended(ctx, tx)
            return
        ack = ended[4]
        if ack is not None and status >= 300:
            out.append((ack, (ended[2], ended[3])))

    def _ended_table(self, key: tuple[str, ...]) -> dict[Any, tuple[Any, ...]]:
        """The table of the ended transaction of ``key``: a client's has two parts, a server's four or six."""
        return self.ended_client if len(key) == 2 else self.ended_server

    def ended_deadline(self) -> float | None:
        """The earliest expiry of an ended transaction, or None."""
        heap = self._ended_heap
        first = heap[0][0] if heap else None
        for queue in self._ended_queues.values():
            while queue:
                key = queue[0]
                ended = self._ended_table(key).get(key)
                if ended is None:
                    queue.popleft()  # revived, or ended by the heap
                    continue
                if first is None or ended[1] < first:
                    first = ended[1]
                break
        return first

    def _expire_ended(self, now: float) -> None:
        """End the ended transactions whose last timer ran out by ``now`` (one revived meanwhile is not here)."""
        heap = self._ended_heap
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            table = self._ended_table(key)
            ended = table.get(key)
            if ended is not None and ended[1] == deadline:
                del table[key]
        for queue in self._ended_queues.values():
            while queue:
                key = queue[0]
                table = self._ended_table(key)
                ended = table.get(key)
                if ended is not None:
                    if ended[1] > now:
                        break
                    del table[key]
                queue.popleft()

    def _send_final(self, tx: ServerTx, data: bytes, status: int, now: float, out: Out, *,
                    refused_by: str | None = None) -> None:
        if tx.final_status == 0:
            # Counted always; the session lines are built only when INFO is on (the hot path at WARNING).
            if tx.method == "INVITE" and status >= 300:
                if status not in (401, 407):
                    self.stats.sessions_refused += 1
                if _sessions_info():
                    _log_refused(tx, status, data, refused_by or self.domain)
            elif tx.method == "BYE" and status < 300:
                self.stats.sessions_ended += 1
                if _sessions_info():
                    call_id, caller, _ = log_names(tx)
                    sessions.info("session ended call-id=%s by=%s status=%d (BYE through this server)",
                                  call_id, caller, status)
        tx.final_status = status
        tx.last_response = data
        out.append((data, tx.source))
        t1 = self.t.t1_s
        invite = tx.method == "INVITE"
        self._finished(tx, invite and status < 300)
        if invite:
            if 200 <= status < 300:
                # RFC 6026: Accepted; INVITE retransmissions absorbed until Timer L.
                tx.state = _ACCEPTED
                tx.last_response = None
                if not self._server_ended(tx, ENDED_ACCEPTED, self._timeout_64t1, now):
                    self.timers.arm(tx, _TIMER_L, now + self._timeout_64t1)
            else:
                tx.state = _COMPLETED
                tx.g_interval = t1
                self.timers.arm(tx, _TIMER_G, now + t1)
                self.timers.arm(tx, _TIMER_H, now + self._timeout_64t1)
        else:
            tx.state = _COMPLETED
            if not self._server_ended(tx, ENDED_COMPLETED, self._timeout_64t1, now):
                self.timers.arm(tx, _TIMER_J, now + self._timeout_64t1)

    def _end_server(self, tx: ServerTx) -> None:
        tx.state = _TERMINATED
        tx.timers.clear()
        tx.last_response = None  # its client side may hold it until Timer D, K or M
        # The two sides refer to each other: the first to end lets go of the other, so reference counting frees
        # them (a cycle would wait for the cyclic collector, which walks every transaction still alive).
        tx.client = None
        if self.server_txs.get(tx.key) is tx:
            del self.server_txs[tx.key]

    def _end_client(self, ctx: ClientTx) -> None:
        ctx.state = _TERMINATED
        ctx.timers.clear()
        ctx.request_bytes = None
        ctx.ack_bytes = None
        ctx.server = None  # (as in _end_server)
        key = (ctx.branch, ctx.method)
        if self.client_txs.get(key) is ctx:
            del self.client_txs[key]

    def _send_cancel(self, ctx: ClientTx, now: float, out: Out) -> None:
        """CANCEL our forwarded INVITE (section 9.1: same Request-URI, Call-ID, To, From, CSeq number, Via)."""
        if ctx.cancelled:
            return
        ctx.cancelled = True
        # The INVITE as we forwarded it: our Via (this branch) on top, Route set as sent.
        cancel = build_cancel(forwarded_request(ctx))
        t = self.t
        # Its own non-INVITE client transaction (section 9.1), the SDK's, with its timers in our heap.
        cc = ClientNonInviteTransaction(cancel, now, destination=ctx.dest,
                                        config=TimerConfig(t1=t.t1_s, t2=t.t2_s, t4=t.t4_s, c=t.timer_c_s))
        cc.use_heap(self.timers)
        self.cancels[ctx.branch] = cc
        self._cancel_output(cc, out)

    def _cancel_output(self, cc: ClientNonInviteTransaction, out: Out) -> None:
        """What one of our CANCEL transactions produced: its datagrams go out, its end removes it (its responses
        are for us alone: nothing goes upstream)."""
        out.extend(cc.datagrams_to_send())
        for event in cc.events():
            if isinstance(event, TransactionTimedOut):
                self.stats.timeouts += 1
                log.info("proxy: CANCEL %s to %s:%d timed out", cc.request.uri, *cc.destination)
            elif isinstance(event, TransactionTerminated) and self.cancels.get(event.key.branch) is cc:
                del self.cancels[event.key.branch]

    # -- responses -------------------------------------------------------------------------------------------

    def handle_response(self, response: Response, source: Address, now: float, out: Out) -> bool:
        """A response from downstream; False if it matches none of our client transactions."""
        via = response.top_via
        branch = via.branch
        if branch is None or via.host.lower() != self.via_host or via.port != self.via_port:
            self.stats.stray_responses += 1
            return False
        method = response.cseq.method
        if method == "CANCEL":
            cc = self.cancels.get(branch)
            if cc is None:
                self.stats.stray_responses += 1
                return False
            cc.receive_response(response, now)
            self._cancel_output(cc, out)
            return True
        key = (branch, method)
        ctx = self.client_txs.get(key)
        if ctx is None:
            ended = self.ended_client.get(key)
            if ended is None:
                self.stats.stray_responses += 1
                return False
            self._ended_response(key, ended, response, now, out)
            return True
        status = response.status
        if ctx.method == "INVITE":
            self._invite_response(ctx, response, status, now, out)
        else:
            self._non_invite_response(ctx, response, status, now, out)
        return True

    def forward_stray(self, response: Response, source: Address, out: Out) -> bool:
        """Forward a response that matched no transaction statelessly by its Via (RFC 3261 sections 16.7, 16.11,
        18.2.2); False (the caller drops it) when the sanity checks fail."""
        vias = response.vias
        if len(vias) < 2:
            return False  # no Via left after ours: it was for us (section 16.11), and no transaction wants it
        top = vias[0]
        # Section 18.1.2: a response whose top Via is not ours is dropped.
        if top.host.lower() != self.via_host or top.port != self.via_port:
            return False
        nxt = vias[1]
        host = (nxt.received or nxt.host).strip("[]")
        rport = nxt.rport
        port = int(rport) if rport and rport.isdigit() else (nxt.port or 5060)
        if not is_ip_literal(host) or not 0 < port < 65536:
            return False  # we never resolve names on the response path
        # Our branches end in an HMAC over the branch and the address its responses go back to (see
        # ProxyCore._new_branch): a Via naming us with a branch copied from elsewhere, or with another next hop,
        # does not make us send anything anywhere.
        body, dot, mark = (top.branch or "")[len(BRANCH_MAGIC_COOKIE):].rpartition(".")
        if not dot or not hmac.compare_digest(mark, self.branch_mark(body, (host, port))):
            return False
        if host == self.via_host and port == self.via_port:
            return False  # to ourselves: a loop
        response.headers.remove_first("Via")
        self.stats.stray_forwarded += 1
        out.append((response.to_bytes(), (host, port)))
        log.debug("proxy: stray %d from %s:%d forwarded by Via to %s:%d", response.status, source[0], source[1],
                  host, port)
        return True

    def _forward_up(self, tx: ServerTx, response: Response, extra: list[tuple[str, str]] | None, out: Out,
                    drop_identity: bool = False) -> bytes:
        data = _upstream_bytes(response, tx, extra, drop_identity)
        self.stats.responses_forwarded += 1
        out.append((data, tx.source))
        return data

    def _invite_response(self, ctx: ClientTx, response: Response, status: int, now: float, out: Out) -> None:
        tx = ctx.server
        assert tx is not None  # a forwarded INVITE always has its server transaction (internal invariant)
        state = ctx.state
        if state in (_CALLING, _PROCEEDING):
            if status < 200:
                self._invite_provisional(ctx, now, out)
                if status != 100 and tx.final_status == 0:
                    tx.last_response = self._forward_up(tx, response, None, out)
                return
            ctx.timers.clear()  # A and B (Calling) or C (Proceeding): all it has armed
            ctx.request_bytes = None
            if status < 300:
                ctx.request = None  # no CANCEL and no ACK of ours any more (the 2xx's ACK is end to end)
                ctx.state = _ACCEPTED
                self.timers.arm(ctx, _TIMER_M, now + self._timeout_64t1)
                self._forward_2xx(ctx, tx, response, now, out)
                return
            # Non-2xx final: ACK it hop by hop (section 17.1.1.3) and pass it upstream.
            ctx.state = _COMPLETED
            ack = ctx.ack_bytes = self._ack_for(ctx, response)
            ctx.request = None  # its ACK is made: the bytes answer a retransmitted final
            out.append((ack, ctx.dest))
            if not self._client_ended(ctx, ENDED_COMPLETED, 32.0, now + 32.0, ack, None):
                self.timers.arm(ctx, _TIMER_D, now + 32.0)
            if tx.call is not None:
                self.hooks.invite_failed(tx.call, status, now)
            if tx.final_status == 0:
                self._forward_final(tx, response, now, out)
            return
        if state is _ACCEPTED:
            if 200 <= status < 300:
                self._forward_2xx(ctx, tx, response, now, out)  # retransmission or another 2xx: forward all
            return
        if state is _COMPLETED and status >= 300 and ctx.ack_bytes is not None:
            out.append((ctx.ack_bytes, ctx.dest))  # the final was retransmitted: our ACK was lost

    def _invite_provisional(self, ctx: ClientTx, now: float, out: Out) -> None:
        """A provisional response to our INVITE in Calling or Proceeding (before it goes upstream)."""
        # Figure 5 (as the SDK's INVITE client table): Timers A and B belong to Calling; Timer C governs from the
        # first provisional on. Calling has A and B armed, Proceeding C, which is armed again below: one clear
        # stops them (TimerHeap.stop only takes a timer out of the dict).
        ctx.timers.clear()
        ctx.state = _PROCEEDING
        ctx.got_provisional = True
        ctx.request_bytes = None
        # Timer C (section 16.6 step 11), reset by every provisional response (section 16.7 step 2).
        self.timers.arm(ctx, _TIMER_C, now + self.t.timer_c_s)
        if ctx.cancel_pending:
            self._send_cancel(ctx, now, out)

    def relay_response(self, head: Head, now: float, out: Out) -> bool:
        """The relay path of a response (read by :func:`server.splice.read_head`, never parsed in full): a
        provisional response to a forwarded INVITE, or any response to a forwarded request other than INVITE
        and CANCEL, whose client transaction is here. As :meth:`handle_response` would do with it, spliced
        upstream; False, with nothing changed, for what the full path must decide (no transaction here, an
        INVITE's final, a head splicing does not handle, a top Via that does not parse)."""
        method = head.cseq.method
        status = head.status
        if method == "CANCEL" or (method == "INVITE" and status >= 200):
            return False
        line = head.via_lines[0]
        prefix = self._via_prefix
        if line.startswith(prefix) and prefix:
            # Our Via as we wrote it (nearly always): the branch is what follows up to the next parameter. Only a
            # branch of one of our client transactions matches below, and every Via line is replaced upstream.
            # (find and one slice: partition makes a tuple and two strings more)
            after = len(prefix)
            semi = line.find(";", after)
            branch: str | None = line[after:semi] if semi >= 0 else line[after:]
        else:
            try:
                via = head.top_via()
            except RemoteProtocolError:
                return False
            branch = via.branch
            if branch is None or via.host.lower() != self.via_host or via.port != self.via_port:
                return False
        key = (branch or "", method)
        ctx = self.client_txs.get(key)
        if ctx is None:
            # Ended: a late provisional or a retransmitted final, absorbed as handle_response does.
            return key in self.ended_client
        tx = ctx.server
        assert tx is not None  # a forwarded request always has its server transaction (internal invariant)
        invite = ctx.method == "INVITE"
        if ctx.state not in ((_CALLING, _PROCEEDING) if invite else (_TRYING, _PROCEEDING)):
            return True  # a late provisional, a retransmitted final: absorbed, as handle_response does
        data: bytes | None = None
        if tx.final_status == 0 and status != 100:
            data = spliced(head, None, upstream_vias(tx), False, None)
        if invite:
            self._invite_provisional(ctx, now, out)
            if data is not None:
                self.stats.responses_forwarded += 1
                out.append((data, tx.source))
                tx.last_response = data
            return True
        if status < 200:
            ctx.state = _PROCEEDING
            ctx.got_provisional = True
            if data is not None:
                tx.state = _PROCEEDING  # figure 8: a provisional sent upstream
                self.stats.responses_forwarded += 1
                out.append((data, tx.source))
                tx.last_response = data
            return True
        self._non_invite_final(ctx, now)
        if data is not None:
            self.stats.responses_forwarded += 1
            self._send_final(tx, data, status, now, out)
        return True

    def _forward_final(self, tx: ServerTx, response: Response, now: float, out: Out) -> None:
        """Pass a downstream final (a non-2xx for an INVITE) upstream as the final of ``tx``, our Via taken off
        (section 16.7 step 3); retransmitted from ``tx`` from then on."""
        data = _upstream_bytes(response, tx, None)
        self.stats.responses_forwarded += 1
        self._send_final(tx, data, response.status, now, out, refused_by=_refuser(response))

    def _forward_2xx(self, ctx: ClientTx, tx: ServerTx, response: Response, now: float, out: Out) -> None:
        to_tag = response.to.tag or ""
        added = ctx.added_2xx_headers
        extra = added.get(to_tag) if added is not None else None
        if extra is None:
            parked = (ctx.branch, to_tag)
            if parked in self.pending_answers:
                return  # a retransmission while the policy decides: the callee sends it again until the ACK
            # The FINAL policy decision, once per (Call-ID, To-tag); retransmissions reuse it.
            asked = self.hooks.answer_received(tx.call, response, now) if tx.call is not None else []
            if isinstance(asked, PolicyQuery):
                self.pending_answers.add(parked)

                def resume(headers: list[tuple[str, str]], at: float, later: Out) -> None:
                    self.pending_answers.discard(parked)
                    self._first_2xx(ctx, tx, response, headers, at, later)

                asked.then = resume
                self.queries.append(asked)
                self.stats.policy_queries += 1
                return
            self._first_2xx(ctx, tx, response, asked, now, out)
            return
        self._send_2xx(tx, response, extra, now, out)

    def _first_2xx(self, ctx: ClientTx, tx: ServerTx, response: Response, extra: list[tuple[str, str]],
                   now: float, out: Out) -> None:
        """The first 2xx with a given To-tag, with the policy's headers: cached for its retransmissions."""
        to_tag = response.to.tag or ""
        if tx.call is not None and tx.call.callee_local:
            extra = [*extra, *self._answer_identity(response)]
        if ctx.added_2xx_headers is None:
            ctx.added_2xx_headers = {}
        ctx.added_2xx_headers[to_tag] = extra
        if tx.method == "INVITE":
            self._dialog_opened(tx, ctx, response, now)
        self.stats.sessions_set_up += 1
        if _sessions_info():
            call_id, caller, uri = log_names(tx)
            sessions.info("session set up call-id=%s caller=%s callee=%s status=%d", call_id, caller, uri,
                          response.status)
        self._send_2xx(tx, response, extra, now, out)
        self._accepted_ended(ctx, tx)

    def _send_2xx(self, tx: ServerTx, response: Response, extra: list[tuple[str, str]], now: float,
                  out: Out) -> None:
        # A 2xx of a player registered here goes up without the Identity it came with (ours is in ``extra``),
        # retransmissions too.
        self._forward_up(tx, response, extra, out, tx.call is not None and tx.call.callee_local)
        if tx.state is _PROCEEDING:
            tx.final_status = response.status
            tx.state = _ACCEPTED
            tx.last_response = None
            self._finished(tx, True)
            if not self._server_ended(tx, ENDED_ACCEPTED, self._timeout_64t1, now):
                self.timers.arm(tx, _TIMER_L, now + self._timeout_64t1)

    def _answer_identity(self, response: Response) -> list[tuple[str, str]]:
        """This project's extension of RFC 8224 to answers: the callee's region signs the 2xx of its player
        (orig = To, dest = From, mky of the answer's channel key); an Identity the player put there is dropped
        (by :meth:`_send_2xx`)."""
        if self.identity is None:
            return []
        self.stats.identities_signed += 1
        return [("Identity", self.identity.sign(response.to.uri.aor, response.from_.uri.aor, response.body))]

    def _ack_for(self, ctx: ClientTx, response: Response) -> bytes:
        # Section 17.1.1.3, built from the INVITE as we forwarded it (our Via, this branch, on top).
        return build_ack_for_non2xx(forwarded_request(ctx), response).to_bytes()

    def _non_invite_response(self, ctx: ClientTx, response: Response, status: int, now: float, out: Out) -> None:
        tx = ctx.server
        assert tx is not None
        if ctx.state not in (_TRYING, _PROCEEDING):
            return  # retransmitted final: absorbed (section 17.1.2.2, Completed)
        if status < 200:
            ctx.state = _PROCEEDING
            ctx.got_provisional = True
            if status != 100 and tx.final_status == 0:
                tx.state = _PROCEEDING  # figure 8: a provisional sent upstream
                tx.last_response = self._forward_up(tx, response, None, out)
            return
        self._non_invite_final(ctx, now)
        if tx.final_status == 0:
            self._forward_final(tx, response, now, out)

    def _non_invite_final(self, ctx: ClientTx, now: float) -> None:
        """A final response to a forwarded non-INVITE in Trying or Proceeding (before it goes upstream)."""
        ctx.state = _COMPLETED
        ctx.request_bytes = None
        ctx.request = None
        ctx.timers.clear()  # E and F: all that Trying and Proceeding arm
        t4 = self.t.t4_s
        if not self._client_ended(ctx, ENDED_COMPLETED, t4, now + t4, None, None):
            self.timers.arm(ctx, _TIMER_K, now + t4)

    # -- timers ----------------------------------------------------------------------------------------------

    def handle_timer(self, now: float, out: Out) -> None:
        self._expire_ended(now)
        timers = self.timers
        while (due := timers.pop_due(now)) is not None:
            tx, timer = due
            if isinstance(tx, ClientTx):
                self._client_timer(tx, timer, now, out)
            elif isinstance(tx, ServerTx):
                self._server_timer(tx, timer, now, out)
            else:
                tx.fire(timer, now)
                self._cancel_output(tx, out)

    def _client_timer(self, ctx: ClientTx, timer: Input, now: float, out: Out) -> None:
        t = self.t
        if timer is _TIMER_A and ctx.state is _CALLING and ctx.request_bytes is not None:
            out.append((ctx.request_bytes, ctx.dest))
            ctx.interval *= 2
            self.timers.arm(ctx, _TIMER_A, now + ctx.interval)
        elif timer is _TIMER_E and ctx.state in (_TRYING, _PROCEEDING) and ctx.request_bytes:
            out.append((ctx.request_bytes, ctx.dest))
            ctx.interval = t.t2_s if ctx.state is _PROCEEDING else min(2 * ctx.interval, t.t2_s)
            self.timers.arm(ctx, _TIMER_E, now + ctx.interval)
        elif timer is _TIMER_B or timer is _TIMER_F:
            self.stats.timeouts += 1
            tx = ctx.server
            log.info("proxy: %s %s to %s:%d timed out", ctx.method, ctx.uri, *ctx.dest)
            self._end_client(ctx)
            if tx is not None and tx.final_status == 0:
                if ctx.method == "INVITE":
                    self._invite_timed_out(tx, now, out)
                else:
                    # RFC 4320: no 408 for a non-INVITE; the client has timed out by now as well.
                    self._end_server(tx)
        elif timer is _TIMER_C and ctx.state is _PROCEEDING:
            # Section 16.8: Timer C fired with a provisional seen: CANCEL downstream, 408 upstream.
            self.stats.timeouts += 1
            self._send_cancel(ctx, now, out)
            tx = ctx.server
            self._end_client(ctx)
            if tx is not None and tx.final_status == 0:
                self._invite_timed_out(tx, now, out)
        elif timer is _TIMER_D or timer is _TIMER_K or timer is _TIMER_M:
            self._end_client(ctx)

    def _invite_timed_out(self, tx: ServerTx, now: float, out: Out) -> None:
        """Timer B or C ended an unanswered INVITE downstream: the policy drops what it kept, upstream gets 408."""
        if tx.call is not None:
            self.hooks.invite_failed(tx.call, 408, now)
        self._answer(tx, 408, "Request Timeout", (), now, out)

    def _server_timer(self, tx: ServerTx, timer: Input, now: float, out: Out) -> None:
        if timer is _TIMER_G and tx.state is _COMPLETED and tx.last_response is not None:
            out.append((tx.last_response, tx.source))
            tx.g_interval = min(2 * tx.g_interval, self.t.t2_s)
            self.timers.arm(tx, _TIMER_G, now + tx.g_interval)
        elif timer in _SERVER_ENDS:
            if timer is _TIMER_H:
                log.info("proxy: no ACK for %d to %s from %s:%d", tx.final_status, log_names(tx)[2], *tx.source)
            self._end_server(tx)
