"""gamesdk: two-player game sessions with negotiated, reserved QoS and a direct encrypted UDP channel.

The documented surface is ``__all__`` plus the :mod:`gamesdk.events` module (every event) — see docs/sdk.md;
:mod:`gamesdk.lowlevel` names what the server and tools build on, :mod:`gamesdk.testing` the test helpers.
Everything else is internal. In ten lines::

    from gamesdk import ClientConfig, GameClient

    client = GameClient(ClientConfig(username="alice", password="pw", domain="eu.gamesdk.test",
                                     server=("127.0.0.1", 5060)))
    await client.login()
    session = await client.invite("bob@na.gamesdk.test", format="pong/1", classification="action",
                                  latency_ms=80, bandwidth_kbps=64)
    session.send_message({"hello": "bob"})
    event = await session.next_event()
    await session.end()
"""

from __future__ import annotations

import warnings
from typing import Any

from gamesdk import events as events
from gamesdk._version import __version__ as __version__
from gamesdk.address import Address as Address
from gamesdk.channel.config import ChannelConfig as ChannelConfig
from gamesdk.channel.config import Lane as Lane
from gamesdk.channel.errors import MessageTooLarge as MessageTooLarge
from gamesdk.channel.messages import unpack_message_untrusted as unpack_message_untrusted
from gamesdk.channel.stats import ChannelStats as ChannelStats
from gamesdk.client import Accept as Accept
from gamesdk.client import Decline as Decline
from gamesdk.client import GameClient as GameClient
from gamesdk.client import GameSession as GameSession
from gamesdk.client import IncomingInvite as IncomingInvite
from gamesdk.client import InviteRequest as InviteRequest
from gamesdk.config import ClientConfig as ClientConfig
from gamesdk.errors import GameSdkError as GameSdkError
from gamesdk.errors import InvitationWithdrawn as InvitationWithdrawn
from gamesdk.errors import LocalProtocolError as LocalProtocolError
from gamesdk.errors import LoginError as LoginError
from gamesdk.errors import NegotiationError as NegotiationError
from gamesdk.errors import SessionError as SessionError
from gamesdk.errors import WatchRefused as WatchRefused
from gamesdk.events import Agreement as Agreement
from gamesdk.events import Reservation as Reservation
from gamesdk.polling import PollingClient as PollingClient
from gamesdk.polling import PollingSession as PollingSession
from gamesdk.qos.negotiation import Acceptable as Acceptable
from gamesdk.qos.negotiation import Requirements as Requirements
from gamesdk.sip.pidf import PresenceStatus as PresenceStatus

__all__ = [
    "__version__",
    # clients and sessions
    "ClientConfig",
    "Address",
    "GameClient",
    "GameSession",
    "IncomingInvite",
    "InviteRequest",
    "Accept",
    "Decline",
    "PollingClient",
    "PollingSession",
    # negotiation and presence
    "Requirements",
    "Acceptable",
    "Agreement",
    "Reservation",
    "PresenceStatus",
    # the game channel
    "Lane",
    "ChannelConfig",
    "ChannelStats",
    "unpack_message_untrusted",
    # every event: gamesdk.events
    "events",
    # errors
    "GameSdkError",
    "LoginError",
    "SessionError",
    "InvitationWithdrawn",
    "WatchRefused",
    "NegotiationError",
    "LocalProtocolError",
    "MessageTooLarge",
]

#: Names that were importable from ``gamesdk`` before 0.2, and where they live now.
_MOVED = {
    **dict.fromkeys(
        ["Event", "SessionEvent", "ChannelEvent", "Registered", "RegistrationFailed", "Unregistered",
         "InviteReceived", "InviteCancelled", "InviteRequested", "Ringing", "SessionEstablished", "SessionFailed",
         "SessionEnded", "ReservationConfirmed", "PresenceChanged", "WatchFailed", "ChannelEstablished",
         "MessageReceived", "Interrupted", "Resumed", "Disconnected", "ChannelClosed", "QosViolation",
         "QosRestored", "SecurityError"],
        "gamesdk.events",
    ),
    **dict.fromkeys(["NetworkSimulator", "SimulatorConfig"], "gamesdk.testing"),
    **dict.fromkeys(
        ["SUITES", "GameFormat", "QosParams", "SessionTerms", "make_terms", "pack_message", "TimerConfig",
         "RemoteProtocolError"],
        "gamesdk.lowlevel",
    ),
}


def __getattr__(name: str) -> Any:
    """Old import paths keep working for one 0.x release, with a DeprecationWarning naming the new one."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'gamesdk' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    warnings.warn(f"gamesdk.{name} moved to {module}.{name}", DeprecationWarning, stacklevel=2)
    return value
