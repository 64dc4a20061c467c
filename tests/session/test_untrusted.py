"""Whatever arrives on the SIP socket, the user agent never raises: it answers with an error, drops the datagram
or ends the session with an event. Hypothesis mutates real messages of a session into hostile ones."""

from __future__ import annotations

from agent_kit import (
    ALICE,
    SCRIPTED_PEER,
    SCRIPTED_SERVER,
    Net,
    config,
    make_agent,
    offer_terms,
    ok_for,
    requests,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gamesdk.session.agent import UserAgent
from gamesdk.sip.dialog import build_bye, build_in_dialog_request, dialog_from_invite
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.transaction_client import build_cancel

HEADERS = ("To", "From", "Contact", "CSeq", "Via", "Call-ID", "Warning", "Reason", "Content-Type", "SIP-ETag",
           "P-Media-Authorization", "P-Gamesdk-Reservation", "Min-Expires", "Expires", "WWW-Authenticate",
           "Proxy-Authenticate", "Record-Route")
NASTY = ("", "*", "<>", "<sip:>", "sip:a@b;tag=", "<sip:x@[::1]:0>", '370 a "', "370", "SIP;cause=abc",
         "1 INVITE", "99999999999 BYE", "0 ACK", "SIP/2.0/UDP", "Digest", 'Digest realm="r", nonce=""', "\u00e9",
         "x" * 300, "<sip:x@127.0.0.1:7001;lr>", "application/sdp", "-1", "4294967296")


def setup() -> tuple[Net, UserAgent, Request]:
    net = Net()
    net.add_scripted(SCRIPTED_SERVER)
    net.add_scripted(SCRIPTED_PEER)
    agent = net.add_agent(make_agent(config("alice", "pw", "eu.gamesdk.test", SCRIPTED_SERVER), ALICE, "a"))
    agent.invite("bob@na.gamesdk.test", offer_terms(), net.now)
    invite = requests(net.inbox(SCRIPTED_SERVER), "INVITE")[0]
    return net, agent, invite


def seeds(invite: Request) -> list[Request | Response]:
    """Messages the caller may meet: answers to its INVITE, then requests of the peer in the dialog."""
    dialog = dialog_from_invite(invite, "peer-tag", "<sip:peer@127.0.0.1:7001>")
    bye, _ = build_bye(dialog, "z9hG4bK-f1")
    options, _ = build_in_dialog_request(dialog, "OPTIONS", branch="z9hG4bK-f2")
    reinvite, _ = build_in_dialog_request(dialog, "INVITE", branch="z9hG4bK-f3", body=invite.body,
                                          content_type="application/sdp")
    return [
        response_for(invite, 180, to_tag="peer-tag"),
        ok_for(invite),
        ok_for(invite, extra=[("Warning", '370 eu.gamesdk.test "no uplink"')]),
        response_for(invite, 407, to_tag="srv", extra=[("Proxy-Authenticate", 'Digest realm="r", nonce="n"')]),
        response_for(invite, 486, to_tag="peer-tag"),
        bye, options, reinvite, build_cancel(invite),
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.integers(min_value=0, max_value=8),
    then=st.lists(st.integers(min_value=0, max_value=8), max_size=3),
    header=st.sampled_from(HEADERS),
    value=st.one_of(st.sampled_from(NASTY), st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                                    max_size=40)),
    body=st.one_of(st.none(), st.binary(max_size=80)),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=600)),
)
def test_hostile_messages_never_raise(first: int, then: list[int], header: str, value: str,
                                      body: bytes | None, cut: int | None) -> None:
    net, agent, invite = setup()
    messages = seeds(invite)
    hostile = messages[first].copy()
    hostile.headers.set(header, value)
    if body is not None:
        hostile.body = body
    data = hostile.to_bytes()
    if cut is not None:
        data = data[:cut]
    for index in [*then, first]:
        source = SCRIPTED_PEER if isinstance(messages[index], Request) else SCRIPTED_SERVER
        agent.receive_datagram(messages[index].to_bytes(), source, net.now)
    agent.receive_datagram(data, SCRIPTED_PEER, net.now)
    net.run(40)  # every timer the hostile message armed fires, without an exception
    assert agent.get_timer() is None or agent.get_timer() > net.now  # type: ignore[operator]
