"""The caller's side of the user agent (RFC 3261 13.2, 9.1): the INVITE with our offer, digest retries, the
answer checked against our bounds and the policy servers' verdict, the ACK straight to the callee (or ACK then
BYE with a Reason), and CANCEL."""

from __future__ import annotations

from gamesdk.errors import LocalProtocolError, RemoteProtocolError, SdpError
from gamesdk.events import Ringing
from gamesdk.identity import IdentityError
from gamesdk.qos.model import SessionTerms
from gamesdk.qos.negotiation import Acceptable, check_answer
from gamesdk.sdp.codec import format_sdp
from gamesdk.sdp.game import Role, read_game_untrusted
from gamesdk.sdp.ice import read_ice_untrusted
from gamesdk.session.agreement import failure_reason, make_agreement, peer_uri, refused_by
from gamesdk.session.calls import Call, CallState, Pending
from gamesdk.session.core import AgentCore, next_hop
from gamesdk.session.credentials import MAX_AUTH_RETRIES
from gamesdk.session.requests import ALLOW, SDP, build_request, policy_warning
from gamesdk.sip.dialog import build_ack_for_2xx, dialog_from_2xx
from gamesdk.sip.message import Response
from gamesdk.sip.transaction_client import ClientInviteTransaction, build_cancel

__all__ = ["UacSide"]


class UacSide(AgentCore):
    """The invitations this player sends."""

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
        )
        call.offer_desc, call.offer_game = self._local_stream(call, terms, Role.OFFER)
        self._track(call)
        self._send_invite(call, now, auth=self._credentials.cached(407, "INVITE", peer))
        call.timers["invite"] = now + self.config.invite_timeout_s
        return call_id

    def cancel(self, call_id: str, now: float) -> None:
        """Withdraw an invitation that has no final answer yet (CANCEL, RFC 3261 section 9); once is enough,
        a second call changes nothing."""
        call = self._calls.get(call_id)
        if call is None or not call.is_caller or call.state is not CallState.PENDING or call.invite is None:
            raise LocalProtocolError(f"no pending outgoing invitation {call_id!r}")
        if call.cancelled is not None:
            return
        self._send_cancel(call, now, (487, "invitation cancelled", "local"))

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
            content_type=SDP,
            user_agent=self.config.user_agent,
        )
        call.invite = self._over_flow(req)
        tx = ClientInviteTransaction(req, now, destination=self.config.server_address, config=self.config.timers)
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
        if self.identity is not None:
            try:
                self.identity.verify(resp.headers.get("Identity"), orig=call.peer_uri, dest=call.local_uri,
                                     sdp=resp.body)
            except IdentityError as exc:
                # the answer's keys are not the callee region's word: never play over them
                self.stats["identity_refused"] = self.stats.get("identity_refused", 0) + 1
                return 438, f"answer identity: {exc.reason}", "local", "Invalid Identity Header"
        try:
            desc, game = read_game_untrusted(resp.body, Role.ANSWER)
            remote_ice = read_ice_untrusted(desc)
        except SdpError as exc:
            return 488, f"bad answer: {exc.message}", "peer", "QoS answer unacceptable"
        assert call.offer is not None
        # Bounds left open default to the offer: an answer asking for more bandwidth or packets than offered
        # would make this player reserve and pay for what it never asked.
        rejected = check_answer(call.offer, game.terms, (call.acceptable or Acceptable()).within_offer(call.offer))
        if rejected is not None:
            return 488, rejected.reason, "local", "QoS answer unacceptable"
        call.answer_desc, call.answer_game = desc, game
        call.remote_ice = remote_ice
        if self.paths is not None:
            self.paths.remote_ice(call.call_id, remote_ice, controlling=True)
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
        call.ack = (req.to_bytes(), next_hop(call.dialog))
        self._out.append(call.ack)
        self.stats["acks_sent"] += 1

    def _send_cancel(self, call: Call, now: float, outcome: tuple[int, str, str]) -> None:
        assert call.invite is not None
        call.cancelled = outcome
        if not call.provisional:
            return  # sent when the first provisional response arrives (RFC 3261 9.1)
        self._start_client(build_cancel(call.invite), now, Pending("cancel", call.call_id))
        # RFC 3261 9.1: without a final answer 64*T1 after the CANCEL, give the INVITE up (a callee in
        # Proceeding has no Timer B to end it for us)
        call.timers["cancel"] = now + 64 * self.config.timers.t1

    def _invite_timed_out(self, call: Call, why: str, now: float) -> None:
        if call.state is not CallState.PENDING:
            return
        # the application's own CANCEL stays what it asked for; an invite timeout without a single provisional
        # response is the server's silence, not the peer's
        if call.cancelled is not None and (call.provisional or call.cancelled[2] == "local"):
            self._fail(call, *call.cancelled, now)
        else:
            self._fail(call, 408, f"no response from the server ({why})", "network", now)

    def _caller_timer(self, call: Call, name: str, now: float) -> None:
        if name == "invite" and call.state is CallState.PENDING and call.cancelled is None:
            self._send_cancel(call, now, (408, f"no answer from {call.peer_uri}", "peer"))
        elif name == "cancel" and call.state is CallState.PENDING and call.cancelled is not None:
            self._fail(call, *call.cancelled, now)
