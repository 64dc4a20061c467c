"""Shared fixtures for the policy tests: a small region config, request builders, a counting token factory."""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from server.billing import MemoryBilling
from server.hooks import QueryAnswer
from server.policy import AppSession, MediaComponent, PolicyConfig, PolicyServer, Side

REGION: dict[str, Any] = {
    "region": "eu",  # other tables of the region config are ignored by the policy parser
    "access_networks": [
        {
            "name": "eu-dsl",
            "prefixes": ["10.1.0.0/16"],
            "uplink_kbps": 1000,
            "downlink_kbps": 4000,
            "rtt_ms": 20,
            "jitter_ms": 5,
            "loss_ppm": 1000,
            "max_sessions": 3,
        },
        {
            "name": "eu-fibre",
            "prefixes": ["10.2.0.0/16", "fd00:2::/32"],
            "uplink_kbps": 10000,
            "downlink_kbps": 10000,
            "rtt_ms": 5,
        },
        {
            "name": "eu-lab",
            "prefixes": ["10.2.5.0/24"],
            "uplink_kbps": 500,
            "downlink_kbps": 500,
            "rtt_ms": 1,
        },
    ],
    "classes": [
        {"name": "casual", "priority": 1, "max_share": 1.0, "default": True},
        {"name": "action", "priority": 10, "max_share": 0.5},
    ],
    "tariff": {
        "currency": "EUR",
        "casual": {"per_minute": 0.01},
        "action": {"per_minute": 0.02, "per_kbps_minute": 0.0001},
    },
    "policy": {"confirm_timeout_s": 32, "lease_slack_s": 32, "token": "policy-test-token-0123456789"},
}


@pytest.fixture
def region_doc() -> dict[str, Any]:
    """A fresh deep copy of the region config mapping (tests may mutate it)."""
    return copy.deepcopy(REGION)


@pytest.fixture
def config() -> PolicyConfig:
    return PolicyConfig.from_mapping(REGION)


@pytest.fixture
def tokens() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{next(counter):032x}"


@pytest.fixture
def billing() -> MemoryBilling:
    return MemoryBilling()


@pytest.fixture
def policy(config: PolicyConfig, tokens: Callable[[], str], billing: MemoryBilling) -> PolicyServer:
    return PolicyServer(config, token_factory=tokens, region="eu", billing=billing)


def make_request(
    n: int | str = 1,
    *,
    ip: str = "10.1.0.7",
    up: int = 100,
    down: int = 200,
    lat: int = 100,
    loss: int | None = None,
    jit: int | None = None,
    cls: str | None = "casual",
    side: Side = Side.ORIG,
    transit: int = 0,
    peer_rtt: int = 0,
    player: str = "sip:alice@eu.example",
    to_tag: str | None = None,
) -> AppSession:
    return AppSession(
        call_id=f"call-{n}@eu.example",
        from_tag=f"from-{n}",
        to_tag=f"to-{n}" if to_tag is None else to_tag,
        side=side,
        player=player,
        peer="sip:bob@na.example",
        player_ip=ip,
        components=(
            MediaComponent(
                uplink_kbps=up, downlink_kbps=down, max_latency_ms=lat, max_loss_ppm=loss,
                max_jitter_ms=jit, qos_class=cls,
            ),
        ),
        transit_rtt_ms=transit,
        peer_access_rtt_ms=peer_rtt,
        game_format="pong/1",
        qos_text=f"lat={lat}",
    )


@pytest.fixture
def req() -> Callable[..., AppSession]:
    return make_request


class CollectedInbox:
    """An inbox (AnswerInbox's put_many) that keeps what the policy thread answers."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, QueryAnswer]] = []
        self.arrived = threading.Event()

    def put_many(self, got: list[tuple[Any, QueryAnswer]]) -> None:
        self.items.extend(got)
        self.arrived.set()
