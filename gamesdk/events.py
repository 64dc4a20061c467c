"""Public session events: frozen dataclasses, past tense.

The one place to import every event from: signalling and presence events (``PollingClient.poll(now)``
returns them; ``GameClient`` turns the interesting ones into awaitable results) and the channel events
(``MessageReceived``, ``Interrupted``, ``Disconnected``, ``QosViolation`` ..., defined in
:mod:`gamesdk.channel.events`). All derive from :class:`Event`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gamesdk.address import Address
from gamesdk.channel.config import ChannelParams
from gamesdk.channel.events import (
    ChannelClosed,
    ChannelEstablished,
    ChannelEvent,
    Disconnected,
    Interrupted,
    MessageReceived,
    PathChanged,
    QosRestored,
    QosViolation,
    Resumed,
    SecurityError,
)
from gamesdk.event import Event
from gamesdk.qos.model import GameFormat, QosParams, SessionTerms
from gamesdk.sip.pidf import PresenceStatus

__all__ = [
    "Agreement",
    "ChannelClosed",
    "ChannelEstablished",
    "ChannelEvent",
    "Disconnected",
    "Event",
    "Interrupted",
    "InviteCancelled",
    "InviteReceived",
    "InviteRequested",
    "MessageReceived",
    "PathChanged",
    "PresenceChanged",
    "QosRestored",
    "QosViolation",
    "Registered",
    "RegistrationFailed",
    "Reservation",
    "ReservationConfirmed",
    "Resumed",
    "Ringing",
    "SecurityError",
    "SessionEnded",
    "SessionEstablished",
    "SessionEvent",
    "SessionFailed",
    "Unregistered",
    "WatchFailed",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEvent(Event):
    """Base class of every signalling and presence event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Registered(SessionEvent):
    """The login (REGISTER) succeeded or was refreshed."""

    #: ``sip:name@domain``.
    aor: str
    #: Seconds the server granted; the SDK refreshes before they run out.
    expires_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationFailed(SessionEvent):
    """The login failed: wrong password (403), unknown server, timeout (408) ..."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Unregistered(SessionEvent):
    """``logout()`` completed: the server dropped our binding."""

    aor: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteReceived(SessionEvent):
    """An opponent invites us. Answer with ``accept(call_id, ...)`` or ``decline(call_id, ...)``."""

    call_id: str
    #: The caller's address of record, ``sip:alice@eu.gamesdk.test``.
    caller: str
    #: Display name the caller sent, if any.
    caller_name: str | None
    #: What the caller asks for (formats, class, QoS, bandwidth, suites).
    offer: SessionTerms


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteRequested(SessionEvent):
    """Our own regional server asks us to invite ``peer`` (the player invited from the region's web site; a SIP
    REFER from our registrar). Answer with ``accept_invite_request(refer_id)`` (the SDK then sends the INVITE
    itself and reports its progress to the server) or ``decline_invite_request(refer_id)``."""

    refer_id: str
    #: Whom to invite, ``bob@na.gamesdk.test``.
    peer: str
    #: Keywords of :func:`gamesdk.make_terms` the page asked for (format, classification, latency_ms, ...).
    requirements: Mapping[str, Any]
    #: Who asked, from ``Referred-By``: the web login, ``sip:alice@eu.gamesdk.test``.
    referred_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteCancelled(SessionEvent):
    """The caller gave up (CANCEL) before we answered, or we did not answer in time."""

    call_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ringing(SessionEvent):
    """The opponent's SDK received our invitation and its application is deciding (180 Ringing)."""

    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """What one region's policy server reserved for this session (from ``P-Gamesdk-Reservation``)."""

    #: The region (server domain) that reserved.
    region: str
    #: The access network it reserved in.
    network: str
    #: Reserved kbit/s from the player (uplink) and to the player (downlink).
    up_kbps: int
    down_kbps: int
    #: The ``P-Media-Authorization`` token of the reservation (RFC 3313), if the server sent one.
    token: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    """What both sides agreed on, as established."""

    call_id: str
    #: True on the side that invited.
    is_caller: bool
    local: str
    peer: str
    format: GameFormat
    classification: str
    #: The answer's ``gsdk-qos``: the QoS that was reserved.
    qos: QosParams
    #: The AEAD suite of the game channel.
    suite: str
    offer: SessionTerms
    answer: SessionTerms
    #: True when the callee modified the QoS: a ``gsdk-qos`` value (lat, jit, loss, pps) differs from the offer
    #: (DESIGN section 3; picking one format and one suite is not a modification).
    modified: bool
    #: Reservations each region reported. The caller reads both regions' from the 2xx; the callee reads its
    #: own region's from the answer to its "confirmed" PUBLISH, a moment after the session started
    #: (``ReservationConfirmed``; the session's ``agreement`` is updated then).
    reservations: tuple[Reservation, ...] = ()
    #: Raw ``P-Media-Authorization`` tokens of the 2xx (RFC 3313), in header order.
    tokens: tuple[str, ...] = ()
    #: The peer's game channel address.
    peer_addr: Address = ("", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEstablished(SessionEvent):
    """The INVITE/200/ACK exchange completed and QoS provisioning is done: the channel can start."""

    call_id: str
    agreement: Agreement
    #: Everything the game channel needs: keys, session ids, the peer's address (``gamesdk.lowlevel.ChannelParams``;
    #: the clients open the channel from it, a program driving ``gamesdk.lowlevel.UserAgent`` opens its own).
    channel_params: ChannelParams = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationConfirmed(SessionEvent):
    """Our own region confirmed what it holds for this session (in the answer to our "confirmed" PUBLISH).

    This is how the callee learns its region's reservation; ``agreement`` is the session's agreement with it
    added (both clients update ``session.agreement`` to it).
    """

    call_id: str
    reservations: tuple[Reservation, ...]
    agreement: Agreement


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFailed(SessionEvent):
    """The session could not be set up: ``status`` and ``reason`` say who refused and why.

    Examples: ``SessionFailed(status=580, reason="insufficient uplink in eu-dsl")`` (a policy server refused),
    ``488`` (the callee or we could not accept the QoS), ``603`` (declined), ``480`` (offline), ``408`` (no answer).
    """

    call_id: str
    status: int
    reason: str
    #: Who refused: ``"policy:<region>"``, ``"peer"``, ``"local"``, ``"server"`` or ``"network"``.
    refused_by: str = "server"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(SessionEvent):
    """An established session ended (BYE sent or received, or the peer stopped answering)."""

    call_id: str
    reason: str
    by_peer: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceChanged(SessionEvent):
    """A watched player's presence (``client.watch(...)``): ``OFFLINE``, ``ONLINE`` or ``IN_MATCH``.

    The first one arrives right after ``watch()``; then one per change. ``watching`` is False on the last
    one (the subscription ended: ``unwatch()``, or the player's region ended it).
    """

    #: The watched player, ``sip:bob@na.gamesdk.test``.
    player: str
    status: PresenceStatus
    watching: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchFailed(SessionEvent):
    """``watch()`` was refused (403 not allowed, 404 no such player ...) or got no answer (408)."""

    player: str
    status: int
    reason: str
