"""JSON codecs of the policy values: round trips, and arbitrary JSON -> value or RemoteProtocolError only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gamesdk.errors import RemoteProtocolError
from server.policy import (
    Activate,
    AppSession,
    Deny,
    DialogRef,
    EndReason,
    Grant,
    PolicyServer,
    Refresh,
    Release,
    Resource,
)
from server.policy.codec import (
    app_session_from_json_untrusted,
    app_session_to_json,
    decision_from_json_untrusted,
    decision_to_json,
    key_from_json_untrusted,
    key_to_json,
    operation_from_json_untrusted,
    operation_to_json,
    reservation_from_json_untrusted,
    reservation_to_json,
)

REF = DialogRef(call_id="c", local_tag="a", remote_tag="b", player="sip:alice@eu.example")


def test_round_trips(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    request = req(1, loss=1000, jit=9, transit=40, peer_rtt=7)
    assert app_session_from_json_untrusted(app_session_to_json(request)) == request
    assert key_from_json_untrusted(key_to_json(request.key)) == request.key
    grant = policy.final(request, 5.0)
    assert decision_from_json_untrusted(decision_to_json(grant)) == grant
    deny = Deny(network=None, resource=Resource.NETWORK, reason="no access network for 192.0.2.1")
    assert decision_from_json_untrusted(decision_to_json(deny)) == deny
    policy.activate(request.key, 6.0, 90)
    res = policy.get(request.key)
    assert res is not None and reservation_from_json_untrusted(reservation_to_json(res)) == res
    for op in (Activate(ref=REF, expires_s=90), Refresh(ref=REF, expires_s=60),
               Release(ref=REF, reason=EndReason.QOS_FAILED_PEER, sip_reason="SIP;cause=580")):
        assert operation_from_json_untrusted(operation_to_json(op)) == op


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"op": "activate", "dialog": {"callId": "c", "localTag": "a", "remoteTag": "b", "player": "p"},
          "expires": 0}, "expires"),
        ({"op": "release", "dialog": {"callId": "c", "localTag": "a", "remoteTag": "b", "player": "p"},
          "reason": "bored"}, "reason must be one of"),
        ({"op": "activate", "dialog": {"callId": 5}}, "callId"),
        ({"op": "activate"}, "dialog"),
    ],
)
def test_bad_operations(data: dict[str, Any], words: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        operation_from_json_untrusted(data)
    assert words in info.value.message and info.value.status_hint == 400


def test_grant_without_token_and_bad_decisions() -> None:
    grant = Grant(token=None, network="n", qos_class="c", priority=0, uplink_kbps=1, downlink_kbps=2,
                  latency_ms=3)
    assert decision_from_json_untrusted(decision_to_json(grant)) == grant
    with pytest.raises(RemoteProtocolError, match="granted"):
        decision_from_json_untrusted({"granted": "yes"})
    with pytest.raises(RemoteProtocolError, match="cause"):
        decision_from_json_untrusted({"granted": False, "cause": "boredom", "detail": "x"})


FIELDS = ["callId", "fromTag", "toTag", "side", "player", "peer", "ueIpv4", "medComponents", "marBwUl",
          "marBwDl", "desMaxLatency", "granted", "token", "network", "class", "cause", "detail", "op", "dialog",
          "expires", "reason", "request", "grant", "state", "t2xx", "deadline", "localTag", "remoteTag"]
leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.sampled_from(
    ["", "orig", "term", "FINAL", "activate", "release", "bye-local", "active", "10.1.0.1", "x" * 2000])
# Keys drawn from the field names (not free text) so the decoders get past their first checks.
json_values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), children, max_size=5),
    max_leaves=10,
)
objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=10)


@settings(max_examples=150, deadline=None)
@given(st.one_of(objects, json_values))
def test_untrusted_decoders_raise_only_remote_protocol_error(data: Any) -> None:
    for decode in (app_session_from_json_untrusted, decision_from_json_untrusted, operation_from_json_untrusted,
                   reservation_from_json_untrusted, key_from_json_untrusted):
        try:
            decode(data)
        except RemoteProtocolError:
            pass
