"""gamesdk/channel/errors: the one channel-specific exception."""

from __future__ import annotations

from gamesdk.errors import LocalProtocolError

__all__ = ["MessageTooLarge"]


class MessageTooLarge(LocalProtocolError):
    """``send()`` was given a message bigger than its lane allows (refused up front, never silently lost)."""

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message, 400)
        self.size = size
        self.limit = limit
