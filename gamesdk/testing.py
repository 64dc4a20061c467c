"""gamesdk.testing: helpers for testing games built on gamesdk (``trio.testing``'s role).

A seeded network simulator to put between a client and its sockets (``GameClient(simulator=(out, in))``),
and two channel cores joined by an in-memory wire on a fake clock. Nothing here is needed to ship a game.
"""

from __future__ import annotations

from gamesdk.channel.simulator import NetworkSimulator, SimulatorConfig
from gamesdk.channel.testing import DeterministicRandom, MemoryWire, channel_pair, make_params_pair

__all__ = [
    "DeterministicRandom",
    "MemoryWire",
    "NetworkSimulator",
    "SimulatorConfig",
    "channel_pair",
    "make_params_pair",
]
