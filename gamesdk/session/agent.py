"""The player's user agent: login, invitations, QoS negotiation, direct ACK, dialog publication, hang-up.

Sans-IO, with the same driving contract as the transactions it composes:

- ``receive_datagram(data, addr, now)`` for every SIP datagram on the player's SIP socket;
- ``datagrams_to_send() -> list[(bytes, addr)]`` after every call;
- ``get_timer()`` / ``handle_timer(now)``;
- ``next_event()`` until None: :mod:`gamesdk.events` values.

The application asks with ``register``, ``unregister``, ``invite``, ``accept``, ``decline``, ``cancel``, ``end``.
Requests to the player's own server (REGISTER, INVITE, CANCEL, PUBLISH) go to ``config.server``; everything
in a dialog after the 2xx (ACK, BYE, OPTIONS) goes straight to the peer's Contact: the servers never add
Record-Route, so the route set is empty (DESIGN section 2).
"""

from __future__ import annotations

from gamesdk.session.calls import CallState
from gamesdk.session.referee import ReferSide
from gamesdk.session.uac import UacSide
from gamesdk.session.uas import UasSide

__all__ = ["CallState", "UserAgent"]


class UserAgent(UacSide, UasSide, ReferSide):
    """One player's SIP user agent (see the module docstring for the driving contract).

    Args:
        config: the player's account and server.
        local_addr: the ``(host, port)`` of the player's SIP socket, used in Via and Contact.
        ids: where branches, tags and Call-IDs come from.
        random_bytes: randomness for channel keys and session ids (``os.urandom`` in production).
        channel_addr: callable giving a fresh ``(host, port)`` for a new session's game channel socket.
        keypairs: callable giving a fresh X25519 ``(private, public)`` pair, one per session (made ahead of
            time by the client façades); by default one is made from ``random_bytes`` when needed.

    Attributes:
        defer_confirmed_publish: publish a new session's "confirmed" state on the next timer run (due at once)
            rather than with the ACK; ``GameClient`` sets it so the event reaches the application first.
        ringing_delay_s: send 180 Ringing for an invitation only once it has waited this long for the
            application's answer (default 0: at once); ``GameClient`` uses 20 ms.
    """
