"""From SDP offer/answer (gamesdk's shared QoS rules) to policy requests: the reservation follows the answer."""

from __future__ import annotations

from typing import Any

from gamesdk.qos.model import Side as QosSide
from gamesdk.qos.negotiation import demand
from gamesdk.sdp.examples import example_answer, example_offer
from gamesdk.sdp.game import Role, game_from_sdp
from server.policy import Deny, Grant, PolicyServer, Resource, Side
from server.policy.bridge import app_session_from_demand


def test_reservation_follows_modified_answer(policy: PolicyServer) -> None:
    offer = game_from_sdp(example_offer(), Role.OFFER).terms
    answer = game_from_sdp(example_answer(modified=True), Role.ANSWER).terms
    ids: dict[str, Any] = {"call_id": "c1@eu.example", "from_tag": "a1", "player": "sip:alice@eu.example",
           "peer": "sip:bob@na.example", "player_ip": "10.1.0.9", "transit_rtt_ms": 65}

    pre = app_session_from_demand(demand(offer, None, QosSide.CALLER), **ids)
    assert pre.side is Side.ORIG and pre.to_tag == ""
    [comp] = pre.components
    assert (comp.uplink_kbps, comp.downlink_kbps, comp.max_latency_ms) == (64, 64, 80)
    assert comp.qos_class == "action" and comp.max_loss_ppm == 10_000 and comp.max_jitter_ms == 15
    # eu-dsl 20 ms + transit 65 ms = 85 ms does not fit the offer's 80 ms ...
    decision = policy.preliminary(pre, 0.0)
    assert isinstance(decision, Deny) and decision.resource is Resource.LATENCY

    final = app_session_from_demand(demand(offer, answer, QosSide.CALLER), to_tag="b1", **ids)
    [comp] = final.components
    # ... but the answer relaxed lat to 100 ms and asks to receive 48 kbit/s: the caller's uplink is 48.
    assert (comp.uplink_kbps, comp.downlink_kbps, comp.max_latency_ms) == (48, 64, 100)
    assert final.game_format.startswith("pong/1")
    grant = policy.final(final, 1.0)
    assert isinstance(grant, Grant)
    assert (grant.uplink_kbps, grant.downlink_kbps, grant.latency_ms) == (48, 64, 85)


def test_callee_side_maps_to_term(policy: PolicyServer) -> None:
    offer = game_from_sdp(example_offer(), Role.OFFER).terms
    answer = game_from_sdp(example_answer(modified=True), Role.ANSWER).terms
    request = app_session_from_demand(
        demand(offer, answer, QosSide.CALLEE), call_id="c", from_tag="a", to_tag="b",
        player="sip:bob@eu.example", peer="sip:alice@na.example", player_ip="10.2.0.1",
    )
    assert request.side is Side.TERM
    assert (request.uplink_kbps, request.downlink_kbps) == (64, 48)
