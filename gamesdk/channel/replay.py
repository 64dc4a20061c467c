"""gamesdk/channel/replay: the 1024-packet anti-replay window (RFC 6479 idea, netcode's read order).

``check()`` runs before decryption so forged packets cost no AEAD work; ``update()`` runs only after the
packet authenticated, so a forger cannot move the window (netcode STANDARD.md, "replay protection").
"""

from __future__ import annotations

__all__ = ["REPLAY_WINDOW", "ReplayWindow"]

#: Window width: survives a 256-fragment burst plus reordering (netcode keeps 256, DTLS 64).
REPLAY_WINDOW = 1024


class ReplayWindow:
    """Remembers which of the last ``REPLAY_WINDOW`` packet numbers were accepted."""

    __slots__ = ("bits", "highest")

    def __init__(self) -> None:
        #: Highest accepted packet number, -1 before the first.
        self.highest = -1
        #: bit i set <=> packet number (highest - i) was accepted
        self.bits = 0

    def check(self, pn: int) -> bool:
        """True if ``pn`` is new and inside the window."""
        highest = self.highest
        if pn > highest:
            return True
        # subtraction form, so no overflow of highest - WINDOW at the start (netcode IMPLEMENTERS.md)
        offset = highest - pn
        if offset >= REPLAY_WINDOW:
            return False
        return not (self.bits >> offset) & 1

    def update(self, pn: int) -> None:
        """Mark ``pn`` accepted; call only after it authenticated."""
        highest = self.highest
        if pn > highest:
            shift = pn - highest
            if shift >= REPLAY_WINDOW:
                self.bits = 1
            else:
                self.bits = ((self.bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.highest = pn
        else:
            self.bits |= 1 << (highest - pn)

    def ack_bits(self) -> int:
        """The 64-bit ACK bitfield: bit i set <=> packet ``highest - 1 - i`` was accepted."""
        return (self.bits >> 1) & 0xFFFFFFFFFFFFFFFF
