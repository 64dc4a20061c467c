"""The requests this player's user agent receives (RFC 3261 8.2, 12.2.2, 13.3): invitations answered by the
application (180 while it decides, then 2xx with our answer, or a refusal), their ACK and CANCEL, and in-dialog
BYE, OPTIONS and re-INVITE, matched to their dialog on the Call-ID and both tags."""

from __future__ import annotations

import logging

from gamesdk.address import Address
from gamesdk.errors import LocalProtocolError, RemoteProtocolError, SdpError
from gamesdk.events import InviteCancelled, InviteReceived, SessionEnded, SessionFailed
from gamesdk.identity import IdentityError
from gamesdk.qos.model import SessionTerms
from gamesdk.qos.negotiation import Accepted, Requirements, answer_offer
from gamesdk.sdp.codec import format_sdp
from gamesdk.sdp.game import Role, read_game_untrusted
from gamesdk.sdp.ice import read_ice_untrusted
from gamesdk.session.agreement import as_offered, make_agreement
from gamesdk.session.calls import Call, CallState, Pending
from gamesdk.session.core import AgentCore
from gamesdk.session.requests import ALLOW, SDP
from gamesdk.sip.dialog import dialog_from_invite, incoming_dialog_id, receive_in_dialog_request
from gamesdk.sip.dialog_info import DialogState
from gamesdk.sip.headers import Warning
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.transaction_server import ServerInviteTransaction, ServerNonInviteTransaction

__all__ = ["UasSide"]

log = logging.getLogger(__name__)


class UasSide(AgentCore):
    """The requests this player receives."""

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
        call.answer_desc, call.answer_game = self._local_stream(call, answer, Role.ANSWER, call.offer_desc)
        body = format_sdp(call.answer_desc).encode()
        tx = call.invite_tx
        assert isinstance(tx, ServerInviteTransaction) and call.invite is not None
        # RFC 3261 section 12.1.1: the UAS copies every Record-Route of the INVITE into its 2xx, in order, so a
        # record-routing proxy (an operator's choice) also carries the ACK and the later in-dialog requests.
        record_routes = [("Record-Route", v) for v in call.invite.headers.get_all("Record-Route")]
        resp = response_for(
            call.invite,
            200,
            to_tag=call.local_tag,
            extra=[*record_routes, ("Contact", self.contact), ("Allow", ALLOW), ("Content-Type", SDP)],
            body=body,
        )
        tx.send_response(resp, now)
        call.state = CallState.ANSWERED
        call.timers.pop("answer", None)
        call.timers.pop("ring", None)
        # the channel's keying input is known now: work it out on the next timer run, once the 200 is out,
        # rather than between the caller's ACK and the established event
        call.timers["keys"] = now
        return answer

    def decline(self, call_id: str, now: float, *, status: int = 603, reason: str = "Declined") -> None:
        """Refuse an invitation with ``status`` (603 Decline, 486 Busy Here, 488 ...) and a reason text."""
        call = self._pending_incoming(call_id)
        if not 400 <= status <= 699:
            raise LocalProtocolError(f"decline status must be 400..699, got {status}")
        self._answer_invite(call, now, status, warning=reason)
        self._finish(call, now)

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
        elif req.method == "REFER":
            self._incoming_refer(req, tx, addr, now)
        elif req.method == "NOTIFY":
            tx.send_response(self._incoming_notify(req, now), now)
        elif req.method in ("REGISTER", "PUBLISH", "SUBSCRIBE", "MESSAGE", "INFO", "UPDATE", "PRACK"):
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
        if self.identity is not None:
            try:
                self.identity.verify(req.headers.get("Identity"), orig=call.peer_uri, dest=call.local_uri,
                                     sdp=req.body)
            except IdentityError as exc:
                # RFC 8224 section 6.2.2: 428 without an Identity, 438 for one that does not verify; no session
                self.stats["identity_refused"] = self.stats.get("identity_refused", 0) + 1
                log.warning("invitation %s from %s refused: %s", call.call_id, call.peer_uri, exc)
                tx.send_response(response_for(req, exc.status, exc.reason[:120], to_tag=call.local_tag), now)
                return
        try:
            call.offer_desc, game = read_game_untrusted(req.body, Role.OFFER)
            call.remote_ice = read_ice_untrusted(call.offer_desc)
        except SdpError as exc:
            self._answer_invite(call, now, 488, warning=exc.message)
            return
        call.offer_game = game
        self._track(call)
        if self.ringing_delay_s > 0:
            call.timers["ring"] = now + self.ringing_delay_s
        else:
            self._send_ringing(call, now)
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
        cause: int | None = None
        try:
            for r in req.reasons:
                if r.protocol.upper() == "SIP" and r.cause is not None:
                    cause = r.cause
                if r.text:
                    reason = r.text if r.cause is None else f"{r.cause} {r.text}"
        except RemoteProtocolError:
            pass
        was = call.state
        call.state = CallState.ENDED
        # The BYE's cause goes to our server too: a 580 there bills the session as qos-failed-peer.
        self._publish(call, now, DialogState.TERMINATED, event="remote-bye", code=cause)
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

    def _send_ringing(self, call: Call, now: float) -> None:
        tx = call.invite_tx
        assert isinstance(tx, ServerInviteTransaction) and call.invite is not None
        tx.send_response(response_for(call.invite, 180, to_tag=call.local_tag, extra=[("Contact", self.contact)]), now)

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

    def _ack_timed_out(self, call: Call, now: float) -> None:
        # 64*T1 of 2xx retransmissions without an ACK: end the session (RFC 3261 13.3.1.4)
        if call.state is CallState.ANSWERED:
            self._send_bye(call, now, reason="no ACK", cause=408)
            self._emit(SessionFailed(call_id=call.call_id, status=408, reason="the caller never acknowledged",
                                     refused_by="network"))

    def _callee_timer(self, call: Call, name: str, now: float) -> None:
        if name == "ring" and call.state is CallState.PENDING:
            self._send_ringing(call, now)  # the application is still deciding (RFC 3261 13.3.1.1)
        elif name == "answer" and call.state is CallState.PENDING:
            self._answer_invite(call, now, 480, warning="no answer in time")
            self._emit(InviteCancelled(call_id=call.call_id, reason="not answered in time"))
            self._finish(call, now)
