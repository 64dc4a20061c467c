"""Offer/answer tables: same, modified, rejected; the caller's acceptability check; policy demand."""

from __future__ import annotations

import dataclasses

import pytest

from gamesdk.errors import LocalProtocolError, NegotiationError
from gamesdk.qos import (
    Acceptable,
    Accepted,
    GameFormat,
    QosParams,
    Rejected,
    Requirements,
    SessionTerms,
    Side,
    access_bandwidth,
    answer_offer,
    check_answer,
    demand,
    parse_game_format,
    parse_qos_params,
    suite_bits,
)

PONG2 = GameFormat("pong", 2, (("tick", "60"),))
PONG1 = GameFormat("pong", 1, (("tick", "60"),))
CHESS = GameFormat("chess", 3)
OFFER = SessionTerms(
    formats=(PONG2, PONG1),
    classification="action",
    qos=QosParams(latency_ms=80, jitter_ms=15, loss_ppm=10_000, pps=60, extra=(("burst", "4"),)),
    receive_kbps=64,
    suites=("chacha20-poly1305", "aes-256-gcm"),
)
PLAYS_ALL = Requirements(formats=(GameFormat("pong", 2), GameFormat("pong", 1)), receive_kbps=64)


def req(**changes: object) -> Requirements:
    return dataclasses.replace(PLAYS_ALL, **changes)  # type: ignore[arg-type]


def offer(**changes: object) -> SessionTerms:
    return dataclasses.replace(OFFER, **changes)  # type: ignore[arg-type]


def qos(**changes: object) -> QosParams:
    return dataclasses.replace(OFFER.qos, **changes)  # type: ignore[arg-type]


def test_accepts_as_is() -> None:
    result = answer_offer(OFFER, PLAYS_ALL)
    assert isinstance(result, Accepted)
    assert not result.modified and result.changes == ()
    assert result.answer == SessionTerms(
        formats=(PONG2,),
        classification="action",
        qos=OFFER.qos,
        receive_kbps=64,
        suites=("chacha20-poly1305",),
    )


# (offer, requirements, expected answer formats, suite, qos values (lat, jit, loss, pps), changes, b=AS)
MODIFIED = [
    pytest.param(
        OFFER,
        req(formats=(GameFormat("pong", 1),)),
        PONG1,
        "chacha20-poly1305",
        (80, 15, 10_000, 60),
        (),
        64,
        id="second-format-only-format-is-not-a-modification",
    ),
    pytest.param(
        OFFER,
        req(formats=(CHESS, GameFormat("pong", 1), GameFormat("pong", 2))),
        PONG2,
        "chacha20-poly1305",
        (80, 15, 10_000, 60),
        (),
        64,
        id="offerer-order-wins",
    ),
    pytest.param(
        OFFER,
        req(receive_kbps=48),
        PONG2,
        "chacha20-poly1305",
        (80, 15, 10_000, 60),
        (),
        48,
        id="own-receive-bandwidth",
    ),
    pytest.param(
        OFFER,
        req(max_latency_ms=50),
        PONG2,
        "chacha20-poly1305",
        (50, 15, 10_000, 60),
        ("lat",),
        64,
        id="tighten-latency",
    ),
    pytest.param(
        OFFER,
        req(best_latency_ms=100),
        PONG2,
        "chacha20-poly1305",
        (100, 15, 10_000, 60),
        ("lat",),
        64,
        id="relax-latency",
    ),
    pytest.param(
        OFFER,
        req(max_latency_ms=200, best_latency_ms=100),
        PONG2,
        "chacha20-poly1305",
        (100, 15, 10_000, 60),
        ("lat",),
        64,
        id="relax-within-own-limit",
    ),
    pytest.param(
        OFFER,
        req(max_jitter_ms=5, best_loss_ppm=20_000),
        PONG2,
        "chacha20-poly1305",
        (80, 5, 20_000, 60),
        ("jit", "loss"),
        64,
        id="tighten-jitter-relax-loss",
    ),
    pytest.param(
        OFFER,
        req(pps=30),
        PONG2,
        "chacha20-poly1305",
        (80, 15, 10_000, 30),
        ("pps",),
        64,
        id="own-packet-rate",
    ),
    pytest.param(
        OFFER,
        req(pps=60, max_latency_ms=80, best_latency_ms=80),
        PONG2,
        "chacha20-poly1305",
        (80, 15, 10_000, 60),
        (),
        64,
        id="bounds-equal-to-offer-are-no-change",
    ),
    pytest.param(
        OFFER,
        req(suites=("aes-256-gcm",)),
        PONG2,
        "aes-256-gcm",
        (80, 15, 10_000, 60),
        (),
        64,
        id="only-common-suite",
    ),
    pytest.param(
        offer(suites=("aes-128-gcm", "aes-256-gcm")),
        PLAYS_ALL,
        PONG2,
        "aes-256-gcm",
        (80, 15, 10_000, 60),
        (),
        64,
        id="strongest-suite-even-if-listed-second",
    ),
    pytest.param(
        offer(suites=("aes-256-gcm", "chacha20-poly1305")),
        PLAYS_ALL,
        PONG2,
        "aes-256-gcm",
        (80, 15, 10_000, 60),
        (),
        64,
        id="equal-strength-offer-order",
    ),
    pytest.param(
        offer(suites=("future-suite", "chacha20-poly1305")),
        PLAYS_ALL,
        PONG2,
        "chacha20-poly1305",
        (80, 15, 10_000, 60),
        (),
        64,
        id="unknown-suite-never-chosen",
    ),
    pytest.param(
        offer(suites=("aes-128-gcm",)),
        req(suites=("aes-128-gcm",), min_security_bits=128),
        PONG2,
        "aes-128-gcm",
        (80, 15, 10_000, 60),
        (),
        64,
        id="weaker-suite-if-the-callee-allows-it",
    ),
    pytest.param(
        OFFER,
        req(classes=("action", "casual")),
        PONG2,
        "chacha20-poly1305",
        (80, 15, 10_000, 60),
        (),
        64,
        id="class-accepted",
    ),
    pytest.param(
        OFFER,
        req(formats=(GameFormat("pong", 2, (("tick", "120"),)), GameFormat("pong", 1, (("tick", "60"),)))),
        PONG1,
        "chacha20-poly1305",
        (80, 15, 10_000, 60),
        (),
        64,
        id="parameters-the-callee-insists-on",
    ),
]


@pytest.mark.parametrize(("the_offer", "requirements", "fmt", "suite", "values", "changes", "kbps"), MODIFIED)
def test_answer_table(
    the_offer: SessionTerms,
    requirements: Requirements,
    fmt: GameFormat,
    suite: str,
    values: tuple[int, int, int, int],
    changes: tuple[str, ...],
    kbps: int,
) -> None:
    result = answer_offer(the_offer, requirements)
    assert isinstance(result, Accepted), result
    answer = result.answer
    assert answer.formats == (fmt,)
    assert answer.suites == (suite,)
    assert answer.classification == the_offer.classification
    assert (answer.qos.latency_ms, answer.qos.jitter_ms, answer.qos.loss_ppm, answer.qos.pps) == values
    assert answer.qos.extra == the_offer.qos.extra
    assert result.changes == changes
    assert result.modified == bool(changes)
    assert answer.receive_kbps == kbps
    # Every answer the callee makes keeps the rules the caller checks.
    assert (
        check_answer(the_offer, answer, Acceptable(suites=(suite,), min_security_bits=suite_bits(suite)))
        is None
    )


# (offer, requirements, fragment of the reason, the line named)
REJECTED = [
    pytest.param(
        OFFER,
        req(formats=(CHESS,)),
        "no common game format: this side plays chess/3",
        "a=gsdk-format:pong/2;tick=60",
        id="no-common-format",
    ),
    pytest.param(
        OFFER,
        req(formats=(GameFormat("pong", 3),)),
        "no common game format",
        "a=gsdk-format:pong/2;tick=60",
        id="same-game-other-version",
    ),
    pytest.param(
        OFFER,
        req(classes=("ranked",)),
        "class mismatch: this side accepts ranked",
        "a=gsdk-class:action",
        id="class-mismatch",
    ),
    pytest.param(
        OFFER,
        req(best_latency_ms=100, relax=False),
        "latency impossible: offer asks lat=80, best achievable here is 100",
        "a=gsdk-qos:lat=80;jit=15;loss=10000;pps=60;burst=4",
        id="latency-impossible-no-relax",
    ),
    pytest.param(
        OFFER,
        req(best_latency_ms=100, max_latency_ms=90),
        "latency impossible: best achievable here is 100, above this side's own limit 90",
        "a=gsdk-qos:lat=80;jit=15;loss=10000;pps=60;burst=4",
        id="latency-impossible-own-limit",
    ),
    pytest.param(
        OFFER,
        req(best_jitter_ms=20, relax=False),
        "jitter impossible",
        "a=gsdk-qos:lat=80;jit=15;loss=10000;pps=60;burst=4",
        id="jitter-impossible",
    ),
    pytest.param(
        OFFER,
        req(best_loss_ppm=20_000, max_loss_ppm=15_000),
        "loss impossible",
        "a=gsdk-qos:lat=80;jit=15;loss=10000;pps=60;burst=4",
        id="loss-impossible",
    ),
    pytest.param(
        offer(suites=("aes-128-gcm",)),
        req(suites=("aes-128-gcm", "aes-256-gcm")),
        "weaker security refused: the offer allows at most 128-bit suites, this side requires 256-bit",
        "a=gsdk-sec:aes-128-gcm",
        id="weaker-security-refused",
    ),
    pytest.param(
        offer(suites=("aes-256-gcm",)),
        req(suites=("chacha20-poly1305",)),
        "no common security suite: this side supports chacha20-poly1305",
        "a=gsdk-sec:aes-256-gcm",
        id="no-common-suite",
    ),
    pytest.param(
        offer(suites=("rot13", "aes-128-gcm")),
        PLAYS_ALL,
        "no common security suite",
        "a=gsdk-sec:rot13,aes-128-gcm",
        id="only-unknown-and-unsupported-suites",
    ),
    pytest.param(
        OFFER,
        req(formats=(GameFormat("pong", 2, (("tick", "120"),)), GameFormat("pong", 1, (("tick", "30"),)))),
        "no common game format",
        "a=gsdk-format:pong/2;tick=60",
        id="same-version-other-parameters",
    ),
]


@pytest.mark.parametrize(("the_offer", "requirements", "fragment", "line"), REJECTED)
def test_rejection_table(
    the_offer: SessionTerms, requirements: Requirements, fragment: str, line: str
) -> None:
    result = answer_offer(the_offer, requirements)
    assert isinstance(result, Rejected), result
    assert fragment in result.reason
    assert result.line == line
    assert line in result.reason
    assert result.status_hint == 488
    assert result.warn_code == (305 if "game format" in fragment else 399)
    error = result.error()
    assert isinstance(error, NegotiationError)
    assert error.status_hint == 488 and error.message == result.reason


def _answer(**changes: object) -> SessionTerms:
    base = SessionTerms(
        formats=(PONG2,),
        classification="action",
        qos=OFFER.qos,
        receive_kbps=64,
        suites=("chacha20-poly1305",),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# (answer, the caller's bounds, None if acceptable else a fragment of the reason and the line)
CALLER_CHECKS = [
    pytest.param(_answer(), Acceptable(), None, None, id="same"),
    pytest.param(_answer(), Acceptable.no_looser_than(OFFER), None, None, id="same-strict"),
    pytest.param(
        _answer(qos=qos(latency_ms=50, jitter_ms=5)),
        Acceptable.no_looser_than(OFFER),
        None,
        None,
        id="tighter-is-fine",
    ),
    pytest.param(_answer(qos=qos(latency_ms=120)), Acceptable(), None, None, id="looser-without-bounds"),
    pytest.param(
        _answer(qos=qos(latency_ms=120)),
        Acceptable(max_latency_ms=100),
        "lat=120 is above",
        "a=gsdk-qos",
        id="latency-too-high",
    ),
    pytest.param(
        _answer(qos=qos(latency_ms=81)),
        Acceptable.no_looser_than(OFFER),
        "lat=81",
        "a=gsdk-qos",
        id="latency-looser-than-offer",
    ),
    pytest.param(
        _answer(qos=qos(jitter_ms=40)), Acceptable(max_jitter_ms=20), "jit=40", "a=gsdk-qos", id="jitter"
    ),
    pytest.param(
        _answer(qos=qos(loss_ppm=50_000)),
        Acceptable(max_loss_ppm=20_000),
        "loss=50000",
        "a=gsdk-qos",
        id="loss",
    ),
    pytest.param(_answer(qos=qos(pps=120)), Acceptable(max_peer_pps=60), "pps=120", "a=gsdk-qos", id="pps"),
    pytest.param(
        _answer(receive_kbps=16),
        Acceptable(min_peer_receive_kbps=32),
        "needs to send 32",
        "b=AS:16",
        id="bandwidth-too-low",
    ),
    pytest.param(
        _answer(receive_kbps=900),
        Acceptable(max_peer_receive_kbps=128),
        "sends at most 128",
        "b=AS:900",
        id="bandwidth-too-high",
    ),
    pytest.param(
        _answer(formats=(CHESS,)),
        Acceptable(),
        "not offered",
        "a=gsdk-format:chess/3",
        id="format-not-offered",
    ),
    pytest.param(
        _answer(formats=(GameFormat("pong", 2, (("tick", "30"),)),)),
        Acceptable(),
        "not offered",
        "a=gsdk-format:pong/2;tick=30",
        id="format-params-changed",
    ),
    pytest.param(
        _answer(formats=(PONG2, PONG1)),
        Acceptable(),
        "exactly one game format",
        "a=gsdk-format",
        id="two-formats",
    ),
    pytest.param(
        _answer(classification="ranked"),
        Acceptable(),
        "changed the class",
        "a=gsdk-class:ranked",
        id="class-changed",
    ),
    pytest.param(
        _answer(suites=("chacha20-poly1305", "aes-256-gcm")),
        Acceptable(),
        "exactly one security suite",
        "a=gsdk-sec",
        id="two-suites",
    ),
    pytest.param(
        _answer(suites=("aes-128-gcm",)),
        Acceptable(),
        "not offered",
        "a=gsdk-sec:aes-128-gcm",
        id="weaker-suite-not-offered",
    ),
    pytest.param(
        _answer(suites=("aes-256-gcm",)),
        Acceptable(suites=("chacha20-poly1305",)),
        "weaker security refused",
        "a=gsdk-sec:aes-256-gcm",
        id="suite-not-allowed-by-caller",
    ),
]


@pytest.mark.parametrize(("answer", "bounds", "fragment", "line"), CALLER_CHECKS)
def test_caller_side_acceptability(
    answer: SessionTerms, bounds: Acceptable, fragment: str | None, line: str | None
) -> None:
    result = check_answer(OFFER, answer, bounds)
    if fragment is None:
        assert result is None
        return
    assert isinstance(result, Rejected)
    assert fragment in result.reason
    assert result.line is not None and result.line.startswith(line or "")
    assert result.status_hint == 488


def test_caller_refuses_a_weak_suite_it_offered_when_its_minimum_is_higher() -> None:
    weak_offer = offer(suites=("aes-256-gcm", "aes-128-gcm"))
    answer = _answer(suites=("aes-128-gcm",))
    allowed = Acceptable(suites=("aes-256-gcm", "aes-128-gcm"), min_security_bits=128)
    assert check_answer(weak_offer, answer, allowed) is None
    refused = check_answer(weak_offer, answer, dataclasses.replace(allowed, min_security_bits=256))
    assert isinstance(refused, Rejected) and "weaker security refused" in refused.reason


def test_modified_answer_unacceptable_to_a_strict_caller() -> None:
    result = answer_offer(OFFER, req(best_latency_ms=100))
    assert isinstance(result, Accepted) and result.changes == ("lat",)
    assert check_answer(OFFER, result.answer, Acceptable()) is None
    refused = check_answer(OFFER, result.answer, Acceptable.no_looser_than(OFFER))
    assert isinstance(refused, Rejected)
    assert refused.reason.startswith("QoS answer unacceptable: lat=100 is above this side's bound 80")


ANSWER = _answer(receive_kbps=48, qos=qos(latency_ms=100, pps=30))


@pytest.mark.parametrize(
    ("answer", "side", "up", "down"),
    [
        (None, Side.CALLER, 64, 64),
        (None, Side.CALLEE, 64, 64),
        (ANSWER, Side.CALLER, 48, 64),
        (ANSWER, Side.CALLEE, 64, 48),
        (ANSWER, "callee", 64, 48),
    ],
)
def test_access_bandwidth(answer: SessionTerms | None, side: Side, up: int, down: int) -> None:
    assert access_bandwidth(offer(receive_kbps=64), answer, side) == (up, down)


def test_demand_preliminary_comes_from_the_offer() -> None:
    prelim = demand(OFFER, None, Side.CALLER)
    assert prelim.final is False
    assert (prelim.classification, prelim.format, prelim.latency_ms) == ("action", PONG2, 80)
    assert (prelim.jitter_ms, prelim.loss_ppm) == (15, 10_000)
    assert (prelim.up_kbps, prelim.down_kbps, prelim.up_pps, prelim.down_pps) == (64, 64, 60, 60)


def test_demand_final_comes_from_the_answer() -> None:
    caller = demand(OFFER, ANSWER, Side.CALLER)
    callee = demand(OFFER, ANSWER, Side.CALLEE)
    assert caller.final and callee.final
    assert caller.latency_ms == callee.latency_ms == 100
    assert (caller.up_kbps, caller.down_kbps, caller.up_pps, caller.down_pps) == (48, 64, 60, 30)
    assert (callee.up_kbps, callee.down_kbps, callee.up_pps, callee.down_pps) == (64, 48, 30, 60)
    assert caller.side == Side.CALLER and callee.side == Side.CALLEE


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: Requirements(formats=(), receive_kbps=1), "at least one game format"),
        (lambda: req(receive_kbps=0), "receive_kbps"),
        (lambda: req(suites=("rot13",)), "unknown security suite"),
        (lambda: req(suites=()), "at least one suite"),
        (lambda: req(max_latency_ms=0), "max_latency_ms"),
        (lambda: req(best_loss_ppm=2_000_000), "best_loss_ppm"),
        (lambda: req(pps=True), "pps"),
        (lambda: Acceptable(max_latency_ms=-1), "max_latency_ms"),
        (lambda: Acceptable(suites=("rot13",)), "unknown security suite"),
    ],
)
def test_bounds_validate_themselves(build: object, fragment: str) -> None:
    with pytest.raises(LocalProtocolError, match=fragment):
        build()  # type: ignore[operator]


def test_text_helpers() -> None:
    assert parse_game_format("pong/2;tick=60") == PONG2
    assert str(PONG2) == "pong/2;tick=60"
    assert PONG2.param("tick") == "60" and PONG2.param("x") is None
    assert PONG2.matches(GameFormat("pong", 2)) and not PONG2.matches(PONG1)
    assert GameFormat("pong", 2).admits(PONG2) and PONG2.admits(PONG2)
    assert not GameFormat("pong", 2, (("tick", "30"),)).admits(PONG2)
    assert not PONG2.admits(GameFormat("pong", 2)) and not PONG1.admits(PONG2)
    assert parse_qos_params("pps=60;loss=10000;burst=4;jit=15;lat=80") == OFFER.qos
    assert str(OFFER.qos) == "lat=80;jit=15;loss=10000;pps=60;burst=4"
