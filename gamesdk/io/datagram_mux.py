"""gamesdk/io/datagram_mux: what a channel driver asks of whatever shares its UDP socket.

With ICE the channel's socket also carries STUN checks and TURN traffic (RFC 7983 / RFC 9443 demultiplexing).
The drivers stay ignorant of both: they hand every datagram they read to a ``DatagramMux``, which keeps what is
its own and returns what is the channel's (unwrapped from TURN, with the peer's address); every channel
datagram goes out through ``wrap``; and the mux's own datagrams and timer run in the driver's loop.
"""

from __future__ import annotations

from typing import Protocol

from gamesdk.address import Address

__all__ = ["DatagramMux"]


class DatagramMux(Protocol):
    """A sans-IO neighbour of the channel on its socket (an ICE agent, for example)."""

    def receive(self, data: bytes, src: Address, now: float) -> tuple[bytes, Address] | None:
        """Take one datagram read from the socket: ``None`` if it was the mux's own, else the channel's
        ``(payload, peer address)``."""

    def wrap(self, data: bytes, addr: Address) -> tuple[bytes, Address]:
        """A channel datagram for ``addr`` as it must leave the socket (``(bytes, socket destination)``)."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """The mux's own datagrams due now."""

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must run next."""

    def handle_timer(self, now: float) -> None:
        """Run the mux's due timers."""
