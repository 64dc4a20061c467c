"""gamesdk: two-player game sessions with negotiated, reserved QoS and a direct encrypted UDP channel."""

from __future__ import annotations

from gamesdk._version import __version__ as __version__

__all__ = ["__version__"]
