"""gamesdk.channel: the direct, encrypted UDP game channel (sans-IO core).

Keyed from the SDP exchange (``transcript_hash`` + ``ChannelParams``), driven by bytes and ``now``:
see ``Channel`` and docs/channel.md. Drivers live in ``gamesdk.io.channel_asyncio`` and
``gamesdk.io.channel_poll``.
"""

from __future__ import annotations

from gamesdk.channel.config import SUITES as SUITES
from gamesdk.channel.config import ChannelConfig as ChannelConfig
from gamesdk.channel.config import ChannelParams as ChannelParams
from gamesdk.channel.config import Lane as Lane
from gamesdk.channel.config import PrivateKey as PrivateKey
from gamesdk.channel.config import Role as Role
from gamesdk.channel.connection import Channel as Channel
from gamesdk.channel.connection import ChannelState as ChannelState
from gamesdk.channel.crypto import generate_keypair as generate_keypair
from gamesdk.channel.crypto import public_key_from_private as public_key_from_private
from gamesdk.channel.crypto import transcript_hash as transcript_hash
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
from gamesdk.channel.simulator import NetworkSimulator as NetworkSimulator
from gamesdk.channel.simulator import SimulatorConfig as SimulatorConfig
from gamesdk.channel.stats import ChannelStats as ChannelStats

__all__ = [
    "SUITES",
    "Channel",
    "ChannelClosed",
    "ChannelConfig",
    "ChannelEstablished",
    "ChannelEvent",
    "ChannelParams",
    "ChannelState",
    "ChannelStats",
    "Disconnected",
    "Interrupted",
    "Lane",
    "MessageReceived",
    "MessageTooLarge",
    "NetworkSimulator",
    "PathChanged",
    "PrivateKey",
    "QosRestored",
    "QosViolation",
    "Resumed",
    "Role",
    "SecurityError",
    "SimulatorConfig",
    "generate_keypair",
    "public_key_from_private",
    "transcript_hash",
]
