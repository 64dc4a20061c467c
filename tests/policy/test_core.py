"""FINAL reservations, idempotency and the lifetime rules on a fake clock."""

from __future__ import annotations

import gc
from collections.abc import Callable

from server.billing import EventKind, MemoryBilling
from server.policy import (
    AppSession,
    Deny,
    DialogRef,
    EndReason,
    Grant,
    PolicyServer,
    ReservationState,
    Resource,
    Side,
)


def test_final_is_idempotent_per_key(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    first = policy.final(req(1, up=900), 10.0)
    again = policy.final(req(1, up=900), 10.5)  # the 2xx retransmission
    assert isinstance(first, Grant) and first.token == "1".zfill(32)
    assert again == first
    assert len(policy.reservations()) == 1
    assert policy.capacity()[0].uplink_used_kbps == 900


def test_a_used_key_is_refused_not_answered_from_a_cache(
    policy: PolicyServer, req: Callable[..., AppSession], billing: MemoryBilling
) -> None:
    policy.final(req(1, up=900), 0.0)
    deny = policy.final(req(2, up=200), 1.0)
    assert isinstance(deny, Deny)
    policy.release(req(1).key, 2.0, EndReason.BYE_LOCAL)
    # Capacity is back, but the refused key stays refused (the same answer, billed once).
    assert policy.final(req(2, up=200), 3.0) == deny
    # The ended key is refused too: a replayed 2xx must not make a reservation nobody will confirm or pay.
    again = policy.final(req(1, up=900), 4.0)
    assert isinstance(again, Deny) and "already ended" in again.reason
    assert policy.is_idle()
    assert [e.end_reason for e in billing.events] == ["qos-failed", "bye-local"]


def test_used_keys_answer_equal_refusals_from_values_the_collector_leaves(
    policy: PolicyServer, req: Callable[..., AppSession]
) -> None:
    # The used keys outlive their calls by minutes: remembered as tuples of texts and numbers (untracked after a
    # collection), not as SessionKey and Deny objects the collector examines, with the same refusals.
    policy.final(req(1, up=900), 0.0)
    refused = policy.final(req(2, up=200), 1.0)
    policy.release(req(1).key, 2.0, EndReason.BYE_LOCAL)
    ended = policy.final(req(1, up=900), 3.0)
    assert isinstance(refused, Deny) and isinstance(ended, Deny)
    assert ended == Deny(network="eu-dsl", resource=Resource.REQUEST, status_hint=400,
                         reason=f"the reservation of dialog {req(1).call_id} already ended")
    assert ended.resource is Resource.REQUEST
    assert policy.final(req(2, up=200), 4.0) == refused and policy.final(req(1, up=900), 5.0) == ended
    gc.collect()
    entries = list(policy._used.items())
    assert len(entries) == 2
    assert not any(gc.is_tracked(key) or gc.is_tracked(value) for key, value in entries)


def test_same_dialog_both_sides_in_one_region(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    callee = policy.final(req(1, side=Side.TERM, player="sip:bob@eu.example", ip="10.2.0.2"), 0.0)
    caller = policy.final(req(1, side=Side.ORIG), 0.0)
    assert isinstance(callee, Grant) and isinstance(caller, Grant)
    assert callee.token != caller.token
    assert {r.grant.network for r in policy.reservations()} == {"eu-dsl", "eu-fibre"}


def test_confirm_timeout_releases_not_established(
    policy: PolicyServer, req: Callable[..., AppSession], billing: MemoryBilling
) -> None:
    policy.final(req(1), 100.0)
    assert policy.get_timer() == 132.0
    assert policy.handle_timer(131.9) == []
    released = policy.handle_timer(132.0)
    assert [r.key for r in released] == [req(1).key]
    assert policy.is_idle()
    [stop] = billing.events
    # The capacity was held for 32 s: that time is billed although the player never confirmed.
    assert (stop.kind, stop.end_reason, stop.charged_s) == (EventKind.STOP, "not-established", 32.0)


def test_a_confirm_deadline_run_late_bills_to_the_deadline_not_to_the_late_run(
    policy: PolicyServer, req: Callable[..., AppSession], billing: MemoryBilling
) -> None:
    """A server that stalled (a long write, a paused process) runs the deadline late: the player is billed the held
    time up to the deadline, the STOP stamped at the deadline, never the stall."""
    policy.final(req(1), 100.0, wall=1_000_100.0)
    assert [r.key for r in policy.handle_timer(175.0)] == [req(1).key]
    [stop] = billing.events
    assert (stop.end_reason, stop.charged_s, stop.time) == ("not-established", 32.0, 1_000_132.0)


def test_confirm_then_refresh_then_lease_expiry(
    policy: PolicyServer, req: Callable[..., AppSession], billing: MemoryBilling
) -> None:
    key = req(1).key
    policy.final(req(1), 100.0)
    res = policy.activate(key, 101.0, 90)
    assert res is not None and res.state is ReservationState.ACTIVE
    assert policy.get_timer() == 101.0 + 90 + 32
    # The confirm deadline (132) no longer applies.
    assert policy.handle_timer(140.0) == []
    policy.refresh(key, 146.0, 90)
    assert policy.get_timer() == 146.0 + 90 + 32
    assert policy.handle_timer(267.9) == []
    [released] = policy.handle_timer(268.0)
    assert released.interim_count == 1
    kinds = [(e.kind, e.end_reason) for e in billing.events]
    assert kinds == [(EventKind.START, None), (EventKind.INTERIM, None), (EventKind.STOP, "lease-expired")]
    stop = billing.events[-1]
    # A player that vanished is billed from the 2xx to the last evidence of play (its last refresh), not to the
    # end of the lease it asked for, nor the slack.
    assert stop.time == 146.0
    assert stop.charged_s == 146.0 - 100.0
    assert policy.is_idle()


def test_release_writes_one_stop_and_second_release_is_noop(
    policy: PolicyServer, req: Callable[..., AppSession], billing: MemoryBilling
) -> None:
    key = req(1).key
    policy.final(req(1), 0.0)
    policy.activate(key, 1.0, 90)
    assert policy.release(key, 61.0, EndReason.BYE_REMOTE, sip_reason="SIP;cause=200") is not None
    assert policy.release(key, 62.0, EndReason.BYE_LOCAL) is None
    stops = [e for e in billing.events if e.kind is EventKind.STOP]
    assert len(stops) == 1
    assert (stops[0].end_reason, stops[0].sip_reason, stops[0].charged_s) == ("bye-remote", "SIP;cause=200", 61.0)
    assert policy.get_timer() is not None or policy.is_idle()
    assert policy.handle_timer(10_000.0) == []


def test_registration_expiry_releases_all_of_the_player(
    policy: PolicyServer, req: Callable[..., AppSession], billing: MemoryBilling
) -> None:
    policy.final(req(1, up=10, down=10), 0.0)
    policy.final(req(2, up=10, down=10), 0.0)
    policy.final(req(3, up=10, down=10, player="sip:carol@eu.example"), 0.0)
    released = policy.release_player("sip:alice@eu.example", 5.0)
    assert sorted(r.key.call_id for r in released) == ["call-1@eu.example", "call-2@eu.example"]
    assert [r.request.player for r in policy.reservations()] == ["sip:carol@eu.example"]
    assert {e.end_reason for e in billing.events} == {"reg-expired"}


def test_find_by_publisher_view(policy: PolicyServer, req: Callable[..., AppSession]) -> None:
    policy.final(req(1, side=Side.ORIG), 0.0)
    policy.final(req(1, side=Side.TERM, player="sip:bob@eu.example", ip="10.2.0.2"), 0.0)
    # The caller's PUBLISH: local tag = From-tag, remote tag = To-tag.
    caller = policy.find(DialogRef(call_id="call-1@eu.example", local_tag="from-1", remote_tag="to-1",
                                   player="sip:alice@eu.example"))
    callee = policy.find(DialogRef(call_id="call-1@eu.example", local_tag="to-1", remote_tag="from-1",
                                   player="sip:bob@eu.example"))
    intruder = policy.find(DialogRef(call_id="call-1@eu.example", local_tag="to-1", remote_tag="from-1",
                                     player="sip:mallory@eu.example"))
    assert caller is not None and caller.key.side is Side.ORIG
    assert callee is not None and callee.key.side is Side.TERM
    assert intruder is None


def test_denied_final_is_billed_as_attempt(
    policy: PolicyServer, req: Callable[..., AppSession], billing: MemoryBilling
) -> None:
    policy.final(req(1, up=5000), 0.0)
    [stop] = billing.events
    assert stop.kind is EventKind.STOP and stop.end_reason == "qos-failed"
    assert stop.record.network == "eu-dsl" and stop.record.token == ""
    assert 'insufficient uplink in eu-dsl' in (stop.sip_reason or "")
