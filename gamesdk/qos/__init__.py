"""gamesdk.qos: the QoS model and the offer/answer rules, shared by the SDK and the server. Pure: no I/O."""

from __future__ import annotations

from gamesdk.qos.model import (
    KNOWN_SUITES,
    SUITE_BITS,
    GameFormat,
    QosParams,
    SessionTerms,
    Side,
    parse_game_format,
    parse_qos_params,
    suite_bits,
)
from gamesdk.qos.negotiation import (
    Acceptable,
    Accepted,
    Demand,
    Rejected,
    Requirements,
    access_bandwidth,
    answer_offer,
    check_answer,
    demand,
)

__all__ = [
    "KNOWN_SUITES",
    "SUITE_BITS",
    "Acceptable",
    "Accepted",
    "Demand",
    "GameFormat",
    "QosParams",
    "Rejected",
    "Requirements",
    "SessionTerms",
    "Side",
    "access_bandwidth",
    "answer_offer",
    "check_answer",
    "demand",
    "parse_game_format",
    "parse_qos_params",
    "suite_bits",
]
