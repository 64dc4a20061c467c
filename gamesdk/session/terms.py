"""Turn the friendly ``invite(...)`` keywords into the offer's ``SessionTerms`` (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from gamesdk.channel.config import SUITES
from gamesdk.errors import LocalProtocolError
from gamesdk.qos.model import FormatsLike, QosParams, SessionTerms, game_formats

__all__ = ["DEFAULT_FORMAT", "OfferRequirements", "make_terms"]

DEFAULT_FORMAT = "pong/1;tick=60"


class OfferRequirements(TypedDict, total=False):
    """The keywords ``invite()`` takes for the offer; :func:`make_terms` documents each and its default."""

    format: FormatsLike
    classification: str
    latency_ms: int
    jitter_ms: int
    loss_ppm: int
    pps: int
    bandwidth_kbps: int
    security: Sequence[str]


def make_terms(
    *,
    format: FormatsLike = DEFAULT_FORMAT,
    classification: str = "action",
    latency_ms: int = 100,
    jitter_ms: int = 20,
    loss_ppm: int = 10_000,
    pps: int = 60,
    bandwidth_kbps: int = 64,
    security: Sequence[str] = SUITES,
) -> SessionTerms:
    """Build an offer's terms.

    Args:
        format: one game format (``"pong/1;tick=60"``) or several in preference order.
        classification: the game classification the policy maps to a QoS class (``action``, ``strategy``...).
        latency_ms: the largest round-trip time the game tolerates.
        jitter_ms: the largest delay variation it tolerates.
        loss_ppm: the largest packet loss it tolerates, parts per million (10,000 = 1 %).
        pps: packets per second this side sends.
        bandwidth_kbps: what this side wants to receive (b=AS).
        security: AEAD suites, strongest first.

    Raises:
        LocalProtocolError: a value is out of range, with the value named.
    """
    formats = game_formats(format)
    if isinstance(security, str):
        raise LocalProtocolError("security must be a sequence of suite names, e.g. ('chacha20-poly1305',)")
    return SessionTerms(
        formats=formats,
        classification=classification,
        qos=QosParams(latency_ms=latency_ms, jitter_ms=jitter_ms, loss_ppm=loss_ppm, pps=pps),
        receive_kbps=bandwidth_kbps,
        suites=tuple(security),
    )
