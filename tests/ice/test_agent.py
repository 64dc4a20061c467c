"""The sans-IO ICE agent against RFC 8445's cases, on a simulated network with NATs and a virtual clock."""

from __future__ import annotations

import itertools
import os

from simnet import Nat, SimNet

from gamesdk.ice import stun
from gamesdk.ice.agent import Connected, ConsentLost, Failed, IceAgent, PairState

STUN = ("198.51.100.1", 3478)


def _agent(addr: tuple[str, int], controlling: bool, seed: int, **kwargs: object) -> IceAgent:
    counter = itertools.count(seed * 1_000_000)

    def random_bytes(n: int) -> bytes:
        return next(counter).to_bytes(8, "big").rjust(n, b"\x07")[-n:] if n <= 8 else os.urandom(n)

    return IceAgent(controlling=controlling, local_addr=addr, random_bytes=random_bytes,
                    stun_servers=[STUN], **kwargs)  # type: ignore[arg-type]


def _wire(net: SimNet, a: IceAgent, b: IceAgent) -> None:
    net.stun_servers.add(STUN)
    for agent in (a, b):
        agent.gather(net.now)
    net.run(2.0, until=lambda: a.gathering_done and b.gathering_done)
    assert a.gathering_done and b.gathering_done
    b.set_remote(a.local_ufrag, a.local_pwd, a.local_candidates, net.now)
    a.set_remote(b.local_ufrag, b.local_pwd, b.local_candidates, net.now)


def _connected(net: SimNet, agent: IceAgent) -> list[Connected]:
    return [e for e in net.events[agent.local_addr] if isinstance(e, Connected)]


def test_same_network_connects_directly_on_host_candidates() -> None:
    net = SimNet()
    a, b = _agent(("10.0.0.1", 5000), True, 1), _agent(("10.0.0.2", 5000), False, 2)
    net.add(a)
    net.add(b)
    _wire(net, a, b)
    net.run(5.0, until=lambda: a.selected is not None and b.selected is not None)
    (ca,), (cb,) = _connected(net, a), _connected(net, b)
    assert ca.path == cb.path == "direct"
    assert ca.pair.remote.address == b.local_addr and cb.pair.remote.address == a.local_addr
    assert ca.pair.nominated and cb.pair.nominated
    # application data goes straight to the peer, and arrives as the channel's
    data, dest = a.wrap(b"game", b.local_addr)
    assert (data, dest) == (b"game", b.local_addr)
    assert b.receive(b"\x41game", a.local_addr, net.now) == (b"\x41game", a.local_addr)


def test_cone_nats_connect_in_one_round_thanks_to_triggered_checks() -> None:
    net = SimNet(delay_s=0.01)
    a, b = _agent(("192.168.1.2", 5000), True, 1), _agent(("192.168.2.2", 5000), False, 2)
    net.add(a, Nat("203.0.113.10"))
    net.add(b, Nat("203.0.113.20"))
    _wire(net, a, b)
    assert {c.kind for c in a.local_candidates} == {"host", "srflx"}
    start = net.now
    net.run(5.0, until=lambda: a.selected is not None and b.selected is not None)
    assert a.selected is not None and b.selected is not None
    assert a.selected.remote.host == "203.0.113.20" and b.selected.remote.host == "203.0.113.10"
    # the first check toward a NAT that has not yet sent is dropped; the peer's check then triggers ours at
    # once, so nobody waits for a retransmission: both sides are done within a few one-way delays
    assert net.now - start < 0.1, net.now - start
    assert a.stats.triggered + b.stats.triggered >= 1


def test_role_conflict_is_resolved_by_the_tie_breaker() -> None:
    net = SimNet()
    a, b = _agent(("10.0.0.1", 5000), True, 1), _agent(("10.0.0.2", 5000), True, 2)  # both controlling
    net.add(a)
    net.add(b)
    _wire(net, a, b)
    net.run(5.0, until=lambda: a.selected is not None and b.selected is not None)
    assert a.stats.role_conflicts + b.stats.role_conflicts >= 1
    assert a.controlling != b.controlling
    assert (a.tie_breaker > b.tie_breaker) == a.controlling  # the larger tie-breaker keeps controlling
    assert a.selected is not None and b.selected is not None


def test_role_conflict_both_controlled() -> None:
    net = SimNet()
    a, b = _agent(("10.0.0.1", 5000), False, 1), _agent(("10.0.0.2", 5000), False, 2)
    net.add(a)
    net.add(b)
    _wire(net, a, b)
    net.run(5.0, until=lambda: a.selected is not None and b.selected is not None)
    assert a.controlling != b.controlling and a.selected is not None and b.selected is not None


def test_symmetric_nat_without_relay_fails_with_a_reason() -> None:
    net = SimNet()
    a, b = _agent(("192.168.1.2", 5000), True, 1), _agent(("192.168.2.2", 5000), False, 2)
    net.add(a, Nat("203.0.113.10", symmetric=True))
    net.add(b, Nat("203.0.113.20"))
    _wire(net, a, b)
    net.run(20.0, until=lambda: a.failed and b.failed)
    failures = [e for e in net.events[a.local_addr] if isinstance(e, Failed)]
    assert failures and "failed" in failures[0].reason and a.selected is None
    assert all(p.state == PairState.FAILED for p in a.pairs)


def test_unreachable_peer_fails_when_checks_run_out() -> None:
    net = SimNet()
    a, b = _agent(("10.0.0.1", 5000), True, 1), _agent(("10.0.0.2", 5000), False, 2)
    net.add(a)
    net.add(b)
    _wire(net, a, b)
    net.blackholes.add("10.0.0.2")
    net.blackholes.add("10.0.0.1")
    net.run(30.0, until=lambda: a.failed)
    assert a.failed and isinstance(next(e for e in net.events[a.local_addr] if isinstance(e, Failed)), Failed)


def test_forged_checks_get_no_answer_and_change_nothing() -> None:
    net = SimNet()
    a, b = _agent(("10.0.0.1", 5000), True, 1), _agent(("10.0.0.2", 5000), False, 2)
    net.add(a)
    net.add(b)
    _wire(net, a, b)
    forged = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=os.urandom(12),
                          attributes={"USERNAME": f"{b.local_ufrag}:{a.local_ufrag}", "PRIORITY": 1,
                                      "ICE-CONTROLLING": 1 << 63, "USE-CANDIDATE": None})
    forged.add_message_integrity(b"not the password")
    assert b.receive(bytes(forged), ("10.9.9.9", 1), net.now) is None
    assert b.datagrams_to_send() == [] and b.stats.bad_integrity == 1
    assert all(p.remote.host != "10.9.9.9" for p in b.pairs)
    net.run(5.0, until=lambda: a.selected is not None and b.selected is not None)
    assert b.selected is not None and b.selected.remote.address == a.local_addr


def test_controlled_side_uses_the_pair_the_controlling_side_nominated() -> None:
    net = SimNet()
    a = _agent(("10.0.0.1", 5000), True, 1, host_addrs=["10.0.0.1", "10.0.1.1"])
    b = _agent(("10.0.0.2", 5000), False, 2)
    net.add(a)
    net.add(b)
    _wire(net, a, b)
    net.run(5.0, until=lambda: a.selected is not None and b.selected is not None)
    assert a.selected is not None and b.selected is not None
    assert b.selected.remote.address == a.selected.local.address or b.selected.remote.kind == "prflx"
    assert b.selected.local.address == a.selected.remote.address


def test_consent_expires_when_the_peer_goes_silent() -> None:
    net = SimNet()
    a, b = _agent(("10.0.0.1", 5000), True, 1), _agent(("10.0.0.2", 5000), False, 2)
    net.add(a)
    net.add(b)
    _wire(net, a, b)
    net.run(5.0, until=lambda: a.selected is not None and b.selected is not None)
    net.run(20.0)
    assert a.may_send and b.may_send  # consent checks answered every ~5 s
    net.blackholes.add("10.0.0.2")
    net.run(40.0, until=lambda: not a.may_send)
    assert not a.may_send and any(isinstance(e, ConsentLost) for e in net.events[a.local_addr])
