"""Hypothesis: every answer the rules produce keeps the rules, respects the callee's bounds and passes the caller."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gamesdk.qos import (
    SUITE_BITS,
    Acceptable,
    Accepted,
    GameFormat,
    QosParams,
    Rejected,
    Requirements,
    SessionTerms,
    Side,
    answer_offer,
    check_answer,
    demand,
    suite_bits,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN = tuple(SUITE_BITS)

names = st.sampled_from(["pong", "chess", "kart"])
params = st.lists(
    st.tuples(st.sampled_from(["tick", "map"]), st.sampled_from(["30", "60", "a"])),
    max_size=2,
    unique_by=lambda item: item[0],
).map(tuple)
formats = st.builds(GameFormat, names, st.integers(1, 3), params)
bound = st.integers(1, 300)
qos = st.builds(
    QosParams,
    latency_ms=bound,
    jitter_ms=st.integers(0, 300),
    loss_ppm=st.integers(0, 300),
    pps=st.integers(1, 120),
)
offers = st.builds(
    SessionTerms,
    formats=st.lists(formats, min_size=1, max_size=4, unique=True).map(tuple),
    classification=st.sampled_from(["action", "casual", "ranked"]),
    qos=qos,
    receive_kbps=st.integers(1, 512),
    suites=st.lists(st.sampled_from([*KNOWN, "rot13", "future-9"]), min_size=1, max_size=4, unique=True).map(
        tuple
    ),
)
requirements = st.builds(
    Requirements,
    formats=st.lists(formats, min_size=1, max_size=3).map(tuple),
    receive_kbps=st.integers(1, 512),
    classes=st.lists(st.sampled_from(["action", "casual", "ranked"]), max_size=2).map(tuple),
    pps=st.none() | st.integers(1, 120),
    max_latency_ms=st.none() | bound,
    best_latency_ms=st.integers(0, 300),
    max_jitter_ms=st.none() | st.integers(0, 300),
    best_jitter_ms=st.integers(0, 300),
    max_loss_ppm=st.none() | st.integers(0, 300),
    best_loss_ppm=st.integers(0, 300),
    relax=st.booleans(),
    suites=st.lists(st.sampled_from(KNOWN), min_size=1, max_size=3, unique=True).map(tuple),
    min_security_bits=st.sampled_from([128, 256]),
)


def _bounded(offered: int, maximum: int | None, best: int, answered: int, relax: bool) -> None:
    if maximum is not None:
        assert answered <= maximum
    assert answered >= best
    if best <= offered and (maximum is None or offered <= maximum):
        assert answered == offered
    if not relax:
        assert answered <= offered


@st.composite
def offer_and_requirements(draw: st.DrawFn) -> tuple[SessionTerms, Requirements]:
    """Mostly requirements that can meet the offer (same formats, classes and suites), some that cannot."""
    offer = draw(offers)
    own = draw(requirements)
    if draw(st.integers(0, 3)):
        picked = draw(st.lists(st.sampled_from(offer.formats), min_size=1, max_size=2))
        own_formats = tuple(
            GameFormat(fmt.name, fmt.version, draw(st.sampled_from([(), fmt.params]))) for fmt in picked
        )
        known = [suite for suite in offer.suites if suite in KNOWN] or ["aes-256-gcm"]
        own = dataclasses.replace(
            own,
            formats=own_formats,
            classes=draw(st.sampled_from([(), (offer.classification,)])),
            suites=tuple(dict.fromkeys([*known, *own.suites])),
            min_security_bits=draw(st.sampled_from([128, 256])),
        )
        if draw(st.booleans()):
            own = dataclasses.replace(own, best_latency_ms=0, best_jitter_ms=0, best_loss_ppm=0, relax=True)
    return offer, own


@SETTINGS
@given(offer_and_requirements())
def test_answers_keep_the_rules(pair: tuple[SessionTerms, Requirements]) -> None:
    offer, own = pair
    result = answer_offer(offer, own)
    event(type(result).__name__)
    if isinstance(result, Rejected):
        assert result.status_hint == 488
        assert result.line is not None and result.line.startswith("a=gsdk-")
        assert result.line in result.reason
        return
    assert isinstance(result, Accepted)
    answer = result.answer
    (chosen,) = answer.formats
    playable = [fmt for fmt in offer.formats if any(mine.admits(fmt) for mine in own.formats)]
    assert playable and chosen == playable[0]
    assert answer.classification == offer.classification
    assert not own.classes or offer.classification in own.classes
    (suite,) = answer.suites
    assert suite in offer.suites and suite in own.suites
    assert suite_bits(suite) >= own.min_security_bits
    common = [name for name in offer.suites if name in own.suites]
    assert suite_bits(suite) == max(map(suite_bits, common))
    q, o = answer.qos, offer.qos
    _bounded(o.latency_ms, own.max_latency_ms, own.best_latency_ms, q.latency_ms, own.relax)
    _bounded(o.jitter_ms, own.max_jitter_ms, own.best_jitter_ms, q.jitter_ms, own.relax)
    _bounded(o.loss_ppm, own.max_loss_ppm, own.best_loss_ppm, q.loss_ppm, own.relax)
    assert q.pps == (o.pps if own.pps is None else own.pps)
    assert answer.receive_kbps == own.receive_kbps
    changed = {
        key
        for key, a, b in (
            ("lat", q.latency_ms, o.latency_ms),
            ("jit", q.jitter_ms, o.jitter_ms),
            ("loss", q.loss_ppm, o.loss_ppm),
            ("pps", q.pps, o.pps),
        )
        if a != b
    }
    assert set(result.changes) == changed
    # The caller accepts every rule-keeping answer when it has no bounds of its own ...
    assert check_answer(offer, answer, Acceptable(suites=KNOWN, min_security_bits=0)) is None
    # ... and one no looser than its offer exactly when no value was relaxed.
    strict_bounds = Acceptable(
        max_latency_ms=o.latency_ms,
        max_jitter_ms=o.jitter_ms,
        max_loss_ppm=o.loss_ppm,
        suites=KNOWN,
        min_security_bits=0,
    )
    strict = check_answer(offer, answer, strict_bounds)
    relaxed = q.latency_ms > o.latency_ms or q.jitter_ms > o.jitter_ms or q.loss_ppm > o.loss_ppm
    assert (strict is not None) == relaxed
    # The two access networks carry the same session in opposite directions.
    caller, callee = demand(offer, answer, Side.CALLER), demand(offer, answer, Side.CALLEE)
    assert caller.down_kbps == callee.up_kbps == offer.receive_kbps and callee.down_kbps == answer.receive_kbps
    # The caller's side counts the answer's b=AS only up to what the offer asked for (its bill, its uplink).
    assert caller.up_kbps == min(answer.receive_kbps, offer.receive_kbps)
    assert caller.latency_ms == callee.latency_ms == q.latency_ms


@SETTINGS
@given(offers, offers)
def test_check_answer_never_accepts_a_rule_breaking_answer(offer: SessionTerms, other: SessionTerms) -> None:
    verdict = check_answer(offer, other, Acceptable(suites=KNOWN, min_security_bits=0))
    keeps_rules = (
        len(other.formats) == 1
        and other.formats[0] in offer.formats
        and other.classification == offer.classification
        and len(other.suites) == 1
        and other.suites[0] in offer.suites
        and other.suites[0] in KNOWN
    )
    assert (verdict is None) == keeps_rules
    if verdict is not None:
        assert verdict.line is not None and verdict.line in verdict.reason
