"""The message path leaves no reference cycles behind: what it drops is freed by reference counting at once.

Garbage in cycles waits for the cyclic collector, and every object that waits makes its collections come sooner
and last longer (a full collection walks every live object of the server: at a few hundred calls per second that
was a tenth of the CPU). A challenged INVITE used to leave its whole stack behind: the proxy kept the refusal (an
exception) in a local variable, the exception's traceback holds the frames, one of which is that frame.
"""

from __future__ import annotations

import gc
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_kit import ANSWER, OFFER, TestUA, Wire, login, make_node

from gamesdk.sip.message import Request
from gamesdk.sip.transaction import TransactionState
from server.hooks import CallInfo
from server.node import RegionalServer
from server.policy.runner import make_policy_hooks
from server.proxy_responses import ClientTx, ServerTx, _accepted_flat

EU = ("127.0.0.1", 5060)


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_a_challenged_invite_leaves_no_cycles(tmp_path: Path, no_collector: None) -> None:
    wire = Wire()
    wire.add_node(make_node("eu", 5060, 5062, tmp_path, {"alice": "apw", "dave": "dpw"}))
    alice = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("127.0.0.1", 7001)))
    for _ in range(3):
        invite = alice.invite("sip:dave@eu.gamesdk.test", OFFER)
        wire.send(alice.addr, EU, invite)
        (challenge,) = alice.responses()
        assert challenge.status == 407
        wire.send(alice.addr, EU, alice.ack_non2xx(invite, challenge))
        del invite, challenge
        assert gc.collect() == 0


# -- transactions: a completed one keeps what RFC 3261 section 17 needs, and ends without the collector ------------

NA = ("127.0.0.1", 5062)


@dataclass
class Regions:
    wire: Wire
    eu: RegionalServer
    na: RegionalServer
    alice: TestUA
    bob: TestUA



@pytest.fixture(params=["no policy", "region policy"])
def regions(request: pytest.FixtureRequest, tmp_path: Path) -> Regions:
    """alice at eu calls bob at na (eu -> na), with or without the region policy deciding on both servers."""
    wire = Wire()
    eu = wire.add_node(make_node("eu", 5060, 5062, tmp_path, {"alice": "apw"}))
    na = wire.add_node(make_node("na", 5062, 5060, tmp_path, {"bob": "bpw"}))
    if request.param == "region policy":
        for node in (eu, na):
            node.set_hooks(make_policy_hooks(node.config, node))
    alice = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("127.0.0.1", 7001)))
    bob = wire.add_ua(TestUA("bob", "na.gamesdk.test", "bpw", ("127.0.0.1", 7002)))
    login(wire, alice, EU)
    login(wire, bob, NA)
    return Regions(wire, eu, na, alice, bob)


def _call(r: Regions, outcome: str) -> None:
    """One call from alice to bob through eu and na, ending as ``outcome`` says; its transactions still run."""
    invite = r.alice.invite("sip:bob@na.gamesdk.test", OFFER)
    r.wire.send(r.alice.addr, EU, invite)
    (challenge,) = r.alice.responses()
    r.wire.send(r.alice.addr, EU, r.alice.ack_non2xx(invite, challenge))
    invite = r.alice.authorize(invite, challenge)
    r.wire.send(r.alice.addr, EU, invite)
    r.alice.take()
    if outcome == "timed out":
        r.wire.drop = lambda src, dst, data: dst == r.bob.addr
        r.wire.advance(40)
        r.wire.drop = None
        (timeout,) = [m for m in r.alice.responses() if m.status == 408][:1]
        r.wire.send(r.alice.addr, EU, r.alice.ack_non2xx(invite, timeout))
        return
    (arrived,) = r.bob.requests()
    r.wire.send(r.bob.addr, NA, r.bob.answer(arrived, 180))
    if outcome == "cancelled":
        cancel = Request("CANCEL", invite.uri, [
            ("Via", invite.headers.get("Via") or ""), ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""), ("To", invite.headers.get("To") or ""),
            ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq.seq} CANCEL")])
        r.wire.send(r.alice.addr, EU, cancel)
        (bob_cancel,) = r.bob.requests()
        r.wire.send(r.bob.addr, NA, r.bob.answer(bob_cancel, 200))
        r.wire.send(r.bob.addr, NA, r.bob.answer(arrived, 487))
        r.bob.take()
        (terminated,) = [m for m in r.alice.responses() if m.status == 487]
        r.wire.send(r.alice.addr, EU, r.alice.ack_non2xx(invite, terminated))
        return
    if outcome == "refused":
        r.wire.send(r.bob.addr, NA, r.bob.answer(arrived, 486))
        r.bob.take()
        busy = r.alice.responses()[-1]
        assert busy.status == 486
        r.wire.send(r.alice.addr, EU, r.alice.ack_non2xx(invite, busy))
        return
    ok = r.bob.answer(arrived, 200, ANSWER)
    r.wire.send(r.bob.addr, NA, ok)
    r.wire.send(r.bob.addr, NA, ok)  # a retransmission: forwarded with the same headers
    oks = [m for m in r.alice.responses() if m.status == 200]
    assert len(oks) == 2
    r.wire.send(r.alice.addr, EU, r.alice.ack_2xx(invite, oks[0]))
    bye = r.alice.bye(invite, oks[0])
    bye.uri = "sip:bob@na.gamesdk.test"  # through eu and na, as the players' SDK sends it to its server
    r.wire.send(r.alice.addr, EU, bye)
    requests = r.bob.requests()
    assert [m.method for m in requests] == ["ACK", "BYE"]
    r.wire.send(r.bob.addr, NA, r.bob.answer(requests[1], 200))
    assert [m.status for m in r.alice.responses()] == [200]


OUTCOMES = ["answered", "refused", "cancelled", "timed out"]


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_calls_leave_no_cyclic_garbage(regions: Regions, outcome: str, no_collector: None) -> None:
    """Found: a proxied request's two transaction sides referred to each other (a reference cycle per request):
    at 1,000 calls/s some 60,000 of them wait out their timers, and every one that ended waited in the oldest
    generation for a full collection, which walks all of them. The side that ends first lets go of the other."""
    r = regions
    _call(r, outcome)  # the first call of a kind fills the caches of the code it runs
    r.wire.advance(40)
    gc.collect()
    for _ in range(5):
        _call(r, outcome)
    r.wire.advance(40)  # past every transaction timer (64 * T1 = 32 s)
    for node in (r.eu, r.na):
        proxy = node.proxy
        assert not proxy.server_txs and not proxy.client_txs and not proxy.cancels
        assert not proxy.ended_server and not proxy.ended_client
        assert proxy.get_timer() is None
    assert gc.collect() == 0


def _tracked_from(start: object, *, shared: set[int]) -> list[object]:
    """The GC-tracked objects reachable from ``start`` (itself included) except ``shared`` ones, types, modules,
    functions and enum members: what it keeps alive for the collector to walk."""
    found = {id(start): start}
    todo = [start]
    while todo:
        for ref in gc.get_referents(todo.pop()):
            if (id(ref) in found or id(ref) in shared or not gc.is_tracked(ref)
                    or isinstance(ref, type | ModuleType | FunctionType | Enum)):
                continue
            found[id(ref)] = ref
            todo.append(ref)
    return list(found.values())


@pytest.mark.parametrize("outcome", ["answered", "refused"])
def test_a_completed_transaction_is_kept_as_values_the_collector_does_not_walk(regions: Regions,
                                                                              outcome: str) -> None:
    """RFC 3261 section 17: once a transaction has its final response it needs its key, the response's bytes (for
    a retransmitted request; a client INVITE's non-2xx the bytes of its ACK), its state and its deadline; RFC
    6026's Accepted INVITE also what a further 2xx goes up with. Found: each kept the request as parsed (its
    Headers, Vias, From, To, URIs) and the policy's facts the INVITE again: some 30 objects per call for every
    collection to walk, 32 s long; then still the ServerTx and ClientTx objects with their timer dicts (keyed by
    Input members), heap entries, upstream Vias, CallInfo and the 2xx's added headers: 16 objects per call. Now
    each is one tuple of strings, numbers and bytes, and so is its expiry: nothing the collector walks."""
    r = regions
    _call(r, outcome)
    r.wire.advance(1)  # past T1: the heap entries of the client sides' Timer A and E come up (nothing else)
    gc.collect()  # (untracks the tuples that hold only strings, numbers, bytes and such tuples, made inner first)
    for node in (r.eu, r.na):
        proxy = node.proxy
        assert not proxy.server_txs and not proxy.client_txs and len(proxy.timers) == 0
        methods = sorted(key[-1] for key in proxy.ended_server)
        assert methods == (["BYE", "INVITE"] if outcome == "answered" else ["INVITE"])
        assert sorted(key[1] for key in proxy.ended_client) == methods
        queued = {key for queue in proxy._ended_queues.values() for key in queue}
        assert queued | {key for _, key in proxy._ended_heap} == {*proxy.ended_server, *proxy.ended_client}
        held = [*proxy.ended_server, *proxy.ended_server.values(), *proxy.ended_client,
                *proxy.ended_client.values()]
        walked = [entry for entry in held if gc.is_tracked(entry) or len(_tracked_from(entry, shared=set())) > 1]
        assert walked == []
        assert proxy.get_timer() is not None


_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6)
_ADDR = st.tuples(_TEXT, st.integers(1, 65535))
_PROXIES: list[RegionalServer] = []


def _proxy() -> RegionalServer:
    if not _PROXIES:
        _PROXIES.append(make_node("eu", 5060, 5070, Path(tempfile.mkdtemp()), {"alice": "pw"}))
    return _PROXIES[0]


@settings(max_examples=100, deadline=None)
@given(key=st.lists(_TEXT, min_size=1, max_size=6).map(tuple), source=_ADDR, dest=_ADDR,
       vias=st.lists(_TEXT, min_size=1, max_size=3), names=st.tuples(_TEXT, _TEXT, _TEXT, _TEXT, _TEXT),
       caller=st.none() | st.lists(_ADDR, min_size=1, max_size=2).map(tuple),
       facts=st.none() | st.tuples(_TEXT, st.none() | _TEXT, st.booleans(), st.none() | _TEXT, st.none() | _ADDR,
                                   st.none() | _ADDR, st.none() | _TEXT),
       added=st.none() | st.dictionaries(_TEXT, st.lists(st.tuples(_TEXT, _TEXT), max_size=3), max_size=2),
       routes=st.lists(_TEXT, max_size=2).map(tuple))
def test_an_accepted_invite_is_brought_back_as_it_ended(
        key: tuple[str, ...], source: tuple[str, int], dest: tuple[str, int], vias: list[str],
        names: tuple[str, str, str, str, str], caller: tuple[tuple[str, int], ...] | None,
        facts: tuple[Any, ...] | None, added: dict[str, list[tuple[str, str]]] | None,
        routes: tuple[str, ...]) -> None:
    """An Accepted INVITE's facts are kept flattened in its ended entry (_accepted_flat, where marshal.dumps of a
    nested tuple was): brought back for a further 2xx (_revive), its two sides are what they were, and the entry
    holds nothing the collector walks after one collection."""
    call_id, from_, uri, ctx_uri, ctx_via = names
    call = None if facts is None else CallInfo(
        call_id=facts[0], from_tag=facts[1], caller="sip:a@x", callee="sip:b@x", caller_local=facts[2],
        callee_local=not facts[2], caller_network=facts[3], callee_network=None, caller_address=facts[4],
        callee_address=facts[5], peer_domain=facts[6], offer=b"v=0", content_type="application/sdp", invite=None)
    tx = ServerTx(key, "INVITE", None, source, TransactionState.ACCEPTED, final_status=200, call=call,
                  upstream_vias=vias, call_id=call_id, from_=from_, uri=uri, caller=caller)
    ctx = ClientTx("z9hG4bK-accepted", "INVITE", None, dest, TransactionState.ACCEPTED, server=tx,
                   added_2xx_headers=added, uri=ctx_uri, via=ctx_via, routes=routes)
    flat = _accepted_flat(ctx, tx)
    assert flat is not None
    flat[:7] = [1, 9.5, dest[0], dest[1], None, True, None if call is None else call.offer]
    entry = tuple(flat)
    gc.collect(0)  # (young: where the entry is)
    assert not gc.is_tracked(entry)
    proxy = _proxy().proxy
    proxy.ended_client[(ctx.branch, "INVITE")] = entry
    back = proxy._revive((ctx.branch, "INVITE"), entry)
    proxy.client_txs.clear()
    server = back.server
    assert server is not None
    assert (server.key, server.source, server.final_status, server.upstream_vias, server.call_id, server.from_,
            server.uri, server.caller, server.call) == (key, source, 200, vias, call_id, from_, uri, caller, call)
    assert (back.dest, back.added_2xx_headers, back.uri, back.via, back.routes) == (dest, added or None, ctx_uri,
                                                                                  ctx_via, routes)


def test_an_accepted_invite_with_a_header_of_another_type_stays_an_object() -> None:
    """A policy's header value that is no string (it might be an object the collector walks) is not flattened:
    the transaction stays an object, as when marshal refused it."""
    tx = ServerTx(("k",), "INVITE", None, ("h", 1), TransactionState.ACCEPTED, upstream_vias=["v"])
    ctx = ClientTx("b", "INVITE", None, ("h", 2), TransactionState.ACCEPTED, server=tx,
                   added_2xx_headers={"t": [("X", cast(str, object()))]})
    assert _accepted_flat(ctx, tx) is None


def test_a_call_set_up_keeps_one_object_for_the_collector_while_its_dialog_is_relayed(regions: Regions) -> None:
    """Up to 100,000 calls are kept for hours so their in-dialog requests can be relayed; each is one object for
    the cyclic collector: its parties' addresses are tuples, which a collection untracks the first time it sees
    them (found: two frozensets per call, walked by every full collection)."""
    _call(regions, "answered")
    gc.collect()
    gc.collect()  # (a tuple is untracked once what it holds is: an address first, then the tuple of them)
    for node in (regions.eu, regions.na):
        dialogs = list(node.proxy._dialogs.values())
        assert len(dialogs) == 1
        assert _tracked_from(dialogs[0], shared=set()) == [dialogs[0]]


def test_a_relayed_request_is_kept_without_a_request(regions: Regions) -> None:
    """The relay path (a BYE read from its head, forwarded spliced) made a Request of the head's fields for its
    server transaction, only to let it go at the final: nothing of ours ever answers such a request (no 408 for
    a non-INVITE, RFC 4320; no CANCEL applies). Its transaction keeps the Vias and the strings log lines name."""
    r = regions
    r.wire.drop = lambda src, dst, data: dst == r.bob.addr and data.startswith(b"BYE")
    with pytest.raises(AssertionError):
        _call(r, "answered")  # bob never gets the BYE
    r.wire.drop = None
    (tx,) = [tx for tx in r.eu.proxy.server_txs.values() if tx.method == "BYE"]
    assert tx.final_status == 0 and tx.request is None
    assert tx.call_id and tx.from_.startswith("<sip:alice@eu.gamesdk.test>") and tx.uri == "sip:bob@na.gamesdk.test"
    assert tx.upstream_vias and tx.upstream_vias[0].startswith("SIP/2.0/UDP 127.0.0.1:7001;")


def test_session_lines_name_the_call_with_and_without_its_request(
        regions: Regions, caplog: pytest.LogCaptureFixture) -> None:
    """server.sessions' lines name the call from the request while the transaction has it, from the strings it
    keeps after (a 2xx with another To tag, a relayed BYE)."""
    r = regions
    with caplog.at_level(logging.INFO, logger="server.sessions"):
        _call(r, "answered")
        _call(r, "refused")
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "server.sessions"]
    eu_up = [m for m in lines if m.startswith("session set up")]
    assert eu_up and all("caller=sip:alice@eu.gamesdk.test callee=sip:bob@na.gamesdk.test status=200" in m
                         for m in eu_up)
    ended = [m for m in lines if m.startswith("session ended")]
    assert ended and all("by=sip:alice@eu.gamesdk.test status=200" in m for m in ended)
    refused = [m for m in lines if m.startswith("session refused")]
    assert refused and all("caller=sip:alice@eu.gamesdk.test callee=sip:bob@na.gamesdk.test status=486" in m
                           for m in refused)
    call_ids = {m.split("call-id=", 1)[1].split()[0] for m in lines}
    assert len(call_ids) == 2 and "" not in call_ids


def test_session_lines_follow_the_level_as_it_changes(regions: Regions, caplog: pytest.LogCaptureFixture) -> None:
    """The session lines' check reads logging's memo of the level (server.proxy_responses._sessions_info): a level
    changed after a call was checked (the control's log-level, a reload, logging.disable) is the one the next call
    is checked at, both ways."""
    r = regions
    sessions = logging.getLogger("server.sessions")

    def lines_of(outcome: str) -> list[str]:
        caplog.clear()
        _call(r, outcome)
        return [rec.getMessage() for rec in caplog.records if rec.name == "server.sessions"]

    caplog.set_level(logging.INFO)  # caplog's handler takes every record the logger lets through
    before = sessions.level
    try:
        sessions.setLevel(logging.WARNING)
        assert lines_of("answered") == []
        sessions.setLevel(logging.INFO)
        got = lines_of("answered")
        assert any(m.startswith("session set up") for m in got) and any(m.startswith("session ended") for m in got)
        assert lines_of("refused")
        logging.disable(logging.INFO)
        assert lines_of("answered") == [] and lines_of("refused") == []
        logging.disable(logging.NOTSET)
        assert any(m.startswith("session set up") for m in lines_of("answered"))
        sessions.setLevel(logging.WARNING)
        assert lines_of("answered") == [] and lines_of("refused") == []
    finally:
        logging.disable(logging.NOTSET)
        sessions.setLevel(before)
