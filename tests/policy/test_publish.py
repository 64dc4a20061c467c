"""RFC 3903 PUBLISH rules for Event: dialog, and what accepted PUBLISHes do to reservations."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from server.billing import EventKind, MemoryBilling
from server.dialog_info import (
    CONTENT_TYPE,
    DialogEntry,
    DialogInfo,
    DialogState,
    Direction,
    format_dialog_info,
)
from server.policy import (
    Activate,
    AppSession,
    EndReason,
    PolicyServer,
    Refresh,
    Release,
    ReservationState,
    operations_for_publish,
)
from server.policy.lifetime import end_reason_for
from server.publish import DialogPublications, PublishKind, PublishRequest, PublishResult

ALICE = "sip:alice@eu.example"


@pytest.fixture
def esc() -> DialogPublications:
    counter = itertools.count(1)
    return DialogPublications(etag_factory=lambda: f"etag{next(counter)}", min_expires_s=60, max_expires_s=3600)


def body(state: DialogState, *, version: int = 0, event: str | None = None, code: int | None = None,
         n: int = 1, entity: str = ALICE) -> bytes:
    return format_dialog_info(
        DialogInfo(
            entity=entity,
            version=version,
            dialogs=(
                DialogEntry(
                    id=f"d{n}", state=state, call_id=f"call-{n}@eu.example", local_tag=f"from-{n}",
                    remote_tag=f"to-{n}", direction=Direction.INITIATOR, event=event, code=code,
                ),
            ),
        )
    )


def publish(esc: DialogPublications, now: float, *, event: str | None = "dialog", expires: int | None = 90,
            if_match: str | None = None, data: bytes = b"", ctype: str | None = CONTENT_TYPE,
            aor: str = ALICE) -> PublishResult:
    return esc.handle(
        PublishRequest(aor=aor, event=event, expires=expires, if_match=if_match, content_type=ctype, body=data),
        now,
    )


def test_initial_refresh_modify_remove(esc: DialogPublications) -> None:
    first = publish(esc, 0.0, data=body(DialogState.CONFIRMED))
    assert (first.status, first.kind, first.etag, first.expires) == (200, PublishKind.INITIAL, "etag1", 90)
    assert first.headers() == [("SIP-ETag", "etag1"), ("Expires", "90")]
    refresh = publish(esc, 45.0, if_match="etag1")
    assert (refresh.status, refresh.kind, refresh.etag) == (200, PublishKind.REFRESH, "etag2")
    assert refresh.info == first.info
    # Each success rotates the entity-tag: the old one is gone (RFC 3903 section 6 step 7).
    assert publish(esc, 46.0, if_match="etag1").status == 412
    modify = publish(esc, 50.0, if_match="etag2", data=body(DialogState.TERMINATED, version=1, event="local-bye"))
    assert (modify.status, modify.kind) == (200, PublishKind.MODIFY)
    assert modify.info is not None and modify.info.dialogs[0].state is DialogState.TERMINATED
    remove = publish(esc, 51.0, if_match="etag3", expires=0)
    assert (remove.status, remove.kind, remove.expires) == (200, PublishKind.REMOVE, 0)
    assert len(esc) == 0


@pytest.mark.parametrize("event", [None, "presence", "reg", ""])
def test_489_bad_event(esc: DialogPublications, event: str | None) -> None:
    result = publish(esc, 0.0, event=event, data=body(DialogState.CONFIRMED))
    assert (result.status, result.reason) == (489, "Bad Event")
    assert ("Allow-Events", "dialog") in result.headers()


def test_event_parameters_are_allowed(esc: DialogPublications) -> None:
    assert publish(esc, 0.0, event="dialog;id=7", data=body(DialogState.CONFIRMED)).status == 200


def test_412_unknown_expired_or_foreign_etag(esc: DialogPublications) -> None:
    assert publish(esc, 0.0, if_match="never-issued").status == 412
    ok = publish(esc, 0.0, data=body(DialogState.CONFIRMED))
    assert publish(esc, 0.0, if_match=ok.etag, aor="sip:mallory@eu.example").status == 412
    assert publish(esc, 90.0, if_match=ok.etag).status == 412  # expired at 0 + 90


@pytest.mark.parametrize("expires", [1, 59])
def test_423_interval_too_brief(esc: DialogPublications, expires: int) -> None:
    result = publish(esc, 0.0, expires=expires, data=body(DialogState.CONFIRMED))
    assert (result.status, result.min_expires) == (423, 60)
    assert ("Min-Expires", "60") in result.headers()


def test_expires_is_lowered_to_max_and_defaulted(esc: DialogPublications) -> None:
    assert publish(esc, 0.0, expires=999_999, data=body(DialogState.CONFIRMED)).expires == 3600
    assert publish(esc, 0.0, expires=None, data=body(DialogState.CONFIRMED, n=2)).expires == 90


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"data": b""}, 400, "needs a dialog-info body"),
        ({"data": b"<dialog-info"}, 400, "not well-formed"),
        ({"data": b'<!DOCTYPE x [<!ENTITY a "b">]><x/>'}, 400, "DOCTYPE"),
        ({"data": body(DialogState.CONFIRMED), "ctype": "application/pidf+xml"}, 415, "Unsupported"),
        ({"data": body(DialogState.CONFIRMED, entity="sip:bob@eu.example")}, 403, "not the publisher"),
        ({"data": body(DialogState.CONFIRMED), "expires": -1}, 400, "Expires"),
        ({"data": body(DialogState.CONFIRMED), "expires": 0}, 400, "SIP-If-Match"),
    ],
)
def test_bad_requests(esc: DialogPublications, kwargs: dict[str, object], status: int, words: str) -> None:
    result = publish(esc, 0.0, **kwargs)  # type: ignore[arg-type]
    assert result.status == status
    assert words in result.reason
    assert not result.ok and operations_for_publish(result, ALICE) == []


def test_expiry_timer_forgets_tags(esc: DialogPublications) -> None:
    publish(esc, 0.0, data=body(DialogState.CONFIRMED))
    assert esc.get_timer() == 90.0
    assert [p.etag for p in esc.handle_timer(90.0)] == ["etag1"]
    assert esc.get_timer() is None and len(esc) == 0


def test_operations_map_publish_to_policy(esc: DialogPublications) -> None:
    confirmed = publish(esc, 0.0, data=body(DialogState.CONFIRMED))
    [op] = operations_for_publish(confirmed, ALICE)
    assert isinstance(op, Activate) and op.expires_s == 90
    assert (op.ref.call_id, op.ref.local_tag, op.ref.remote_tag) == ("call-1@eu.example", "from-1", "to-1")
    [op] = operations_for_publish(publish(esc, 45.0, if_match=confirmed.etag), ALICE)
    assert isinstance(op, Refresh)
    [op] = operations_for_publish(publish(esc, 46.0, if_match="etag2", expires=0), ALICE)
    assert isinstance(op, Release) and op.reason is EndReason.BYE_LOCAL
    early = publish(esc, 47.0, data=body(DialogState.EARLY, n=2))
    assert operations_for_publish(early, ALICE) == []


@pytest.mark.parametrize(
    ("event", "code", "reason"),
    [
        ("local-bye", None, EndReason.BYE_LOCAL),
        ("remote-bye", None, EndReason.BYE_REMOTE),
        ("local-bye", 580, EndReason.QOS_FAILED),
        ("remote-bye", 580, EndReason.QOS_FAILED_PEER),
        ("remote-bye", 488, EndReason.QOS_FAILED_PEER),
        ("rejected", 486, EndReason.NOT_ESTABLISHED),
        ("timeout", None, EndReason.BYE_LOCAL),
    ],
)
def test_terminated_end_reasons(esc: DialogPublications, event: str, code: int | None, reason: EndReason) -> None:
    result = publish(esc, 0.0, data=body(DialogState.TERMINATED, event=event, code=code))
    [op] = operations_for_publish(result, ALICE)
    assert isinstance(op, Release) and op.reason is reason
    assert op.sip_reason == (f"SIP;cause={code}" if code else None)


def test_publish_drives_reservation_lifetime(
    esc: DialogPublications, policy: PolicyServer, req: Callable[..., AppSession], billing: MemoryBilling
) -> None:
    policy.final(req(1), 100.0)

    def run(now: float, **kwargs: object) -> str | None:
        result = publish(esc, now, **kwargs)  # type: ignore[arg-type]
        for op in operations_for_publish(result, ALICE):
            policy.apply(op, now)
        return result.etag

    etag = run(101.0, data=body(DialogState.CONFIRMED))
    res = policy.get(req(1).key)
    assert res is not None and res.state is ReservationState.ACTIVE
    etag = run(146.0, if_match=etag)
    etag = run(191.0, if_match=etag)
    run(200.0, if_match=etag, data=body(DialogState.TERMINATED, version=1, event="remote-bye"))
    assert policy.is_idle()
    assert [(e.kind, e.end_reason) for e in billing.events] == [
        (EventKind.START, None), (EventKind.INTERIM, None), (EventKind.INTERIM, None),
        (EventKind.STOP, "bye-remote"),
    ]
    assert billing.events[-1].charged_s == 100.0


def test_someone_elses_publish_touches_nothing(
    esc: DialogPublications, policy: PolicyServer, req: Callable[..., AppSession]
) -> None:
    policy.final(req(1), 0.0)
    mallory = "sip:mallory@eu.example"
    result = publish(esc, 1.0, aor=mallory, data=body(DialogState.TERMINATED, event="local-bye", entity=mallory))
    assert result.ok
    for op in operations_for_publish(result, mallory):
        assert policy.apply(op, 1.0) is None
    assert len(policy.reservations()) == 1


def test_an_end_under_a_moved_or_lost_etag_still_counts(esc: DialogPublications) -> None:
    first = publish(esc, 0.0, data=body(DialogState.CONFIRMED))
    refreshed = publish(esc, 45.0, if_match=first.etag)  # the refresh moved the tag while "terminated" flew
    assert refreshed.ok and refreshed.etag != first.etag
    # A state change other than an end under the old tag is refused as RFC 3903 says ...
    assert publish(esc, 46.0, if_match=first.etag, data=body(DialogState.CONFIRMED, version=2)).status == 412
    # ... but the end is taken (as a new publication), so the session's release is not lost to a 412.
    ended = publish(esc, 46.0, if_match=first.etag, data=body(DialogState.TERMINATED, version=2, event="local-bye"))
    assert ended.ok and ended.kind is PublishKind.INITIAL
    [op] = operations_for_publish(ended, ALICE)
    assert isinstance(op, Release) and op.reason is EndReason.BYE_LOCAL
    # The same after a restart lost every tag.
    fresh = DialogPublications(etag_factory=lambda: "new", min_expires_s=60, max_expires_s=3600)
    assert publish(fresh, 0.0, if_match="gone", data=body(DialogState.TERMINATED, event="remote-bye")).ok
    assert publish(fresh, 0.0, if_match="gone").status == 412  # a refresh of a lost tag: still 412


@pytest.mark.parametrize(("event", "code", "reason"), [
    ("local-bye", 487, EndReason.NOT_ESTABLISHED),  # the caller's BYE after a 2xx crossed its CANCEL
    ("remote-bye", 487, EndReason.NOT_ESTABLISHED),  # the callee's view of that BYE
    ("local-bye", 408, EndReason.NOT_ESTABLISHED),  # the answer came after the caller gave up
    ("timeout", 408, EndReason.BYE_LOCAL),  # a played session whose peer stopped answering
    ("local-bye", 580, EndReason.QOS_FAILED),
    ("remote-bye", None, EndReason.BYE_REMOTE),
])
def test_end_reasons_of_crossing_cases(event: str, code: int | None, reason: EndReason) -> None:
    entry = DialogEntry(id="d", state=DialogState.TERMINATED, call_id="c", local_tag="a", remote_tag="b",
                        direction=Direction.INITIATOR, event=event, code=code)
    assert end_reason_for(entry)[0] is reason


def test_ended_matches_make_room_and_an_end_is_never_refused_for_room() -> None:
    """Back-to-back matches: each one's publication ends (terminated) and stays until it expires; the 33rd match
    within the lifetime must still be accepted (the oldest ended publication makes room), and a terminated PUBLISH
    is accepted even when the player's live publications fill the cap."""
    counter = itertools.count(1)
    pubs = DialogPublications(etag_factory=lambda: f"e{next(counter)}", max_per_aor=32)
    for n in range(40):  # 40 matches, 0.5 s apart: confirmed, then terminated under the tag
        start = publish(pubs, n * 0.5, data=body(DialogState.CONFIRMED, n=n))
        assert start.status == 200, (n, start.reason)
        end = publish(pubs, n * 0.5 + 0.2, if_match=start.etag,
                      data=body(DialogState.TERMINATED, version=1, event="local-bye", n=n))
        assert end.status == 200, (n, end.reason)
    assert len(pubs) <= 32
    # 32 matches running at once fill the cap; a 33rd start is refused, the end of a running one is not
    live = [publish(pubs, 30.0 + n * 0.01, data=body(DialogState.CONFIRMED, n=100 + n)) for n in range(32)]
    assert all(r.status == 200 for r in live)
    assert publish(pubs, 31.0, data=body(DialogState.CONFIRMED, n=200)).status == 403
    stale_end = publish(pubs, 31.1, if_match="gone", data=body(DialogState.TERMINATED, event="local-bye", n=100))
    assert stale_end.status == 200
