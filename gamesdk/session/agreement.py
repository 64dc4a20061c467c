"""What a session's two SDPs add up to: the public :class:`Agreement`, the game channel's parameters, and how a
refusal is told to the application (pure functions; the user agent calls them)."""

from __future__ import annotations

from gamesdk.channel.config import ChannelParams, PrivateKey
from gamesdk.channel.crypto import transcript_hash
from gamesdk.errors import LocalProtocolError, RemoteProtocolError
from gamesdk.events import Agreement
from gamesdk.qos.model import SessionTerms
from gamesdk.qos.negotiation import Requirements
from gamesdk.sdp.game import GameMedia, canonical_gsdk_lines
from gamesdk.sdp.ice import canonical_ice_lines
from gamesdk.sdp.model import SessionDescription
from gamesdk.session.requests import parse_reservations
from gamesdk.sip.message import Response
from gamesdk.sip.uri import SipUri

__all__ = ["as_offered", "channel_params", "failure_reason", "make_agreement", "peer_uri", "refused_by"]


def make_agreement(
    *,
    call_id: str,
    is_caller: bool,
    local: str,
    peer: str,
    offer: SessionTerms,
    answer: SessionTerms,
    peer_game: GameMedia,
    response: Response | None,
) -> Agreement:
    """The agreement as the application sees it; ``response`` is the caller's 2xx (reservations and tokens the
    servers added on its way), None on the callee's side (its servers report to the caller only)."""
    tokens = tuple(t.strip() for t in response.headers.values("P-Media-Authorization")) if response else ()
    return Agreement(
        call_id=call_id,
        is_caller=is_caller,
        local=local,
        peer=peer,
        format=answer.formats[0],
        classification=answer.classification,
        qos=answer.qos,
        suite=answer.suites[0],
        offer=offer,
        answer=answer,
        # DESIGN section 3 / docs/protocol.md: any changed gsdk-qos value (lat, jit, loss, pps) is a modification
        modified=(offer.qos.latency_ms, offer.qos.jitter_ms, offer.qos.loss_ppm, offer.qos.pps)
        != (answer.qos.latency_ms, answer.qos.jitter_ms, answer.qos.loss_ppm, answer.qos.pps),
        reservations=parse_reservations(response) if response else (),
        tokens=tokens,
        peer_addr=(peer_game.address, peer_game.port),
    )


def channel_params(
    *,
    is_caller: bool,
    call_id: str,
    from_tag: str,
    to_tag: str,
    offer: tuple[SessionDescription, GameMedia],
    answer: tuple[SessionDescription, GameMedia],
    private_key: bytes | PrivateKey,
) -> ChannelParams:
    """The game channel's keying input (DESIGN section 6): both sides compute the same transcript hash over the
    canonical gsdk and ICE lines of both SDPs, both public keys, the Call-ID and the dialog's From and To tags."""
    (offer_desc, offer_game), (answer_desc, answer_game) = offer, answer
    th = transcript_hash(
        canonical_gsdk_lines(offer_desc) + canonical_ice_lines(offer_desc),
        canonical_gsdk_lines(answer_desc) + canonical_ice_lines(answer_desc),
        offer_game.public_key,
        answer_game.public_key,
        call_id,
        from_tag,
        to_tag,
    )
    local, remote = (offer_game, answer_game) if is_caller else (answer_game, offer_game)
    return ChannelParams(
        role="offer" if is_caller else "answer",
        suite=answer_game.terms.suites[0],
        local_private_key=private_key,
        remote_public_key=remote.public_key,
        transcript_hash=th,
        local_session_id=local.session_id,
        remote_session_id=remote.session_id,
        peer_addr=(remote.address, remote.port),
    )


def as_offered(offer: SessionTerms) -> Requirements:
    """Requirements that accept the offer as it stands: its first format and the receive rate it sends."""
    return Requirements(formats=offer.formats[:1], receive_kbps=offer.receive_kbps, relax=True)


def peer_uri(peer: str) -> str:
    """``bob@na.gamesdk.test`` or a ``sip:`` URI as the address of record ``sip:bob@na.gamesdk.test``.

    Raises:
        LocalProtocolError: ``peer`` names no player.
    """
    text = peer.strip()
    if not text.startswith(("sip:", "sips:")):
        text = "sip:" + text
    try:
        uri = SipUri.parse(text)
    except RemoteProtocolError:
        raise LocalProtocolError(f"{peer!r} is not a player address like bob@na.gamesdk.test") from None
    if uri.user is None:
        raise LocalProtocolError(f"{peer!r} names no player (expected name@domain)")
    return uri.aor


def failure_reason(resp: Response) -> str:
    """The text of a final refusal: the first Warning's text (RFC 3261 20.43), else the reason phrase."""
    try:
        for warning in resp.warnings:
            if warning.text:
                return warning.text
    except RemoteProtocolError:
        pass
    return resp.reason or f"status {resp.status}"


#: Refusals that come from the invited player's SDK; the rest (404, 480, 408, 5xx ...) from a server on the way.
_PEER_STATUSES = frozenset({486, 487, 488, 600, 603, 606})


def refused_by(resp: Response) -> str:
    """``"peer"`` or ``"server"`` for a final refusal without a policy Warning."""
    return "peer" if resp.status in _PEER_STATUSES else "server"
