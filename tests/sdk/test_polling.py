"""The PollingClient: the whole session driven from a plain loop, no asyncio in the players' code."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from regions import DOMAINS, USERS, threaded_regions

from gamesdk import ClientConfig, InvitationWithdrawn, Lane, PollingClient
from gamesdk.errors import LocalProtocolError
from gamesdk.events import (
    InviteCancelled,
    InviteReceived,
    MessageReceived,
    Registered,
    Ringing,
    SessionEnded,
    SessionEstablished,
    SessionFailed,
    Unregistered,
)
from server.policy.cli_support import billing_rows


def test_polling_clients_play_a_session(tmp_path: Path) -> None:
    with threaded_regions(tmp_path) as (eu, na):
        alice = PollingClient(ClientConfig(username="alice", password=USERS["eu"]["alice"],
                                           domain=DOMAINS["eu"], server=eu.address))
        bob = PollingClient(ClientConfig(username="bob", password=USERS["na"]["bob"],
                                         domain=DOMAINS["na"], server=na.address))
        seen: dict[str, list[object]] = {"alice": [], "bob": []}
        now = time.monotonic()
        alice.login(now)
        bob.login(now)
        call_id = None
        served = False
        received: list[bytes] = []
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:  # the game loop: one poll per frame
            now = time.monotonic()
            for name, client in (("alice", alice), ("bob", bob)):
                for event in client.poll(now):
                    seen[name].append(event)
                    if isinstance(event, InviteReceived):
                        bob.accept(event.call_id, now)
            # invite once both players are logged in
            if call_id is None and any(isinstance(e, Registered) for e in seen["alice"]) and any(
                isinstance(e, Registered) for e in seen["bob"]
            ):
                call_id = alice.invite("bob@na.gamesdk.test", now, latency_ms=70)
            if call_id in alice.sessions and call_id in bob.sessions and not served:
                alice.sessions[call_id].send(b"serve", Lane.RELIABLE)
                served = True
            for session in list(bob.sessions.values()):
                for ch_event in session.poll(now):
                    if isinstance(ch_event, MessageReceived):
                        received.append(ch_event.data)
            for session in list(alice.sessions.values()):
                session.poll(now)
                if received:
                    session.end(now, "done")
            if any(isinstance(e, SessionEnded) for e in seen["bob"]):
                break
            time.sleep(0.002)
        assert received == [b"serve"]
        established = [e for e in seen["alice"] if isinstance(e, SessionEstablished)]
        assert established and established[0].agreement.qos.latency_ms == 70
        ended = [e for e in seen["bob"] if isinstance(e, SessionEnded)]
        assert ended and ended[0].by_peer and ended[0].reason == "done"
        alice.close()
        bob.close()


def test_polling_client_withdraws_an_invitation(tmp_path: Path) -> None:
    with threaded_regions(tmp_path) as (eu, na):
        alice = PollingClient(ClientConfig(username="alice", password=USERS["eu"]["alice"],
                                           domain=DOMAINS["eu"], server=eu.address))
        bob = PollingClient(ClientConfig(username="bob", password=USERS["na"]["bob"],
                                         domain=DOMAINS["na"], server=na.address))
        seen: dict[str, list[object]] = {"alice": [], "bob": []}
        now = time.monotonic()
        alice.login(now)
        bob.login(now)
        call_id = None
        cancelled = False
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:  # bounded game loop
            now = time.monotonic()
            for name, client in (("alice", alice), ("bob", bob)):
                seen[name].extend(client.poll(now))
            logged_in = all(any(isinstance(e, Registered) for e in seen[n]) for n in seen)
            if call_id is None and logged_in:
                call_id = alice.invite("bob@na.gamesdk.test", now)
            if call_id is not None and not cancelled and any(isinstance(e, Ringing) for e in seen["alice"]):
                alice.cancel(call_id, now)
                alice.cancel(call_id, now)  # a second cancel() of the same invitation changes nothing
                cancelled = True
            if any(isinstance(e, SessionFailed) for e in seen["alice"]) and any(
                    isinstance(e, InviteCancelled) for e in seen["bob"]):
                break
            time.sleep(0.002)
        failed = [e for e in seen["alice"] if isinstance(e, SessionFailed)]
        assert len(failed) == 1 and (failed[0].status, failed[0].refused_by) == (487, "local")
        assert [e.call_id for e in seen["bob"] if isinstance(e, InviteCancelled)] == [call_id]
        assert not alice.sessions and not bob.sessions
        with pytest.raises(LocalProtocolError):
            alice.cancel(call_id or "", time.monotonic())
        # bob answers too late: a clear, typed error (and declining is harmless)
        with pytest.raises(InvitationWithdrawn) as late:
            bob.accept(call_id or "", time.monotonic())
        assert late.value.status == 487
        bob.decline(call_id or "", time.monotonic())
        alice.close()
        bob.close()


def test_logout_during_the_hang_up_linger_bills_the_hang_up(tmp_path: Path) -> None:
    """The game ends with a last reliable message (``end()`` lingers for its ack before the BYE) and the player
    logs out in the same frame: the lingering BYE and its ``terminated`` PUBLISH go before the logout, so eu
    bills the hang-up (bye-local), not a registration that ended under the session (reg-expired)."""
    with threaded_regions(tmp_path) as (eu, na):
        alice = PollingClient(ClientConfig(username="alice", password=USERS["eu"]["alice"],
                                           domain=DOMAINS["eu"], server=eu.address))
        bob = PollingClient(ClientConfig(username="bob", password=USERS["na"]["bob"],
                                         domain=DOMAINS["na"], server=na.address))
        now = time.monotonic()
        alice.login(now)
        bob.login(now)
        logged_in: set[str] = set()
        call_id = None
        deadline = now + 20.0
        while time.monotonic() < deadline and not (call_id in alice.sessions and call_id in bob.sessions):
            now = time.monotonic()
            for name, client in (("alice", alice), ("bob", bob)):
                for event in client.poll(now):
                    if isinstance(event, Registered):
                        logged_in.add(name)
                    elif isinstance(event, InviteReceived):
                        bob.accept(event.call_id, now)
            if call_id is None and logged_in == {"alice", "bob"}:
                call_id = alice.invite("bob@na.gamesdk.test", now, latency_ms=100)
            time.sleep(0.002)
        assert call_id in alice.sessions, "no session"
        session = alice.sessions[call_id]
        session.send(b"game over", Lane.RELIABLE)
        session.end(now, "match over")
        assert session.closing  # waits for bob's ack of the last message
        alice.logout(now)
        unregistered = False
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not unregistered:
            now = time.monotonic()
            unregistered = any(isinstance(e, Unregistered) for e in alice.poll(now))
            bob.poll(now)
            for bobs in list(bob.sessions.values()):
                bobs.poll(now)
            time.sleep(0.002)
        assert unregistered
        alice.close()
        bob.close()
    rows = billing_rows(tmp_path / "eu.sqlite3")
    assert [(r.player, r.end_reason) for r in rows] == [("sip:alice@eu.gamesdk.test", "bye-local")]
