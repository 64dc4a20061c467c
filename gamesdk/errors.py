"""Error types shared by every gamesdk layer.

Errors say whose fault it is and what to answer: ``LocalProtocolError`` when the API is misused,
``RemoteProtocolError`` when the peer sent something wrong. Both carry ``status_hint``, the SIP status a
server answers with (400 bad message, 488 SDP not acceptable, 580 precondition failure, ...).
"""

from __future__ import annotations

__all__ = [
    "GameSdkError",
    "InvitationWithdrawn",
    "LocalProtocolError",
    "LoginError",
    "NegotiationError",
    "ProtocolError",
    "RemoteProtocolError",
    "SdpError",
    "SessionError",
    "WatchRefused",
]


class GameSdkError(Exception):
    """Base class of every exception raised by gamesdk."""


class ProtocolError(GameSdkError):
    """A protocol rule was broken. ``status_hint`` is the SIP status to answer with."""

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """The caller of the API broke a rule (e.g. built a message that cannot be sent)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol.

    This is the only exception the ``*_untrusted`` parsers raise.
    """


class SdpError(RemoteProtocolError):
    """An SDP body breaks the grammar or our extension. ``line`` names the offending line (488)."""

    def __init__(self, message: str, line: str | None = None, status_hint: int = 488) -> None:
        super().__init__(message, status_hint)
        self.line = line


class NegotiationError(GameSdkError):
    """An offer and the local requirements cannot meet. ``status_hint`` is 488 unless said otherwise."""

    def __init__(self, message: str, status_hint: int = 488) -> None:
        super().__init__(message)
        self.message = message
        self.status_hint = status_hint


class LoginError(GameSdkError):
    """Logging in failed: ``status`` is the SIP status (403 wrong password, 408 no answer ...)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"login failed: {status} {reason}")
        self.status = status
        self.reason = reason


class SessionError(GameSdkError):
    """A game session could not be set up, or was refused.

    ``status`` is the SIP status (580 a policy server refused, 488 QoS not acceptable, 603 declined, 480 offline,
    404 unknown player, 408 no answer), ``reason`` says what happened and ``refused_by`` who refused
    (``"policy:<region>"``, ``"peer"``, ``"local"``, ``"server"``, ``"network"``).
    """

    def __init__(self, status: int, reason: str, refused_by: str = "server") -> None:
        super().__init__(f"{status} {reason} (refused by {refused_by})")
        self.status = status
        self.reason = reason
        self.refused_by = refused_by


class InvitationWithdrawn(SessionError):
    """``accept()`` came too late: the caller withdrew the invitation (CANCEL) or it timed out (487)."""

    def __init__(self, call_id: str, reason: str) -> None:
        super().__init__(487, f"the invitation was withdrawn: {reason}", "peer")
        self.call_id = call_id


class WatchRefused(GameSdkError):
    """``watch()`` was refused: ``status`` 403 (not allowed to watch), 404 (no such player), 408 (no answer)."""

    def __init__(self, player: str, status: int, reason: str) -> None:
        super().__init__(f"watching {player} refused: {status} {reason}")
        self.player = player
        self.status = status
        self.reason = reason
