"""The presence agent's tables (server/presence.py): a player's presence change looks only at its own watchers."""

from __future__ import annotations

from typing import Any

from gamesdk.sip.ids import SequentialIdFactory
from gamesdk.sip.message import Request
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.pidf import PresenceStatus
from server.presence import MAX_WATCHERS_PER_PLAYER, PresenceAgent

DOMAIN = "eu.gamesdk.test"


def _subscribe(watched: str, n: int, expires: int = 600) -> Request:
    text = (f"SUBSCRIBE sip:{watched}@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK-sub-{watched}-{n}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:watcher{n}@{DOMAIN}>;tag=w{n}\r\n"
            f"To: <sip:{watched}@{DOMAIN}>\r\n"
            f"Call-ID: sub-{watched}-{n}\r\n"
            "CSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:watcher{n}@192.0.2.9:{6000 + n}>\r\n"
            "Event: presence\r\n"
            f"Expires: {expires}\r\n"
            "Content-Length: 0\r\n\r\n")
    request = parse_message_untrusted(text.encode())
    assert isinstance(request, Request)
    return request


class _Counted(dict[Any, Any]):
    """The subscription table, counting the passes over all of it."""

    passes = 0

    def values(self) -> Any:
        type(self).passes += 1
        return super().values()

    def items(self) -> Any:
        type(self).passes += 1
        return super().items()

    def __iter__(self) -> Any:
        type(self).passes += 1
        return super().__iter__()


def _agent(status: dict[str, PresenceStatus]) -> PresenceAgent:
    return PresenceAgent(domain=DOMAIN, via=("192.0.2.1", 5060), ids=SequentialIdFactory(),
                         status_of=lambda aor, now: status.get(aor, PresenceStatus.OFFLINE))


def test_a_login_notifies_its_own_watchers_without_a_pass_over_every_subscription() -> None:
    status: dict[str, PresenceStatus] = {}
    agent = _agent(status)
    out: list[tuple[bytes, tuple[str, int]]] = []
    for n in range(50):
        agent.subscribe(_subscribe(f"other{n}", n), f"sip:watcher{n}@{DOMAIN}", 0.0, out)
    agent.subscribe(_subscribe("alice", 99), f"sip:watcher99@{DOMAIN}", 0.0, out)
    agent.subscribe(_subscribe("alice", 98), f"sip:watcher98@{DOMAIN}", 0.0, out)
    out.clear()
    agent.subs = _Counted(agent.subs)
    _Counted.passes = 0
    status[f"sip:alice@{DOMAIN}"] = PresenceStatus.ONLINE
    agent.changed(f"sip:alice@{DOMAIN}", 1.0, out)
    assert [dest for _, dest in out] == [("192.0.2.9", 6099), ("192.0.2.9", 6098)]  # its watchers, in order
    assert all(b"NOTIFY" in data and b"<basic>open</basic>" in data for data, _ in out)
    assert _Counted.passes == 0  # before: list(self.subs.values()) on every login, whoever logged in
    out.clear()
    agent.changed(f"sip:alice@{DOMAIN}", 2.0, out)  # nothing new to say
    agent.changed(f"sip:nobody@{DOMAIN}", 2.0, out)
    assert out == [] and _Counted.passes == 0


def test_the_watcher_limit_and_the_ends_of_subscriptions_keep_the_index_right() -> None:
    status: dict[str, PresenceStatus] = {}
    agent = _agent(status)
    out: list[tuple[bytes, tuple[str, int]]] = []
    for n in range(MAX_WATCHERS_PER_PLAYER):
        assert agent.subscribe(_subscribe("bob", n), f"sip:w{n}@{DOMAIN}", 0.0, out).status == 200
    assert agent.subscribe(_subscribe("bob", 500), f"sip:w500@{DOMAIN}", 0.0, out).status == 503
    assert agent.subscribe(_subscribe("carol", 500), f"sip:w500@{DOMAIN}", 0.0, out).status == 200
    # Expires: 0 ends one of bob's (the un-subscribe of the same dialog): room for one more watcher
    first = agent.subs[("sub-bob-0", "w0")]
    bye = _subscribe("bob", 0, expires=0)
    bye.headers.set("To", f"<sip:bob@{DOMAIN}>;tag={first.local_tag}")
    assert agent.subscribe(bye, f"sip:w0@{DOMAIN}", 1.0, out).status == 200
    assert agent.subscribe(_subscribe("bob", 501), f"sip:w501@{DOMAIN}", 1.0, out).status == 200
    # every subscription runs out: nobody is told of a later change
    agent.handle_timer(10_000.0, out)
    assert agent.subs == {}
    out.clear()
    status[f"sip:bob@{DOMAIN}"] = PresenceStatus.ONLINE
    agent.changed(f"sip:bob@{DOMAIN}", 10_001.0, out)
    assert out == []
