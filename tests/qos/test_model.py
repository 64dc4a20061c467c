"""QoS values validate themselves with messages naming the value."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gamesdk.errors import LocalProtocolError
from gamesdk.qos import (
    KNOWN_SUITES,
    GameFormat,
    QosParams,
    SessionTerms,
    parse_game_format,
    parse_qos_params,
    suite_bits,
)

QOS = QosParams(latency_ms=50, jitter_ms=10, loss_ppm=10_000, pps=60)


def terms(**changes: object) -> SessionTerms:
    values: dict[str, object] = {
        "formats": (GameFormat("pong", 1),),
        "classification": "action",
        "qos": QOS,
        "receive_kbps": 64,
        "suites": KNOWN_SUITES,
    }
    values.update(changes)
    return SessionTerms(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: GameFormat("po ng", 1), "must be a token"),
        (lambda: GameFormat("pong/1", 1), "must be a token"),
        (lambda: GameFormat("pong", 10_000), "version must be an integer in 0..9999"),
        (lambda: GameFormat("pong", -1), "version"),
        (lambda: GameFormat("pong", 1, (("tick", ""),)), "token=token"),
        (lambda: GameFormat("pong", 1, (("a", "1"), ("a", "2"))), "given twice"),
        (
            lambda: QosParams(latency_ms=0, jitter_ms=0, loss_ppm=0, pps=1),
            "lat (ms) must be an integer in 1..60000",
        ),
        (lambda: QosParams(latency_ms=1, jitter_ms=60_001, loss_ppm=0, pps=1), "jit (ms)"),
        (lambda: QosParams(latency_ms=1, jitter_ms=0, loss_ppm=1_000_001, pps=1), "loss (ppm)"),
        (lambda: QosParams(latency_ms=1, jitter_ms=0, loss_ppm=0, pps=10_001), "pps"),
        (lambda: QosParams(latency_ms=1.5, jitter_ms=0, loss_ppm=0, pps=1), "lat"),  # type: ignore[arg-type]
        (
            lambda: QosParams(latency_ms=1, jitter_ms=0, loss_ppm=0, pps=1, extra=(("lat", "2"),)),
            "given twice",
        ),
        (lambda: terms(formats=()), "at least one game format"),
        (lambda: terms(formats=("pong/1",)), "GameFormat"),
        (lambda: terms(formats=(GameFormat("pong", 1), GameFormat("pong", 1))), "listed twice"),
        (lambda: terms(classification="a b"), "classification"),
        (lambda: terms(qos="lat=1"), "QosParams"),
        (lambda: terms(receive_kbps=0), "b=AS receive bandwidth"),
        (lambda: terms(receive_kbps=1_000_001), "b=AS receive bandwidth"),
        (lambda: terms(suites=()), "at least one security suite"),
        (lambda: terms(suites=("a,b",)), "token"),
        (lambda: terms(suites=("aes-256-gcm", "aes-256-gcm")), "listed twice"),
        (lambda: parse_game_format("pong"), "name/version"),
        (lambda: parse_game_format("pong/"), "name/version"),
        (lambda: parse_game_format("pong/1;tick"), "token=token"),
        (lambda: parse_qos_params("lat=1;jit=1;loss=1"), "missing pps"),
        (lambda: parse_qos_params(""), "token=token"),
        (lambda: parse_qos_params("lat=+1;jit=1;loss=1;pps=1"), "decimal number"),
        (lambda: parse_qos_params("lat=1;jit=1;loss=1;pps=1;pps=2"), "given twice"),
    ],
)
def test_values_validate(build: Callable[[], object], fragment: str) -> None:
    with pytest.raises(LocalProtocolError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_suite_strength() -> None:
    assert suite_bits("chacha20-poly1305") == suite_bits("aes-256-gcm") == 256
    assert suite_bits("aes-128-gcm") == 128
    assert suite_bits("rot13") == 0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_text_parsers_raise_only_local_protocol_error(text: str) -> None:
    for parse in (parse_game_format, parse_qos_params):
        try:
            value = parse(text)
        except LocalProtocolError:
            continue
        assert parse(str(value)) == value
