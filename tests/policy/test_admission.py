"""Admission: each short resource yields a Deny naming the network and the resource; nothing is held."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from server.policy import AppSession, Deny, Grant, MediaComponent, PolicyServer, Resource, Side


def test_grant_within_capacity(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    decision = policy.preliminary(req(up=300, down=900, lat=100, transit=40, peer_rtt=15), 0.0)
    assert isinstance(decision, Grant)
    assert decision.token is None  # PRELIMINARY holds nothing and hands out no token
    assert (decision.network, decision.qos_class, decision.priority) == ("eu-dsl", "casual", 1)
    assert (decision.uplink_kbps, decision.downlink_kbps, decision.latency_ms) == (300, 900, 20 + 40 + 15)
    assert policy.is_idle()


@pytest.mark.parametrize(
    ("kwargs", "resource", "reason"),
    [
        ({"ip": "192.0.2.9"}, Resource.NETWORK, "no access network for 192.0.2.9"),
        ({"up": 1001}, Resource.UPLINK, "insufficient uplink in eu-dsl (needs 1001 kbit/s, 1000 free)"),
        ({"down": 4001}, Resource.DOWNLINK, "insufficient downlink in eu-dsl (needs 4001 kbit/s, 4000 free)"),
        (
            {"lat": 50, "transit": 40, "peer_rtt": 20},
            Resource.LATENCY,
            "latency budget 80 ms exceeds 50 ms (eu-dsl 20 ms + transit 40 ms + peer access 20 ms)",
        ),
        ({"loss": 500}, Resource.LOSS, "loss 1000 ppm in eu-dsl exceeds 500 ppm"),
        ({"jit": 2}, Resource.JITTER, "jitter 5 ms in eu-dsl exceeds 2 ms"),
        (
            {"cls": "action", "up": 501},
            Resource.CLASS_SHARE,
            "class share of action exhausted in eu-dsl uplink (needs 501 kbit/s, 500 of 500 left)",
        ),
        (
            {"cls": "action", "up": 10, "down": 2001},
            Resource.CLASS_SHARE,
            "class share of action exhausted in eu-dsl downlink (needs 2001 kbit/s, 2000 of 2000 left)",
        ),
        ({"up": -1}, Resource.REQUEST, "negative bandwidth in media component 1"),
        ({"lat": 0}, Resource.REQUEST, "latency budget must be positive in media component 1"),
    ],
)
def test_each_short_resource_is_named(
    policy: PolicyServer, req: Callable[..., AppSession], kwargs: dict[str, object], resource: Resource, reason: str
) -> None:
    for check in (policy.preliminary, policy.final):
        decision = check(req(**kwargs), 0.0)
        assert isinstance(decision, Deny)
        assert decision.resource is resource
        assert decision.reason == reason
        if resource is not Resource.NETWORK:
            assert decision.network == "eu-dsl"
    assert policy.is_idle()


def test_latency_budget_boundary_is_inclusive(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    assert isinstance(policy.preliminary(req(lat=80, transit=40, peer_rtt=20), 0.0), Grant)
    assert isinstance(policy.preliminary(req(lat=79, transit=40, peer_rtt=20), 0.0), Deny)


def test_session_limit(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    for n in range(3):
        assert isinstance(policy.final(req(n, up=10, down=10), 0.0), Grant)
    decision = policy.final(req(99, up=10, down=10), 0.0)
    assert isinstance(decision, Deny)
    assert decision.resource is Resource.SESSIONS
    assert decision.reason == "session limit reached in eu-dsl (3 of 3)"
    # Another access network is not affected.
    assert isinstance(policy.final(req(100, ip="10.2.0.1"), 0.0), Grant)


def test_bandwidth_is_shared_between_reservations(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    assert isinstance(policy.final(req(1, up=600, down=100), 0.0), Grant)
    decision = policy.preliminary(req(2, up=401, down=100), 0.0)
    assert isinstance(decision, Deny)
    assert decision.reason == "insufficient uplink in eu-dsl (needs 401 kbit/s, 400 free)"
    assert isinstance(policy.preliminary(req(2, up=400, down=100), 0.0), Grant)


def test_class_share_counts_only_its_class(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    assert isinstance(policy.final(req(1, cls="action", up=400, down=100), 0.0), Grant)
    # action may hold 500 uplink: 100 left for action, but casual still sees the full remaining 600.
    denied = policy.preliminary(req(2, cls="action", up=101, down=10), 0.0)
    assert isinstance(denied, Deny) and denied.resource is Resource.CLASS_SHARE
    assert "100 of 500 left" in denied.reason
    assert isinstance(policy.preliminary(req(3, cls="casual", up=600, down=10), 0.0), Grant)


def test_unknown_class_is_refused_not_defaulted(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    # reserving (and billing) "tournament" as another class would contradict the agreement the players see
    decision = policy.preliminary(req(cls="tournament"), 0.0)
    assert isinstance(decision, Deny) and decision.resource is Resource.REQUEST
    assert "unknown game classification 'tournament'" in decision.reason and "casual" in decision.reason


def test_several_components_add_up(policy: PolicyServer) -> None:
    request = AppSession(
        call_id="multi", from_tag="f", to_tag="t", side=Side.TERM, player="sip:bob@eu.example",
        peer="sip:alice@eu.example", player_ip="10.1.1.1",
        components=(
            MediaComponent(number=1, uplink_kbps=600, downlink_kbps=10, max_latency_ms=100),
            MediaComponent(number=2, uplink_kbps=500, downlink_kbps=10, max_latency_ms=100),
        ),
    )
    decision = policy.preliminary(request, 0.0)
    assert isinstance(decision, Deny) and decision.resource is Resource.UPLINK


def test_no_components_is_a_request_error(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    from dataclasses import replace

    decision = policy.preliminary(replace(req(), components=()), 0.0)
    assert isinstance(decision, Deny)
    assert decision.resource is Resource.REQUEST and decision.status_hint == 400


def test_warning_header_value_quotes_reason() -> None:
    deny = Deny(network="eu-dsl", resource=Resource.UPLINK, reason='insufficient "uplink" in eu-dsl')
    assert deny.warning_value("eu.example") == '370 eu.example "insufficient \\"uplink\\" in eu-dsl"'
    assert deny.status_hint == 580


def test_the_components_are_read_once_per_tuple_and_config(region_doc: dict[str, object],
                                                          req: Callable[..., AppSession]) -> None:
    # A call's requests share their components tuple (the hooks keep it per game text): what admission reads from
    # it is gathered once per tuple and config, and a reloaded config (another object) reads it again.
    from server.policy import PolicyConfig, admission
    from server.policy.admission import NetworkUsage, admit

    config = PolicyConfig.from_mapping(region_doc)
    first = req(1, cls="action", up=300, down=300)
    second = dataclasses.replace(req(2, side=Side.TERM, up=1, down=1), components=first.components)
    net = config.network("eu-dsl")
    assert net is not None
    admission._asked.clear()
    decisions = [admit(config, NetworkUsage(), net, r) for r in (first, second, first)]
    assert len(admission._asked) == 1
    assert all(isinstance(d, Grant) and (d.qos_class, d.priority, d.uplink_kbps) == ("action", 10, 300)
               for d in decisions)
    assert admission._asked_of(config, first.components) is admission._asked_of(config, second.components)
    assert decisions[0] is decisions[2]  # the same grant (no token: immutable) for the same network and budget
    # The reloaded file no longer serves "action": the same tuple is refused under it, still served by the old.
    region_doc["classes"] = [{"name": "casual", "priority": 1, "default": True}]
    region_doc["tariff"] = {"currency": "EUR", "casual": {"per_minute": 0.01}}
    reloaded = PolicyConfig.from_mapping(region_doc)
    refused = admit(reloaded, NetworkUsage(), net, second)
    assert isinstance(refused, Deny) and refused.resource is Resource.REQUEST
    assert refused.reason == "unknown game classification 'action' (this region serves: casual)"
    assert isinstance(admit(config, NetworkUsage(), net, second), Grant)


def test_a_negative_round_trip_is_refused_after_the_components_faults(req: Callable[..., AppSession],
                                                                      policy: PolicyServer) -> None:
    shared = req(1, up=-1).components
    for transit in (0, -1):  # the component's fault comes first, whatever the round trips
        decision = policy.preliminary(dataclasses.replace(req(1, transit=transit), components=shared), 0.0)
        assert isinstance(decision, Deny) and decision.reason == "negative bandwidth in media component 1"
    decision = policy.preliminary(req(2, peer_rtt=-5), 0.0)
    assert isinstance(decision, Deny) and decision.reason == "negative round-trip time in request"
    assert decision.status_hint == 400
