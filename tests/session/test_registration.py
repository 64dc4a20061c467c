"""Login and logout of the sans-IO user agent against a real regional server node, on a fake clock."""

from __future__ import annotations

from pathlib import Path

from agent_kit import ALICE, EU_SERVER, Net, config, make_agent, regions, requests, responses
from server_kit import make_node

from gamesdk.events import Registered, RegistrationFailed, Unregistered


def test_register_answers_the_challenge_and_refreshes_at_half_the_granted_time(tmp_path: Path) -> None:
    net, alice, _ = regions(tmp_path)
    alice.register(net.now)
    events = net.take(ALICE)
    assert [type(e) for e in events] == [Registered]
    granted = events[0].expires_s  # type: ignore[attr-defined]
    assert granted > 10 and alice.registered
    registers = requests(net.sent(ALICE, EU_SERVER), "REGISTER")
    assert [r.headers.get("Authorization") is None for r in registers] == [True, False]
    assert [s.status for s in responses(net.sent(EU_SERVER, ALICE), "REGISTER")] == [401, 200]
    start = net.now
    net.run(granted / 2 - 1)
    assert len(requests(net.sent(ALICE, EU_SERVER), "REGISTER")) == 2
    net.run(2)
    refreshed = net.take(ALICE)
    assert [type(e) for e in refreshed] == [Registered]
    later = requests(net.sent(ALICE, EU_SERVER), "REGISTER")[2:]
    assert later, "no refresh at half the granted time"
    # the refresh carries credentials at once for the cached challenge (RFC 3261 22.3): no extra round trip
    assert later[0].headers.get("Authorization") is not None
    assert net.now - start >= granted / 2
    # the same registration Call-ID with a growing CSeq (RFC 3261 10.2.4)
    sequence = [r.cseq.seq for r in requests(net.sent(ALICE, EU_SERVER), "REGISTER")]
    assert sequence == sorted(set(sequence))
    assert {r.call_id for r in requests(net.sent(ALICE, EU_SERVER), "REGISTER")} == {registers[0].call_id}


def test_interval_too_brief_retries_with_min_expires_and_keeps_it(tmp_path: Path) -> None:
    net = Net()
    node = net.add_node(make_node("eu", EU_SERVER[1], 5070, tmp_path, {"alice": "alice-pw"}))
    minimum = node.config.registrar.min_expires_s
    agent = net.add_agent(make_agent(config("alice", "alice-pw", "eu.gamesdk.test", EU_SERVER,
                                            register_expires_s=5), ALICE, "a"))
    agent.register(net.now)
    events = net.take(ALICE)
    assert [type(e) for e in events] == [Registered], events
    assert events[0].expires_s == minimum  # type: ignore[attr-defined]
    assert 423 in [s.status for s in responses(net.sent(EU_SERVER, ALICE))]
    before = len(net.sent(EU_SERVER, ALICE))
    net.run(minimum / 2 + 1)
    assert [type(e) for e in net.take(ALICE)] == [Registered]
    # the refresh asks for the minimum the server named, so no second 423
    assert 423 not in [s.status for s in responses(net.sent(EU_SERVER, ALICE)[before:])]


def test_wrong_password_fails_the_login(tmp_path: Path) -> None:
    net = Net()
    net.add_node(make_node("eu", EU_SERVER[1], 5070, tmp_path, {"alice": "alice-pw"}))
    agent = net.add_agent(make_agent(config("alice", "wrong", "eu.gamesdk.test", EU_SERVER), ALICE, "a"))
    agent.register(net.now)
    events = net.take(ALICE)
    assert len(events) == 1 and isinstance(events[0], RegistrationFailed), events
    assert events[0].status in (401, 403)
    assert "password" in events[0].reason
    assert not agent.registered
    # a bounded number of attempts, and no refresh timer left behind
    assert len(requests(net.sent(ALICE, EU_SERVER), "REGISTER")) <= 3
    net.run(600)
    assert net.take(ALICE) == []


def test_unregister_drops_the_binding_and_stops_refreshing(tmp_path: Path) -> None:
    net, alice, _ = regions(tmp_path)
    alice.register(net.now)
    assert [type(e) for e in net.take(ALICE)] == [Registered]
    alice.unregister(net.now)
    assert [type(e) for e in net.take(ALICE)] == [Unregistered]
    assert not alice.registered
    last = requests(net.sent(ALICE, EU_SERVER), "REGISTER")[-1]
    assert last.headers.get("Expires") == "0"
    count = len(net.sent(ALICE))
    net.run(3600)
    assert len(net.sent(ALICE)) == count


def test_silent_server_reports_408_and_tries_again(tmp_path: Path) -> None:
    net = Net()
    net.add_scripted(EU_SERVER)
    agent = net.add_agent(make_agent(config("alice", "pw", "eu.gamesdk.test", EU_SERVER), ALICE, "a"))
    agent.register(net.now)
    net.run(40)
    failed = [e for e in net.take(ALICE) if isinstance(e, RegistrationFailed)]
    assert failed and failed[0].status == 408
    assert len({r.cseq.seq for r in requests(net.inbox(EU_SERVER), "REGISTER")}) >= 2
