"""server/policy/bridge: from the shared QoS rules (``gamesdk.qos``) to a policy request.

The SIP server reads the offer (INVITE) and the answer (2xx) with ``gamesdk.sdp``, computes the access-network
demand with ``gamesdk.qos.negotiation.demand(offer, answer, side)`` (one rule set for SDK and server), and hands
it here with the dialog identifiers to get the :class:`AppSession` for ``preliminary`` / ``final``.
"""

from __future__ import annotations

from gamesdk.qos.model import Side as QosSide
from gamesdk.qos.negotiation import Demand

from .model import AppSession, MediaComponent, Side, new_app_session

__all__ = ["DemandParts", "app_session_from_demand", "app_session_from_parts", "demand_parts"]

#: (side, media components, game format, qos text) of a request.
DemandParts = tuple[Side, tuple[MediaComponent, ...], str, str]


def app_session_from_demand(
    demand: Demand,
    *,
    call_id: str,
    from_tag: str,
    to_tag: str = "",
    player: str,
    peer: str,
    player_ip: str,
    transit_rtt_ms: int = 0,
    peer_access_rtt_ms: int = 0,
) -> AppSession:
    """The policy request for ``demand`` (PRELIMINARY when ``demand.final`` is False and ``to_tag`` empty).

    ``player`` is this server's player (the caller at the caller's server, the callee at the callee's).
    """
    return app_session_from_parts(demand_parts(demand), call_id=call_id, from_tag=from_tag, to_tag=to_tag,
                                  player=player, peer=peer, player_ip=player_ip, transit_rtt_ms=transit_rtt_ms,
                                  peer_access_rtt_ms=peer_access_rtt_ms)


def app_session_from_parts(
    parts: DemandParts,
    *,
    call_id: str,
    from_tag: str,
    to_tag: str,
    player: str,
    peer: str,
    player_ip: str,
    transit_rtt_ms: int,
    peer_access_rtt_ms: int,
) -> AppSession:
    """:func:`app_session_from_demand` from the parts :func:`demand_parts` took (kept by the hooks per terms)."""
    side, components, game_format, qos_text = parts
    return new_app_session(call_id, from_tag, to_tag, side, player, peer, player_ip, components, transit_rtt_ms,
                           peer_access_rtt_ms, game_format, qos_text)


def demand_parts(demand: Demand) -> DemandParts:
    """What a request takes from ``demand``: the side, the media component, the format and the qos text (immutable
    values, so the hooks keep them for the terms they come from)."""
    return (
        Side.ORIG if demand.side == QosSide.CALLER else Side.TERM,
        (
            MediaComponent(
                number=1,
                uplink_kbps=demand.up_kbps,
                downlink_kbps=demand.down_kbps,
                max_latency_ms=demand.latency_ms,
                max_loss_ppm=demand.loss_ppm,
                max_jitter_ms=demand.jitter_ms,
                qos_class=demand.classification,
            ),
        ),
        str(demand.format),
        f"lat={demand.latency_ms};jit={demand.jitter_ms};loss={demand.loss_ppm};pps={demand.up_pps}/{demand.down_pps}",
    )
