"""The invitations our own regional server asks us to send (RFC 3515 REFER, from the region's web site).

A player who invites from the web page does not hand the session to the server: the server sends a REFER to
the player's registered contact, and this SDK sends the INVITE itself, so the channel keys stay on the player's
machine and the 2xx ACK still goes straight to the opponent. A REFER is accepted only from the player's own
registrar (the address the SDK registers with), only while registered, and only for this player; anything else
gets 403. The application sees :class:`~gamesdk.events.InviteRequested` and accepts or declines it; progress goes
back to the server in NOTIFY (``Event: refer``, ``message/sipfrag``, RFC 3420): ``100 Trying``, ``180 Ringing``,
``200 OK`` with the ``P-Gamesdk-Reservation`` header of each region, or the failure with a ``Warning`` naming
the region that refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from gamesdk.address import Address
from gamesdk.errors import LocalProtocolError, RemoteProtocolError
from gamesdk.events import InviteRequested, Ringing, SessionEstablished, SessionEvent, SessionFailed
from gamesdk.qos.negotiation import Acceptable
from gamesdk.session.calls import Pending
from gamesdk.session.core import AgentCore
from gamesdk.session.requests import RESERVATION_HEADER, host_text
from gamesdk.session.terms import make_terms
from gamesdk.sip.message import Request, response_for
from gamesdk.sip.transaction_server import ServerNonInviteTransaction
from gamesdk.sip.uri import NameAddr

__all__ = ["ReferSide", "parse_refer_to"]

log = logging.getLogger(__name__)

#: Subscriptions (REFERs not yet finished) kept at most: the server sends one per web invite.
MAX_REFERS = 32
_INT_KEYS = {"lat": "latency_ms", "jit": "jitter_ms", "loss": "loss_ppm"}


def parse_refer_to(value: str) -> tuple[str, dict[str, Any]]:
    """``<sip:bob@na?Gsdk-Format=...&Gsdk-Class=...&Gsdk-Qos=lat=..;jit=..;loss=..&Gsdk-Bandwidth=..>`` ->
    (``bob@na``, keywords of :func:`gamesdk.make_terms`). Raises RemoteProtocolError when unusable."""
    text = value.strip()
    if text.startswith("<"):
        end = text.find(">")
        if end < 0:
            raise RemoteProtocolError("Refer-To: unclosed <", 400)
        text = text[1:end]
    uri, _, query = text.partition("?")
    if not uri.lower().startswith("sip:") or "@" not in uri:
        raise RemoteProtocolError("Refer-To must name a sip: address", 400)
    user_host = uri[4:].split(";", 1)[0]
    user, _, host = user_host.partition("@")
    if not user or not host or any(c in user_host for c in " <>\"'"):
        raise RemoteProtocolError("Refer-To must name a player, sip:name@domain", 400)
    requirements: dict[str, Any] = {}
    for part in query.split("&") if query else ():
        name, _, raw = part.partition("=")
        val = unquote(raw)
        key = name.strip().lower()
        try:
            if key == "gsdk-format":
                requirements["format"] = val
            elif key == "gsdk-class":
                requirements["classification"] = val
            elif key == "gsdk-bandwidth":
                requirements["bandwidth_kbps"] = _int(val)
            elif key == "gsdk-qos":
                for item in val.split(";"):
                    k, _, v = item.partition("=")
                    if k.strip() in _INT_KEYS:
                        requirements[_INT_KEYS[k.strip()]] = _int(v)
        except ValueError:
            raise RemoteProtocolError(f"Refer-To: bad {name[:20]} value {val[:30]!r}", 400) from None
    try:
        make_terms(**requirements)
    except (LocalProtocolError, TypeError) as exc:
        raise RemoteProtocolError(f"Refer-To: unusable game requirements ({exc})", 400) from None
    return f"{user}@{host}", requirements


def _int(text: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise ValueError(text)
    return int(text)


@dataclass(slots=True)
class _Subscription:
    refer: Request
    source: Address
    local_tag: str
    peer: str
    requirements: dict[str, Any]
    cseq: int = 0
    call_id: str | None = None
    done: bool = False


def _phrase(text: str) -> str:
    clean = "".join(c if c.isprintable() and c not in "\r\n" else " " for c in text)
    return clean[:100] or "Failed"


class ReferSide(AgentCore):
    """What the user agent adds for REFERs: checking them, the application's answer, the NOTIFYs."""

    _refers: dict[str, _Subscription]
    _refer_by_call: dict[str, str]
    _refer_notifies: list[tuple[str, str, bool]]

    def _refer_state(self) -> None:
        if not hasattr(self, "_refers"):
            self._refers = {}
            self._refer_by_call = {}
            self._refer_notifies = []

    # -- the request ---------------------------------------------------------------------------------------------

    def _incoming_refer(self, req: Request, tx: ServerNonInviteTransaction, addr: Address, now: float) -> None:
        self._refer_state()
        tag = self._ids.tag()
        registrar = self.config.server
        if addr != registrar or not self.registered:
            # Only our registrar, over our registration, may ask us to invite: anyone else could make the
            # player's client call (and reserve, and bill) whomever they like.
            log.warning("refused a REFER from %s: only the registrar %s may send one", addr, registrar)
            tx.send_response(response_for(req, 403, "REFER accepted only from the registrar", to_tag=tag), now)
            return
        if req.to.tag:
            tx.send_response(response_for(req, 481, "No such dialog", to_tag=None), now)
            return
        user = req.request_uri.user
        if user is not None and user != self.config.username:
            tx.send_response(response_for(req, 404, "Not this player", to_tag=tag), now)
            return
        targets = req.headers.values("Refer-To")
        if len(targets) != 1:
            tx.send_response(response_for(req, 400, "Exactly one Refer-To required", to_tag=tag), now)
            return
        try:
            peer, requirements = parse_refer_to(targets[0])
        except RemoteProtocolError as exc:
            tx.send_response(response_for(req, 400, _phrase(exc.message), to_tag=tag), now)
            return
        if len(self._refers) >= MAX_REFERS:
            tx.send_response(response_for(req, 486, "Busy with other invitations", to_tag=tag), now)
            return
        referred_by = req.headers.get("Referred-By") or ""
        try:
            by = NameAddr.parse(referred_by).uri.aor if referred_by else ""
        except RemoteProtocolError:
            by = ""
        refer_id = req.call_id
        self._refers[refer_id] = _Subscription(req, addr, tag, peer, requirements)
        tx.send_response(response_for(req, 202, "Accepted", to_tag=tag, extra=[("Contact", self.contact)]), now)
        self._emit(InviteRequested(refer_id=refer_id, peer=peer, requirements=dict(requirements),
                                   referred_by=by))

    # -- the application's answer -----------------------------------------------------------------------------

    def accept_invite_request(self, refer_id: str, now: float, *, acceptable: Acceptable | None = None) -> str:
        """Send the invitation the server asked for; returns its Call-ID (events follow as for ``invite``)."""
        self._refer_state()
        sub = self._refers.get(refer_id)
        if sub is None or sub.call_id is not None or sub.done:
            raise LocalProtocolError(f"no invitation request {refer_id!r} waiting for an answer")
        terms = make_terms(**sub.requirements)
        self._notify(sub, "SIP/2.0 100 Trying", now)
        call_id: str = self.invite(sub.peer, terms, now, acceptable=acceptable)  # type: ignore[attr-defined]
        sub.call_id = call_id
        self._refer_by_call[call_id] = refer_id
        self._flush_refer_notifies(now)
        return call_id

    def decline_invite_request(self, refer_id: str, now: float, reason: str = "Declined") -> None:
        self._refer_state()
        sub = self._refers.get(refer_id)
        if sub is None or sub.call_id is not None or sub.done:
            raise LocalProtocolError(f"no invitation request {refer_id!r} waiting for an answer")
        self._notify(sub, f"SIP/2.0 603 {_phrase(reason)}\r\nP-Gamesdk-Refused-By: {self.aor}", now, final=True)

    # -- progress -----------------------------------------------------------------------------------------------

    def _emit(self, event: SessionEvent) -> None:
        super()._emit(event)
        self._refer_state()
        refer_id = self._refer_by_call.get(getattr(event, "call_id", "") or "")
        if refer_id is None:
            return
        if isinstance(event, Ringing):
            self._refer_notifies.append((refer_id, "SIP/2.0 180 Ringing", False))
        elif isinstance(event, SessionEstablished):
            lines = ["SIP/2.0 200 OK"]
            for res in event.agreement.reservations:
                lines.append(f"{RESERVATION_HEADER}: {res.region};network={res.network};up={res.up_kbps};"
                             f"down={res.down_kbps}")
            self._refer_notifies.append((refer_id, "\r\n".join(lines), True))
        elif isinstance(event, SessionFailed):
            lines = [f"SIP/2.0 {event.status} {_phrase(event.reason)}"]
            by = event.refused_by
            if by.startswith("policy:"):
                lines.append(f'Warning: 370 {by.partition(":")[2]} "{_phrase(event.reason).replace(chr(34), "")}"')
            else:
                lines.append(f"P-Gamesdk-Refused-By: {by}")
            self._refer_notifies.append((refer_id, "\r\n".join(lines), True))

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        super().receive_datagram(data, addr, now)
        self._flush_refer_notifies(now)

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now)
        self._flush_refer_notifies(now)

    def _flush_refer_notifies(self, now: float) -> None:
        self._refer_state()
        queued, self._refer_notifies = self._refer_notifies, []
        for refer_id, frag, final in queued:
            sub = self._refers.get(refer_id)
            if sub is not None:
                self._notify(sub, frag, now, final=final)

    def _notify(self, sub: _Subscription, sipfrag: str, now: float, *, final: bool = False) -> None:
        """One NOTIFY of the REFER's implicit subscription (RFC 3515 section 2.4.4), to our registrar."""
        refer = sub.refer
        sub.cseq += 1
        target = refer.headers.get("Contact") or ""
        try:
            uri = str(NameAddr.parse(target).uri) if target else str(refer.from_.uri)
        except RemoteProtocolError:
            uri = str(refer.from_.uri)
        host, port = self.local_addr
        body = (sipfrag + "\r\n").encode()
        state = "terminated;reason=noresource" if final else "active;expires=180"
        req = Request("NOTIFY", uri, [
            ("Via", f"SIP/2.0/UDP {host_text(host)}:{port};branch={self._ids.branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={sub.local_tag}"),
            ("To", refer.headers.get("From") or ""),
            ("Call-ID", refer.call_id),
            ("CSeq", f"{sub.cseq} NOTIFY"),
            ("Contact", self.contact),
            ("Event", "refer"),
            ("Subscription-State", state),
            ("Content-Type", "message/sipfrag;version=2.0"),
            ("User-Agent", self.config.user_agent),
        ], body)
        self._start_client(req, now, Pending("notify", None), destination=sub.source)
        if final:
            sub.done = True
            self._refers.pop(refer.call_id, None)
            if sub.call_id is not None:
                self._refer_by_call.pop(sub.call_id, None)
