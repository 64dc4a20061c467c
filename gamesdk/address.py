"""The one address type of gamesdk and its server: an IP endpoint as the socket module gives it.

Every module that passes addresses around (SIP transactions, the channel, ICE, the clients, the regional
server) uses this alias, so a value read from ``socket.recvfrom`` fits every signature as ``(host, port)``.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["Address"]

#: ``(host, port)``: an IPv4 or IPv6 literal (or a host name where a name is resolved) and a port number.
Address: TypeAlias = tuple[str, int]
