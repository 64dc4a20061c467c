"""gamesdk.lowlevel: what the regional server and tools build on, below the game developer's surface.

The protocol cores stay in their packages (``gamesdk.sip``, ``gamesdk.sdp``, ``gamesdk.qos``,
``gamesdk.channel``, ``gamesdk.session``); this module names the values a developer meets when going below
``GameClient`` / ``PollingClient``: the negotiated terms, the codecs, the sans-IO channel and user agent,
and the signalling timers. Names here may change between 0.x releases more freely than the top level.
"""

from __future__ import annotations

from gamesdk.channel.config import SUITES, ChannelParams
from gamesdk.channel.connection import Channel
from gamesdk.channel.messages import pack_message
from gamesdk.errors import RemoteProtocolError
from gamesdk.io.channel_asyncio import AsyncChannel
from gamesdk.io.channel_poll import PollChannel
from gamesdk.qos.model import GameFormat, QosParams, SessionTerms
from gamesdk.session.agent import UserAgent
from gamesdk.session.terms import make_terms
from gamesdk.sip.timers import TimerConfig

__all__ = [
    "SUITES",
    "AsyncChannel",
    "Channel",
    "ChannelParams",
    "GameFormat",
    "PollChannel",
    "QosParams",
    "RemoteProtocolError",
    "SessionTerms",
    "TimerConfig",
    "UserAgent",
    "make_terms",
    "pack_message",
]
