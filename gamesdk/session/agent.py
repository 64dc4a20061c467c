"""The player's user agent: login, invitations, QoS negotiation, direct ACK, dialog publication, hang-up.

Sans-IO, with the same driving contract as the transactions it composes:

- ``receive_datagram(data, addr, now)`` for every SIP datagram on the player's SIP socket;
- ``datagrams_to_send() -> list[(bytes, addr)]`` after every call;
- ``get_timer()`` / ``handle_timer(now)``;
- ``next_event()`` until None: :mod:`gamesdk.events` values.

The application asks with ``register``, ``unregister``, ``invite``, ``accept``, ``decline``, ``cancel``, ``end``.
Requests to the player's own server (REGISTER, INVITE, CANCEL, PUBLISH) go to ``config.server``; everything
in a dialog after the 2xx (ACK, BYE, OPTIONS) goes straight to the peer's Contact: the servers never add
Record-Route, so the route set is empty (DESIGN section 2).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from gamesdk.channel.crypto import generate_keypair
from gamesdk.config import ClientConfig
from gamesdk.errors import LocalProtocolError, RemoteProtocolError, SdpError
from gamesdk.events import (
    InviteCancelled,
    InviteReceived,
    Registered,
    RegistrationFailed,
    Ringing,
    SessionEnded,
    SessionEstablished,
    SessionEvent,
    SessionFailed,
    Unregistered,
)
from gamesdk.qos.model import SessionTerms
from gamesdk.qos.negotiation import Acceptable, Accepted, Requirements, answer_offer, check_answer
from gamesdk.sdp.codec import format_sdp
from gamesdk.sdp.game import GameMedia, Role, game_to_sdp, read_game_untrusted
from gamesdk.session.agreement import (
    as_offered,
    channel_params,
    failure_reason,
    make_agreement,
    peer_uri,
    refused_by,
)
from gamesdk.session.calls import Address, Call, CallState, Pending
from gamesdk.session.credentials import MAX_AUTH_RETRIES, Credentials
from gamesdk.session.publication import build_publish
from gamesdk.session.registration import Registration
from gamesdk.session.requests import ALLOW, build_request, policy_warning, resend_with
from gamesdk.sip.dialog import (
    Dialog,
    build_ack_for_2xx,
    build_bye,
    build_in_dialog_request,
    dialog_from_2xx,
    dialog_from_invite,
    incoming_dialog_id,
    receive_in_dialog_request,
)
from gamesdk.sip.dialog_info import DialogState
from gamesdk.sip.headers import Reason, Warning
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.transaction import (
    AckTimedOut,
    ResponseReceived,
    TransactionEvent,
    TransactionKey,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from gamesdk.sip.transaction_client import ClientInviteTransaction, ClientNonInviteTransaction, build_cancel
from gamesdk.sip.transaction_server import ServerInviteTransaction, ServerNonInviteTransaction
from gamesdk.sip.transaction_table import TransactionTable

__all__ = ["CallState", "UserAgent"]

log = logging.getLogger(__name__)

SDP = "application/sdp"


class UserAgent:
    """One player's SIP user agent (see the module docstring for the driving contract).

    Args:
        config: the player's account and server.
        local_addr: the ``(host, port)`` of the player's SIP socket, used in Via and Contact.
        ids: where branches, tags and Call-IDs come from.
        random_bytes: randomness for channel keys and session ids (``os.urandom`` in production).
        channel_addr: callable giving a fresh ``(host, port)`` for a new session's game channel socket.
    """

    def __init__(
        self,
        config: ClientConfig,
        local_addr: Address,
        *,
        ids: IdFactory,
        random_bytes: Callable[[int], bytes],
        channel_addr: Callable[[str], Address],
    ) -> None:
        self.config = config
        self.local_addr = local_addr
        self._ids = ids
        self._random = random_bytes
        self._channel_addr = channel_addr
        self._credentials = Credentials(config.username, config.password, ids.cnonce, config.digest_algorithms)
        self._events: deque[SessionEvent] = deque()
        self._out: list[tuple[bytes, Address]] = []
        self._transactions = TransactionTable()
        #: What each live transaction is for, by key (events carry only the key).
        self._pending: dict[TransactionKey, Pending] = {}
        self._calls: dict[str, Call] = {}
        self._timers: dict[str, float] = {}
        self._registration = Registration(
            aor=config.aor,
            registrar=f"sip:{config.domain}",
            call_id=ids.call_id(),
            tag=ids.tag(),
            expires=config.register_expires_s,
        )
        #: The publication lifetime asked for: the configured one, or the server's Min-Expires after a 423.
        self._publish_expires = config.publish_expires_s
        #: Counters for monitoring and tests.
        self.stats: dict[str, int] = {"parse_errors": 0, "stray_responses": 0, "acks_sent": 0}

    # ------------------------------------------------------------------ public API
    @property
    def aor(self) -> str:
        """The player's address of record, ``sip:<username>@<domain>``."""
        return self.config.aor

    @property
    def registered(self) -> bool:
        """True while the server holds our binding (the last REGISTER succeeded)."""
        return self._registration.registered

    @property
    def contact(self) -> str:
        """Our Contact, ``<sip:<username>@host:port>`` of the SIP socket: where peers send in-dialog requests."""
        host, port = self.local_addr
        return f"<sip:{self.config.username}@{_host(host)}:{port}>"

    def register(self, now: float) -> None:
        """Log in: REGISTER our contact with the regional server (answers a digest challenge itself)."""
        reg = self._registration
        reg.unregistering = False
        reg.expires = self.config.register_expires_s
        self._send_register(now, reg.expires, self._credentials.cached(401, "REGISTER", reg.registrar))

    def unregister(self, now: float) -> None:
        """Log out: REGISTER with ``Expires: 0``."""
        self._registration.unregistering = True
        self._timers.pop("register", None)
        self._send_register(now, 0, self._credentials.cached(401, "REGISTER", self._registration.registrar))

    def invite(
        self,
        peer: str,
        terms: SessionTerms,
        now: float,
        *,
        acceptable: Acceptable | None = None,
    ) -> str:
        """Invite ``peer`` (``bob@na.gamesdk.test`` or a ``sip:`` URI) to a game; returns the Call-ID.

        The outcome arrives as ``SessionEstablished`` or ``SessionFailed`` with this Call-ID.
        """
        peer = peer_uri(peer)
        call_id = self._ids.call_id()
        call = Call(
            call_id=call_id,
            is_caller=True,
            local_uri=self.aor,
            peer_uri=peer,
            local_tag=self._ids.tag(),
            acceptable=acceptable,
            offer=terms,
        )
        call.private_key, public = generate_keypair(self._random)
        host, port = self._channel_addr(call_id)
        call.offer_game = GameMedia(
            terms=terms, address=host, port=port, public_key=public, session_id=self._session_id()
        )
        call.offer_desc = game_to_sdp(
            call.offer_game,
            username=self.config.username,
            sess_id=self._sdp_id(),
            sess_version=1,
            role=Role.OFFER,
        )
        self._calls[call_id] = call
        self._send_invite(call, now, auth=self._credentials.cached(407, "INVITE", peer))
        call.timers["invite"] = now + self.config.invite_timeout_s
        return call_id

    def accept(
        self,
        call_id: str,
        now: float,
        *,
        requirements: Requirements | None = None,
        answer: SessionTerms | None = None,
    ) -> SessionTerms:
        """Accept an invitation: as offered (no arguments), from our ``requirements`` (the negotiation rules
        decide, possibly modifying the QoS), or with an explicit ``answer``. Returns the answer sent.

        Raises:
            LocalProtocolError: no such pending invitation.
            NegotiationError: the offer cannot meet ``requirements`` (a 488 was sent to the caller).
        """
        call = self._pending_incoming(call_id)
        assert call.offer is not None and call.offer_desc is not None
        if answer is None:
            reqs = requirements or as_offered(call.offer)
            result = answer_offer(call.offer, reqs)
            if not isinstance(result, Accepted):
                self._answer_invite(call, now, 488, warning=result.reason)
                self._finish(call, now)
                raise result.error()
            answer = result.answer
        call.private_key, public = generate_keypair(self._random)
        host, port = self._channel_addr(call_id)
        call.answer_game = GameMedia(
            terms=answer, address=host, port=port, public_key=public, session_id=self._session_id()
        )
        call.answer_desc = game_to_sdp(
            call.answer_game,
            username=self.config.username,
            sess_id=self._sdp_id(),
            sess_version=1,
            role=Role.ANSWER,
            offer=call.offer_desc,
        )
        body = format_sdp(call.answer_desc).encode()
        tx = call.invite_tx
        assert isinstance(tx, ServerInviteTransaction) and call.invite is not None
        resp = response_for(
            call.invite,
            200,
            to_tag=call.local_tag,
            extra=[("Contact", self.contact), ("Allow", ALLOW), ("Content-Type", "application/sdp")],
            body=body,
        )
        tx.send_response(resp, now)
        call.state = CallState.ANSWERED
        call.timers.pop("answer", None)
        return answer

    def decline(self, call_id: str, now: float, *, status: int = 603, reason: str = "Declined") -> None:
        """Refuse an invitation with ``status`` (603 Decline, 486 Busy Here, 488 ...) and a reason text."""
        call = self._pending_incoming(call_id)
        if not 400 <= status <= 699:
            raise LocalProtocolError(f"decline status must be 400..699, got {status}")
        self._answer_invite(call, now, status, warning=reason)
        self._finish(call, now)

    def cancel(self, call_id: str, now: float) -> None:
        """Withdraw an invitation that has no final answer yet (CANCEL, RFC 3261 section 9); once is enough,
        a second call changes nothing."""
        call = self._calls.get(call_id)
        if call is None or not call.is_caller or call.state is not CallState.PENDING or call.invite is None:
            raise LocalProtocolError(f"no pending outgoing invitation {call_id!r}")
        if call.cancelled is not None:
            return
        self._send_cancel(call, now, (487, "invitation cancelled", "local"))

    def end(self, call_id: str, now: float, *, reason: str | None = None, cause: int | None = None) -> None:
        """Hang up an established session (BYE straight to the peer, with an optional Reason header)."""
        call = self._calls.get(call_id)
        if call is None or call.state not in (CallState.CONFIRMED, CallState.ANSWERED):
            raise LocalProtocolError(f"no established session {call_id!r}")
        self._send_bye(call, now, reason=reason, cause=cause)
        self._emit(SessionEnded(call_id=call_id, reason=reason or "ended locally", by_peer=False))

    def is_outgoing(self, call_id: str) -> bool:
        """True when ``call_id`` is an invitation we sent (False for one we received, or an unknown one)."""
        call = self._calls.get(call_id)
        return call is not None and call.is_caller

    def session_state(self, call_id: str) -> CallState | None:
        """Where ``call_id`` stands, or None once it is forgotten (64*T1 after it ended) or was never known."""
        call = self._calls.get(call_id)
        return call.state if call else None

    # ------------------------------------------------------------------ driving contract
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram received on the SIP socket."""
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626 section 4.4.1)
        try:
            message = parse_message_untrusted(data)
        except RemoteProtocolError as exc:
            self.stats["parse_errors"] += 1
            log.debug("dropped unparseable datagram from %s: %s", addr, exc)
            return
        if isinstance(message, Response):
            self._receive_response(message, now)
        else:
            self._receive_request(message, addr, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Datagrams to send now, each with its destination, in the order they were produced."""
        # ACKs for 2xx have no transaction (RFC 3261 13.2.2.4): they sit in ``_out``, ahead of a BYE that follows
        out = self._out
        self._out = []
        out.extend(self._transactions.datagrams_to_send())
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (same clock as ``now``), or None."""
        deadlines = list(self._timers.values())
        for call in self._calls.values():
            deadlines.extend(call.timers.values())
        t = self._transactions.get_timer()
        if t is not None:
            deadlines.append(t)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run everything due at ``now``: retransmissions, timeouts, refreshes, the application's deadlines."""
        self._transactions.handle_timer(now)
        self._drain_transactions(now)
        if self._timers.get("register", float("inf")) <= now:
            del self._timers["register"]
            # credentials for the cached challenge at once (RFC 3261 22.3); a stale nonce costs one 401
            reg = self._registration
            self._send_register(now, reg.expires, self._credentials.cached(401, "REGISTER", reg.registrar))
        for call in list(self._calls.values()):
            for name, deadline in list(call.timers.items()):
                if deadline <= now and call.timers.get(name) == deadline:
                    del call.timers[name]
                    self._call_timer(call, name, now)

    def next_event(self) -> SessionEvent | None:
        """The oldest :mod:`gamesdk.events` value not yet taken, or None."""
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ registration
    def _send_register(
        self, now: float, expires: int, auth: tuple[str, str] | None = None, retries: int = 0
    ) -> None:
        req = self._registration.request(
            expires=expires,
            contact=self.contact,
            via=self.local_addr,
            branch=self._ids.branch(),
            credentials=auth,
            user_agent=self.config.user_agent,
        )
        self._start_client(req, now, Pending("register", None, retries))

    def _register_response(self, resp: Response, pending: Pending, now: float) -> None:
        if resp.status < 200:
            return
        reg = self._registration
        expires = 0 if reg.unregistering else reg.expires
        if resp.status in (401, 407) and pending.retries < MAX_AUTH_RETRIES:
            auth = self._credentials.answer(resp, "REGISTER", reg.registrar)
            if auth is None:
                self._registration_failed(resp.status, "no usable digest challenge")
                return
            self._send_register(now, expires, auth, retries=pending.retries + 1)
            return
        if resp.status == 423 and not reg.unregistering:
            # Interval Too Brief: ask again with the server's Min-Expires and keep it for the refreshes
            # (RFC 3261 10.2.8); only upwards, so a server that keeps answering 423 cannot loop us.
            min_expires = (resp.headers.get("Min-Expires") or "").strip()
            if min_expires.isdigit() and int(min_expires) > reg.expires:
                reg.expires = int(min_expires)
                auth = self._credentials.cached(401, "REGISTER", reg.registrar)
                self._send_register(now, reg.expires, auth, retries=pending.retries)
                return
        if 200 <= resp.status < 300:
            if reg.unregistering:
                reg.registered = False
                self._emit(Unregistered(aor=self.aor))
                return
            granted = reg.granted(resp, self.contact[1:-1])
            reg.registered = True
            # refresh at half the granted time (RFC 3261 10.2.4 leaves the margin to the UA)
            self._timers["register"] = now + max(1.0, granted / 2)
            self._emit(Registered(aor=self.aor, expires_s=granted))
            return
        reason = resp.reason
        if resp.status in (401, 407):
            reason = "wrong user name or password"
        self._registration_failed(resp.status, reason)

    def _registration_failed(self, status: int, reason: str) -> None:
        self._registration.registered = False
        self._emit(RegistrationFailed(status=status, reason=reason))

    # ------------------------------------------------------------------ outgoing invitation
    def _send_invite(self, call: Call, now: float, auth: tuple[str, str] | None) -> None:
        assert call.offer_desc is not None
        body = format_sdp(call.offer_desc).encode()
        extra = [("Allow", ALLOW)]
        if auth is not None:
            extra.append(auth)
        name = self.config.display_name
        from_ = (f'"{name}" ' if name else "") + f"<{call.local_uri}>;tag={call.local_tag}"
        req = build_request(
            "INVITE",
            call.peer_uri,
            via_host=self.local_addr[0],
            via_port=self.local_addr[1],
            branch=self._ids.branch(),
            from_=from_,
            to=f"<{call.peer_uri}>",
            call_id=call.call_id,
            cseq=call.invite_cseq,
            contact=self.contact,
            extra=extra,
            body=body,
            content_type="application/sdp",
            user_agent=self.config.user_agent,
        )
        call.invite = req
        tx = ClientInviteTransaction(req, now, destination=self.config.server, config=self.config.timers)
        call.invite_tx = self._transactions.add(tx)
        self._pending[tx.key] = Pending("invite", call.call_id, request=req)

    def _invite_response(self, call: Call, resp: Response, now: float) -> None:
        status = resp.status
        if status < 200:
            if call.state is not CallState.PENDING or call.invite is None or resp.cseq.seq != call.invite.cseq.seq:
                return  # a late provisional, overtaken by the final answer (DESIGN section 9)
            if not call.provisional:
                call.provisional = True
                if call.cancelled is not None:
                    self._send_cancel(call, now, call.cancelled)  # held back until now (RFC 3261 9.1)
            if status == 180:
                self._emit(Ringing(call_id=call.call_id))
            return
        if status < 300:
            self._invite_2xx(call, resp, now)
            return
        if call.state is not CallState.PENDING:
            return
        if status in (401, 407) and call.auth_retries < MAX_AUTH_RETRIES:
            assert call.invite is not None
            auth = self._credentials.answer(resp, "INVITE", call.peer_uri)
            if auth is not None:
                call.auth_retries += 1
                call.invite_cseq += 1
                call.provisional = False
                self._send_invite(call, now, auth)
                return
        warning = policy_warning(resp)
        if warning is not None:
            reason, by = warning.text, f"policy:{warning.agent}"
        else:
            reason, by = failure_reason(resp), refused_by(resp)
        if call.cancelled is not None:
            status, reason, by = call.cancelled
        self._fail(call, status, reason, by, now)

    def _invite_2xx(self, call: Call, resp: Response, now: float) -> None:
        if call.ack is not None:
            # a retransmitted 2xx: the ACK was lost, send it again (RFC 3261 13.2.2.4)
            self._out.append(call.ack)
            return
        assert call.invite is not None
        try:
            call.dialog = dialog_from_2xx(call.invite, resp)
        except RemoteProtocolError as exc:
            # no dialog, so nowhere to send an ACK or BYE: the callee's transaction gives up on its own
            self._fail(call, 502, f"unusable answer: {exc}", "peer", now)
            return
        call.remote_tag = call.dialog.remote_tag
        reported = call.state is CallState.ENDED  # we gave up before this answer came, and said so
        self._send_ack(call, now)
        failure = self._check_answer(call, resp)
        if failure is not None:
            status, reason, by, cause_text = failure
            self._send_bye(call, now, reason=cause_text, cause=status)
            if reported:
                self._finish(call, now)
            else:
                self._fail(call, status, reason, by, now)
            return
        call.state = CallState.CONFIRMED
        call.timers.pop("invite", None)
        self._established(call, now)

    def _check_answer(self, call: Call, resp: Response) -> tuple[int, str, str, str] | None:
        """None if the 2xx can be played; else (status, reason, refused_by, Reason text for the BYE)."""
        if call.state is CallState.ENDED and call.cancelled is None:
            return 408, "answered too late", "local", "answered too late"
        if call.cancelled is not None:
            # the 2xx crossed our CANCEL: the session is up, so end it at once (RFC 3261 9.1, 15)
            status, reason, by = call.cancelled
            return status, reason, by, "cancelled"
        warning = policy_warning(resp)
        if warning is not None:
            return 580, warning.text, f"policy:{warning.agent}", warning.text
        try:
            desc, game = read_game_untrusted(resp.body, Role.ANSWER)
        except SdpError as exc:
            return 488, f"bad answer: {exc.message}", "peer", "QoS answer unacceptable"
        assert call.offer is not None
        rejected = check_answer(call.offer, game.terms, call.acceptable or Acceptable())
        if rejected is not None:
            return 488, rejected.reason, "local", "QoS answer unacceptable"
        call.answer_desc, call.answer_game = desc, game
        call.agreement = make_agreement(
            call_id=call.call_id, is_caller=True, local=call.local_uri, peer=call.peer_uri,
            offer=call.offer, answer=game.terms, peer_game=game, response=resp,
        )
        return None

    def _send_ack(self, call: Call, now: float) -> None:
        assert call.invite is not None and call.dialog is not None
        # end to end to the callee's Contact, never via a server (DESIGN section 2); kept to answer 2xx
        # retransmissions with the very same bytes (RFC 3261 13.2.2.4)
        req = build_ack_for_2xx(call.dialog, call.invite, self._ids.branch())
        call.ack = (req.to_bytes(), _next_hop(call.dialog))
        self._out.append(call.ack)
        self.stats["acks_sent"] += 1

    # ------------------------------------------------------------------ incoming requests
    def _receive_request(self, req: Request, addr: Address, now: float) -> None:
        try:
            absorbed = self._transactions.receive_request(req, now)  # retransmission, or ACK of a non-2xx
        except RemoteProtocolError as exc:
            log.debug("dropped a request from %s the transactions cannot place: %s", addr, exc)
            return
        if absorbed is not None:
            self._drain_transactions(now)
            return
        if req.method == "ACK":
            self._receive_ack(req, now)  # the table already stopped the 2xx retransmissions
            return
        refusal = self._refusal(req)
        if req.method == "INVITE":
            tx_i = self._transactions.add(
                ServerInviteTransaction(req, now, source=addr, config=self.config.timers, retransmit_2xx=True)
            )
            self._pending[tx_i.key] = Pending("uas-invite", req.call_id, request=req)
            if refusal is not None:
                tx_i.send_response(refusal, now)
            else:
                self._incoming_invite(req, tx_i, now)
            self._drain_transactions(now)
            return
        tx = self._transactions.add(ServerNonInviteTransaction(req, now, source=addr, config=self.config.timers))
        if refusal is not None:
            tx.send_response(refusal, now)
        elif req.method == "BYE":
            self._incoming_bye(req, tx, now)
        elif req.method == "CANCEL":
            self._incoming_cancel(req, tx, now)
        elif req.method == "OPTIONS":
            self._incoming_options(req, tx, now)
        elif req.method in ("REGISTER", "PUBLISH", "SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "UPDATE", "PRACK"):
            tx.send_response(response_for(req, 405, to_tag=self._ids.tag(), extra=[("Allow", ALLOW)]), now)
        else:
            tx.send_response(response_for(req, 501, to_tag=self._ids.tag()), now)
        self._drain_transactions(now)

    def _refusal(self, req: Request) -> Response | None:
        """The answer to a new request we must refuse before looking at it (RFC 3261 8.2.2), or None."""
        tag = None if req.to.tag else self._ids.tag()
        if self._transactions.find_merged(req) is not None:
            # the same request again under another branch (RFC 3261 8.2.2.2)
            return response_for(req, 482, to_tag=tag)
        required = [] if req.method == "CANCEL" else req.headers.values("Require")
        if required:
            # we implement no SIP extension, so none may be required of us (RFC 3261 8.2.2.3)
            return response_for(req, 420, to_tag=tag, extra=[("Unsupported", ", ".join(required))])
        if req.body and req.method == "INVITE" and (req.content_type or "").split(";")[0].strip().lower() != SDP:
            return response_for(req, 415, to_tag=tag, extra=[("Accept", SDP)])  # RFC 3261 8.2.3
        return None

    def _dialog_call(self, req: Request) -> Call | None:
        """The call whose dialog ``req`` belongs to (Call-ID and both tags, RFC 3261 12.2.2), or None."""
        call = self._calls.get(req.call_id)
        if call is None or call.dialog is None:
            return None
        try:
            return call if incoming_dialog_id(req) == call.dialog.id else None
        except RemoteProtocolError:
            return None

    def _in_dialog(self, call: Call, req: Request, tx: ServerNonInviteTransaction, now: float) -> bool:
        """Account for the peer's CSeq; answers 500 and returns False for one out of order (RFC 3261 12.2.2)."""
        assert call.dialog is not None
        try:
            call.dialog = receive_in_dialog_request(call.dialog, req)
        except RemoteProtocolError as exc:
            tx.send_response(response_for(req, 500, str(exc)), now)
            return False
        return True

    def _incoming_options(self, req: Request, tx: ServerNonInviteTransaction, now: float) -> None:
        if req.to.tag is None:  # outside any dialog: a capability query (RFC 3261 11)
            tx.send_response(response_for(req, 200, to_tag=self._ids.tag(), extra=[("Allow", ALLOW)]), now)
            return
        # a session refresh: 481 tells a peer whose session we no longer have that it is over
        call = self._dialog_call(req)
        if call is None or call.state not in (CallState.ANSWERED, CallState.CONFIRMED):
            tx.send_response(response_for(req, 481), now)
        elif self._in_dialog(call, req, tx, now):
            tx.send_response(response_for(req, 200, extra=[("Allow", ALLOW)]), now)

    def _incoming_invite(self, req: Request, tx: ServerInviteTransaction, now: float) -> None:
        if req.to.tag is not None:
            # re-INVITE: the game session's terms are fixed once agreed; 481 outside a dialog we have
            status = 488 if self._dialog_call(req) is not None else 481
            tx.send_response(response_for(req, status, "Re-negotiation not supported" if status == 488 else None), now)
            return
        call = Call(
            call_id=req.call_id,
            is_caller=False,
            local_uri=req.to.uri.aor,
            peer_uri=req.from_.uri.aor,
            local_tag=self._ids.tag(),
            remote_tag=req.from_.tag,
            invite=req,
            invite_tx=tx,
            caller_name=req.from_.display_name,
        )
        if call.remote_tag is None:
            tx.send_response(response_for(req, 400, "Missing From tag", to_tag=call.local_tag), now)
            return
        try:
            call.dialog = dialog_from_invite(req, call.local_tag, self.contact)
        except RemoteProtocolError as exc:
            tx.send_response(response_for(req, 400, str(exc), to_tag=call.local_tag), now)
            return
        if call.call_id in self._calls:
            tx.send_response(response_for(req, 482, to_tag=call.local_tag), now)
            return
        try:
            call.offer_desc, game = read_game_untrusted(req.body, Role.OFFER)
        except SdpError as exc:
            warning = Warning(399, self.local_addr[0], exc.message)
            tx.send_response(response_for(req, 488, to_tag=call.local_tag, extra=[("Warning", str(warning))]), now)
            return
        call.offer, call.offer_game = game.terms, game
        self._calls[call.call_id] = call
        tx.send_response(response_for(req, 180, to_tag=call.local_tag, extra=[("Contact", self.contact)]), now)
        call.timers["answer"] = now + self.config.answer_timeout_s
        self._emit(
            InviteReceived(call_id=call.call_id, caller=call.peer_uri, caller_name=call.caller_name, offer=game.terms)
        )

    def _receive_ack(self, req: Request, now: float) -> None:
        call = self._dialog_call(req)
        if call is None or call.is_caller or call.state is not CallState.ANSWERED:
            return  # a retransmitted or stray ACK
        if call.invite is None or req.cseq.seq != call.invite.cseq.seq:
            return
        call.state = CallState.CONFIRMED
        assert call.offer_game is not None and call.answer_game is not None
        call.agreement = make_agreement(
            call_id=call.call_id, is_caller=False, local=call.local_uri, peer=call.peer_uri,
            offer=call.offer_game.terms, answer=call.answer_game.terms, peer_game=call.offer_game, response=None,
        )
        self._established(call, now)

    def _incoming_bye(self, req: Request, tx: ServerNonInviteTransaction, now: float) -> None:
        call = self._dialog_call(req)
        if call is None or call.state in (CallState.ENDED, CallState.PENDING):
            tx.send_response(response_for(req, 481), now)
            return
        if not self._in_dialog(call, req, tx, now):
            return
        tx.send_response(response_for(req, 200), now)
        if call.state is CallState.ENDING:
            return  # our BYE crossed theirs: the application already heard the session end
        reason = "peer hung up"
        try:
            for r in req.reasons:
                if r.text:
                    reason = r.text if r.cause is None else f"{r.cause} {r.text}"
        except RemoteProtocolError:
            pass
        was = call.state
        call.state = CallState.ENDED
        self._publish(call, now, DialogState.TERMINATED, event="remote-bye")
        if was is CallState.ANSWERED:
            self._emit(SessionFailed(call_id=call.call_id, status=487, reason=reason, refused_by="peer"))
        else:
            self._emit(SessionEnded(call_id=call.call_id, reason=reason, by_peer=True))
        self._finish(call, now)

    def _incoming_cancel(self, req: Request, tx: ServerNonInviteTransaction, now: float) -> None:
        # the INVITE it cancels is found by its transaction (RFC 3261 9.2), not only by Call-ID
        target = self._transactions.find_cancel_target(req)
        call = self._calls.get(req.call_id)
        if target is None or call is None or call.invite_tx is not target or call.state is not CallState.PENDING:
            tx.send_response(response_for(req, 481), now)
            return
        tx.send_response(response_for(req, 200), now)
        self._answer_invite(call, now, 487)
        self._emit(InviteCancelled(call_id=call.call_id, reason="the caller cancelled"))
        self._finish(call, now)

    def _answer_invite(self, call: Call, now: float, status: int, warning: str | None = None) -> None:
        tx = call.invite_tx
        assert isinstance(tx, ServerInviteTransaction) and call.invite is not None
        extra: list[tuple[str, str]] = []
        if warning:
            extra.append(("Warning", str(Warning(399, self.local_addr[0], warning))))
        tx.send_response(response_for(call.invite, status, to_tag=call.local_tag, extra=extra), now)

    def _pending_incoming(self, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is None or call.is_caller or call.state is not CallState.PENDING:
            raise LocalProtocolError(f"no pending incoming invitation {call_id!r}")
        return call

    # ------------------------------------------------------------------ established sessions
    def _established(self, call: Call, now: float) -> None:
        assert call.agreement is not None and call.dialog is not None
        assert call.offer_desc is not None and call.offer_game is not None
        assert call.answer_desc is not None and call.answer_game is not None
        params = channel_params(
            is_caller=call.is_caller,
            call_id=call.call_id,
            from_tag=call.local_tag if call.is_caller else call.dialog.remote_tag,
            to_tag=call.dialog.remote_tag if call.is_caller else call.local_tag,
            offer=(call.offer_desc, call.offer_game),
            answer=(call.answer_desc, call.answer_game),
            private_key=call.private_key,
        )
        self._publish(call, now, DialogState.CONFIRMED)
        call.timers["refresh"] = now + self.config.session_refresh_s
        self._emit(SessionEstablished(call_id=call.call_id, agreement=call.agreement, channel_params=params))

    def _send_bye(self, call: Call, now: float, *, reason: str | None, cause: int | None) -> None:
        assert call.dialog is not None
        why = Reason("SIP", cause, reason) if reason is not None or cause is not None else None
        req, call.dialog = build_bye(call.dialog, self._ids.branch(), why, extra=self._agent_header)
        call.state = CallState.ENDING
        call.timers.pop("refresh", None)
        self._start_client(req, now, Pending("bye", call.call_id), destination=_next_hop(call.dialog))
        self._publish(call, now, DialogState.TERMINATED, event="local-bye", code=cause)

    @property
    def _agent_header(self) -> list[tuple[str, str]]:
        return [("User-Agent", self.config.user_agent)]

    def _send_cancel(self, call: Call, now: float, outcome: tuple[int, str, str]) -> None:
        assert call.invite is not None
        call.cancelled = outcome
        if not call.provisional:
            return  # sent when the first provisional response arrives (RFC 3261 9.1)
        self._start_client(build_cancel(call.invite), now, Pending("cancel", call.call_id))
        # RFC 3261 9.1: without a final answer 64*T1 after the CANCEL, give the INVITE up (a callee in
        # Proceeding has no Timer B to end it for us)
        call.timers["cancel"] = now + 64 * self.config.timers.t1

    # ------------------------------------------------------------------ dialog publication (DESIGN section 4)
    def _publish(
        self, call: Call, now: float, state: DialogState, *, event: str | None = None, code: int | None = None,
        refresh: bool = False,
    ) -> None:
        if refresh and call.publish_etag is None:
            return
        req = build_publish(
            call,
            state,
            aor=self.aor,
            via=self.local_addr,
            ids=self._ids,
            expires_s=self._publish_expires,
            refresh=refresh,
            event=event,
            code=code,
            credentials=self._credentials.cached(401, "PUBLISH", self.aor),
            user_agent=self.config.user_agent,
        )
        self._start_client(req, now, Pending("publish", call.call_id))
        if state is DialogState.CONFIRMED:
            call.timers["publish"] = now + self.config.publish_refresh_s
        else:
            call.timers.pop("publish", None)

    def _publish_response(self, resp: Response, pending: Pending, now: float) -> None:
        if resp.status < 200 or pending.call_id is None:
            return
        call = self._calls.get(pending.call_id)
        if resp.status in (401, 407) and pending.retries < MAX_AUTH_RETRIES:
            sent = pending.request
            auth = self._credentials.answer(resp, "PUBLISH", sent.uri) if sent is not None else None
            if sent is not None and auth is not None:
                retry = resend_with(sent, auth, self._ids.branch())
                self._start_client(retry, now, Pending("publish", pending.call_id, pending.retries + 1))
            return
        if call is None:
            return
        if 200 <= resp.status < 300:
            etag = resp.headers.get("SIP-ETag")
            if etag:
                call.publish_etag = etag.strip()
            granted = _expires(resp)
            if granted is not None and granted < self._publish_expires and "publish" in call.timers:
                # the server granted less than we asked (RFC 3903 section 6, step 5): refresh in time for it
                # (a refresh period the application chose for what it asked stays its own business)
                refresh = min(self.config.publish_refresh_s, max(1.0, granted / 2))
                call.timers["publish"] = min(call.timers["publish"], now + refresh)
        elif resp.status == 423 and pending.request is not None:
            # Interval Too Brief: publish again with the server's Min-Expires, and ask for it from now on
            minimum = (resp.headers.get("Min-Expires") or "").strip()
            if minimum.isdigit() and int(minimum) > self._publish_expires:
                self._publish_expires = int(minimum)
                again = resend_with(pending.request, ("Expires", minimum), self._ids.branch())
                self._start_client(again, now, Pending("publish", call.call_id, pending.retries))
        elif resp.status == 412:
            # the server lost our publication (a restart): publish the full state again at once, not at the next
            # refresh, or the server may release the reservation meanwhile (RFC 3903 section 4.1)
            call.publish_etag = None
            if call.state is CallState.CONFIRMED:
                self._publish(call, now, DialogState.CONFIRMED)
        else:
            log.info("PUBLISH for %s answered %s %s", pending.call_id, resp.status, resp.reason)

    # ------------------------------------------------------------------ plumbing
    def _start_client(
        self, req: Request, now: float, pending: Pending, destination: Address | None = None
    ) -> None:
        tx = ClientNonInviteTransaction(
            req, now, destination=destination or self.config.server, config=self.config.timers
        )
        self._transactions.add(tx)
        pending.request = req
        self._pending[tx.key] = pending

    def _receive_response(self, resp: Response, now: float) -> None:
        if self._transactions.receive_response(resp, now) is not None:
            self._drain_transactions(now)
            return
        # A 2xx retransmission after the INVITE transaction ended: re-send our ACK (RFC 3261 13.2.2.4).
        call = self._calls.get(resp.headers.get("Call-ID") or "")
        try:
            is_invite_2xx = 200 <= resp.status < 300 and resp.cseq.method == "INVITE"
        except RemoteProtocolError:
            is_invite_2xx = False
        if call is not None and call.ack is not None and is_invite_2xx:
            self._out.append(call.ack)
        else:
            self.stats["stray_responses"] += 1

    def _drain_transactions(self, now: float) -> None:
        while (event := self._transactions.next_event()) is not None:
            if isinstance(event, TransactionTerminated):
                self._pending.pop(event.key, None)
                continue
            pending = self._pending.get(event.key)
            if pending is not None:
                self._transaction_event(pending, event, now)

    def _transaction_event(self, pending: Pending, event: TransactionEvent, now: float) -> None:
        if isinstance(event, ResponseReceived):
            resp = event.response
            if pending.purpose == "invite":
                call = self._calls.get(pending.call_id or "")
                if call is not None:
                    self._invite_response(call, resp, now)
            elif pending.purpose == "register":
                self._register_response(resp, pending, now)
            elif pending.purpose == "publish":
                self._publish_response(resp, pending, now)
            elif pending.purpose == "refresh":
                if resp.status in (404, 408, 481):
                    self._peer_lost(pending.call_id, now, f"peer answered {resp.status} {resp.reason}")
            elif pending.purpose == "bye" and resp.status >= 200:
                call = self._calls.get(pending.call_id or "")
                if call is not None:
                    self._finish(call, now)
            return
        if isinstance(event, (TransactionTimedOut, TransportFailed)):
            why = "timed out" if isinstance(event, TransactionTimedOut) else event.reason
            if pending.purpose == "invite":
                call = self._calls.get(pending.call_id or "")
                if call is not None and call.state is CallState.PENDING:
                    # the application's own CANCEL stays what it asked for; an invite timeout without a single
                    # provisional response is the server's silence, not the peer's
                    if call.cancelled is not None and (call.provisional or call.cancelled[2] == "local"):
                        self._fail(call, *call.cancelled, now)
                    else:
                        self._fail(call, 408, f"no response from the server ({why})", "network", now)
            elif pending.purpose == "register":
                self._registration_failed(408, f"no response from the server ({why})")
                if not self._registration.unregistering:
                    self._timers["register"] = now + 5.0  # try again: the server may be restarting
            elif pending.purpose == "refresh":
                self._peer_lost(pending.call_id, now, "peer stopped answering")
            elif pending.purpose == "bye":
                call = self._calls.get(pending.call_id or "")
                if call is not None:
                    self._finish(call, now)
            return
        if isinstance(event, AckTimedOut):
            # 64*T1 of 2xx retransmissions without an ACK: end the session (RFC 3261 13.3.1.4)
            call = self._calls.get(pending.call_id or "")
            if call is not None and call.state is CallState.ANSWERED:
                self._send_bye(call, now, reason="no ACK", cause=408)
                self._emit(SessionFailed(call_id=call.call_id, status=408, reason="the caller never acknowledged",
                                         refused_by="network"))

    def _peer_lost(self, call_id: str | None, now: float, reason: str) -> None:
        call = self._calls.get(call_id or "")
        if call is None or call.state is not CallState.CONFIRMED:
            return
        call.state = CallState.ENDED
        self._publish(call, now, DialogState.TERMINATED, event="timeout", code=408)
        self._emit(SessionEnded(call_id=call.call_id, reason=reason, by_peer=True))
        self._finish(call, now)

    def _call_timer(self, call: Call, name: str, now: float) -> None:
        if name == "invite" and call.state is CallState.PENDING and call.is_caller and call.cancelled is None:
            self._send_cancel(call, now, (408, f"no answer from {call.peer_uri}", "peer"))
        elif name == "cancel" and call.state is CallState.PENDING and call.cancelled is not None:
            self._fail(call, *call.cancelled, now)
        elif name == "answer" and call.state is CallState.PENDING and not call.is_caller:
            self._answer_invite(call, now, 480, warning="no answer in time")
            self._emit(InviteCancelled(call_id=call.call_id, reason="not answered in time"))
            self._finish(call, now)
        elif name == "publish" and call.state is CallState.CONFIRMED:
            self._publish(call, now, DialogState.CONFIRMED, refresh=call.publish_etag is not None)
            call.timers["publish"] = now + self.config.publish_refresh_s
        elif name == "refresh" and call.state is CallState.CONFIRMED:
            assert call.dialog is not None
            req, call.dialog = build_in_dialog_request(
                call.dialog, "OPTIONS", branch=self._ids.branch(), extra=self._agent_header
            )
            self._start_client(req, now, Pending("refresh", call.call_id), destination=_next_hop(call.dialog))
            call.timers["refresh"] = now + self.config.session_refresh_s
        elif name == "forget":
            self._calls.pop(call.call_id, None)

    def _fail(self, call: Call, status: int, reason: str, by: str, now: float) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        self._emit(SessionFailed(call_id=call.call_id, status=status, reason=reason, refused_by=by))
        self._finish(call, now)

    def _finish(self, call: Call, now: float) -> None:
        call.state = CallState.ENDED
        for name in ("invite", "cancel", "answer", "refresh", "publish"):
            call.timers.pop(name, None)
        # keep the call a while to re-ACK retransmitted 2xx and answer late requests (64*T1)
        call.timers["forget"] = now + 64 * self.config.timers.t1

    def _emit(self, event: SessionEvent) -> None:
        self._events.append(event)

    def _session_id(self) -> int:
        return int.from_bytes(self._random(4), "big")

    def _sdp_id(self) -> int:
        return int.from_bytes(self._random(6), "big")


def _next_hop(dialog: Dialog) -> Address:
    """Where a request in ``dialog`` goes: its first route, else the remote target (RFC 3261 12.2.1.1, 8.1.2)."""
    uri = dialog.route_set[0].uri if dialog.route_set else dialog.remote_target
    return (uri.host.strip("[]"), uri.port or 5060)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _expires(resp: Response) -> int | None:
    try:
        return resp.expires
    except RemoteProtocolError:
        return None
