"""demo_game/link: the one interface between the game and the network.

The game never talks to gamesdk directly: it drives a :class:`GameLink`, polled once per frame
(STYLE.md principle 12). Two implementations:

- :class:`demo_game.loopback.LoopbackLink`: an in-memory pair with simulated latency, jitter and
  loss, for tests and ``--offline`` runs;
- ``GamesdkLink`` in ``demo_game/net.py``: the real session set up by ``gamesdk.PollingClient``
  and the encrypted channel (``--local`` and ``--server``). It maps SDK events to the events below.

A link first reports the session setup (:class:`SetupStep` ... then :class:`SessionReady` or
:class:`SessionFailed`), then carries game messages until the peer or the local player ends it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, TextIO

__all__ = [
    "BudgetCheck",
    "GameLink",
    "Lane",
    "LinkClosed",
    "LinkEvent",
    "LinkStats",
    "MessageReceived",
    "PeerDisconnected",
    "PeerInterrupted",
    "PeerResumed",
    "PlayerInfo",
    "QosBudget",
    "Reservation",
    "SessionFailed",
    "SessionHandle",
    "SessionInfo",
    "SessionReady",
    "SetupStep",
    "check_budget",
]


class Lane(enum.Enum):
    """The two channel lanes the game uses (DESIGN section 6)."""

    #: unreliable-sequenced: late or lost packets are skipped, never delivered out of order
    STATE = "state"
    #: reliable-ordered: retransmitted until acknowledged, delivered in order
    RELIABLE = "reliable"


# --- what the session negotiated ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """What one region's policy server reserved for this session (DESIGN section 4)."""

    region: str
    #: the access network the player was found on, e.g. "eu-fibre"
    access_network: str
    #: kbit/s reserved from the player towards the network (the player's uplink)
    up_kbps: int
    #: kbit/s reserved towards the player (its downlink)
    down_kbps: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PlayerInfo:
    """One of the two players."""

    #: the address of record without "sip:", e.g. "alice@eu.example"
    name: str
    #: the region the player is logged on to, e.g. "eu"
    region: str
    #: what the player's region reserved; None if unknown (e.g. a networked peer we only see via SDP)
    reservation: Reservation | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QosBudget:
    """The negotiated ``a=gsdk-qos`` values of the answer (DESIGN section 3)."""

    #: max round-trip time, ms
    latency_ms: float
    #: max jitter, ms
    jitter_ms: float
    #: max loss, parts per million
    loss_ppm: int
    #: packets per second each side sends
    packets_per_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """What the HUD shows about the negotiated session."""

    call_id: str
    #: (host, guest): the caller is the host (left paddle, authoritative), the callee the guest
    players: tuple[PlayerInfo, PlayerInfo]
    #: which of the two players is on this side of the link: 0 = host, 1 = guest
    local_side: int
    #: the ``a=gsdk-format`` line chosen by the answer, e.g. "pong/1;tick=60"
    game_format: str
    #: the ``a=gsdk-class`` value, e.g. "action"
    classification: str
    budget: QosBudget
    #: the AEAD suite chosen from ``a=gsdk-sec``, e.g. "chacha20-poly1305"
    security_suite: str


# --- live channel figures ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkStats:
    """Channel figures at one moment, as the channel measures them (DESIGN section 6)."""

    #: smoothed round-trip time, ms; None until the first sample
    rtt_ms: float | None = None
    rtt_min_ms: float | None = None
    rtt_max_ms: float | None = None
    #: interarrival jitter, ms (RFC 3550 section 6.4.1 style)
    jitter_ms: float = 0.0
    #: share of our packets the peer did not receive, ppm
    loss_out_ppm: int = 0
    #: share of the peer's packets we did not receive, ppm
    loss_in_ppm: int = 0
    kbps_in: float = 0.0
    kbps_out: float = 0.0
    packets_in: int = 0
    packets_out: int = 0

    @property
    def loss_ppm(self) -> int:
        """The worse of the two directions: the budget holds for both."""
        return max(self.loss_in_ppm, self.loss_out_ppm)


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetCheck:
    """Which measured figures are over the negotiated budget."""

    rtt_over: bool
    jitter_over: bool
    loss_over: bool

    @property
    def ok(self) -> bool:
        return not (self.rtt_over or self.jitter_over or self.loss_over)


def check_budget(stats: LinkStats, budget: QosBudget) -> BudgetCheck:
    """Compare live figures with what the session negotiated."""
    return BudgetCheck(
        rtt_over=stats.rtt_ms is not None and stats.rtt_ms > budget.latency_ms,
        jitter_over=stats.jitter_ms > budget.jitter_ms,
        loss_over=stats.loss_ppm > budget.loss_ppm,
    )


# --- events a link reports ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkEvent:
    """Base class of what :meth:`GameLink.poll` returns."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SetupStep(LinkEvent):
    """One step of the session setup was done (login, invite sent, reservations made, ...)."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReady(LinkEvent):
    """The session is established and the channel confirmed: the match can start."""

    info: SessionInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFailed(LinkEvent):
    """The session could not be set up, e.g. a policy refusal (580). Final."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived(LinkEvent):
    lane: Lane
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerInterrupted(LinkEvent):
    """Nothing heard from the peer for a while (1 s in the SDK's default channel config)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerResumed(LinkEvent):
    """The peer is heard again after :class:`PeerInterrupted`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerDisconnected(LinkEvent):
    """The peer hung up or went silent for good. Final."""

    reason: str


class LinkClosed(RuntimeError):
    """Raised by ``send_*`` when the link is not (or no longer) able to carry messages."""


class GameLink(Protocol):
    """The network as the game sees it. Driven from the game loop; never blocks.

    Call order per frame: ``poll(now)`` once, then any number of ``send_*``, then ``flush(now)``.
    """

    def poll(self, now: float) -> list[LinkEvent]:
        """Receive whatever arrived and run timers; return what happened since the last poll."""
        ...

    def send_state(self, data: bytes) -> None:
        """Queue ``data`` on the unreliable-sequenced lane (:attr:`Lane.STATE`).

        Raises:
            LinkClosed: before :class:`SessionReady` or after the session ended.
        """
        ...

    def send_reliable(self, data: bytes) -> None:
        """Queue ``data`` on the reliable-ordered lane (:attr:`Lane.RELIABLE`).

        Raises:
            LinkClosed: before :class:`SessionReady` or after the session ended.
        """
        ...

    def flush(self, now: float) -> None:
        """Send what was queued this frame (one datagram where possible)."""
        ...

    def stats(self) -> LinkStats:
        """The channel's current figures."""
        ...

    def session_info(self) -> SessionInfo | None:
        """What was negotiated; None until :class:`SessionReady`."""
        ...

    def close(self, reason: str = "quit") -> None:
        """End the session (BYE and channel CLOSE on a real link). Idempotent."""
        ...


class SessionHandle(Protocol):
    """What a session setup function returns to ``demo_game.main``.

    ``demo_game.offline.setup_offline_session`` returns one over :class:`LoopbackLink`;
    ``demo_game.local.setup_local_session`` (embedded eu and na servers) and
    ``demo_game.net.setup_networked_session`` (real servers) return the same shape.
    """

    # Read-only (properties), so a setup may hold its links under a narrower type (``GamesdkLink``).
    @property
    def host_link(self) -> GameLink | None:
        """The caller's end, or None when the caller plays in another process (``--wait``)."""
        ...

    @property
    def guest_link(self) -> GameLink | None:
        """The callee's end, or None when the callee plays in another process (``--invite``)."""
        ...

    def pump(self, now: float) -> None:
        """Drive whatever else lives in this process (embedded servers, SIP timers); once per frame."""
        ...

    def finish(self, out: TextIO) -> None:
        """Stop what the setup started and print what a user should see last (the billing records)."""
        ...
