"""gamesdk: two-player game sessions with negotiated, reserved QoS and a direct encrypted UDP channel.

The documented surface is ``__all__`` (see docs/sdk.md); everything else is internal. In ten lines::

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

from gamesdk._version import __version__ as __version__
from gamesdk.channel.config import SUITES as SUITES
from gamesdk.channel.config import ChannelConfig as ChannelConfig
from gamesdk.channel.config import Lane as Lane
from gamesdk.channel.errors import MessageTooLarge as MessageTooLarge
from gamesdk.channel.events import ChannelClosed as ChannelClosed
from gamesdk.channel.events import ChannelEstablished as ChannelEstablished
from gamesdk.channel.events import ChannelEvent as ChannelEvent
from gamesdk.channel.events import Disconnected as Disconnected
from gamesdk.channel.events import Interrupted as Interrupted
from gamesdk.channel.events import MessageReceived as MessageReceived
from gamesdk.channel.events import PathChanged as PathChanged
from gamesdk.channel.events import QosRestored as QosRestored
from gamesdk.channel.events import QosViolation as QosViolation
from gamesdk.channel.events import Resumed as Resumed
from gamesdk.channel.events import SecurityError as SecurityError
from gamesdk.channel.messages import pack_message as pack_message
from gamesdk.channel.messages import unpack_message_untrusted as unpack_message_untrusted
from gamesdk.channel.simulator import NetworkSimulator as NetworkSimulator
from gamesdk.channel.simulator import SimulatorConfig as SimulatorConfig
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
from gamesdk.errors import RemoteProtocolError as RemoteProtocolError
from gamesdk.errors import SessionError as SessionError
from gamesdk.errors import WatchRefused as WatchRefused
from gamesdk.events import Agreement as Agreement
from gamesdk.events import InviteCancelled as InviteCancelled
from gamesdk.events import InviteReceived as InviteReceived
from gamesdk.events import InviteRequested as InviteRequested
from gamesdk.events import PresenceChanged as PresenceChanged
from gamesdk.events import Registered as Registered
from gamesdk.events import RegistrationFailed as RegistrationFailed
from gamesdk.events import Reservation as Reservation
from gamesdk.events import ReservationConfirmed as ReservationConfirmed
from gamesdk.events import Ringing as Ringing
from gamesdk.events import SessionEnded as SessionEnded
from gamesdk.events import SessionEstablished as SessionEstablished
from gamesdk.events import SessionEvent as SessionEvent
from gamesdk.events import SessionFailed as SessionFailed
from gamesdk.events import Unregistered as Unregistered
from gamesdk.events import WatchFailed as WatchFailed
from gamesdk.polling import PollingClient as PollingClient
from gamesdk.polling import PollingSession as PollingSession
from gamesdk.qos.model import GameFormat as GameFormat
from gamesdk.qos.model import QosParams as QosParams
from gamesdk.qos.model import SessionTerms as SessionTerms
from gamesdk.qos.negotiation import Acceptable as Acceptable
from gamesdk.qos.negotiation import Requirements as Requirements
from gamesdk.session.terms import make_terms as make_terms
from gamesdk.sip.pidf import PresenceStatus as PresenceStatus
from gamesdk.sip.timers import TimerConfig as TimerConfig

__all__ = [
    "__version__",
    # clients and sessions
    "ClientConfig",
    "GameClient",
    "GameSession",
    "IncomingInvite",
    "InviteRequest",
    "Accept",
    "Decline",
    "PollingClient",
    "PollingSession",
    "TimerConfig",
    # negotiation
    "GameFormat",
    "QosParams",
    "SessionTerms",
    "Requirements",
    "Acceptable",
    "make_terms",
    "Agreement",
    "Reservation",
    "ReservationConfirmed",
    # signalling events
    "SessionEvent",
    "Registered",
    "RegistrationFailed",
    "Unregistered",
    "PresenceChanged",
    "PresenceStatus",
    "WatchFailed",
    "WatchRefused",
    "InviteReceived",
    "InviteRequested",
    "InviteCancelled",
    "Ringing",
    "SessionEstablished",
    "SessionFailed",
    "SessionEnded",
    # the game channel
    "Lane",
    "SUITES",
    "ChannelConfig",
    "ChannelStats",
    "ChannelEvent",
    "ChannelEstablished",
    "MessageReceived",
    "Interrupted",
    "Resumed",
    "Disconnected",
    "ChannelClosed",
    "QosViolation",
    "QosRestored",
    "SecurityError",
    "PathChanged",
    "NetworkSimulator",
    "SimulatorConfig",
    "pack_message",
    "unpack_message_untrusted",
    # errors
    "GameSdkError",
    "LoginError",
    "SessionError",
    "InvitationWithdrawn",
    "NegotiationError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "MessageTooLarge",
]
