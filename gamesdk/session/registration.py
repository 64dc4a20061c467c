"""The player's login at its regional server (RFC 3261 section 10): one Call-ID and From tag for every
REGISTER of the binding, a growing CSeq, and the lifetime asked for (the configured one, or the server's
Min-Expires after a 423)."""

from __future__ import annotations

from dataclasses import dataclass

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError
from gamesdk.session.requests import ALLOW, build_request
from gamesdk.sip.message import Request, Response

__all__ = ["Registration"]


@dataclass(slots=True)
class Registration:
    """The state of the player's binding; the user agent drives it."""

    aor: str
    #: The Request-URI of a REGISTER: ``sip:<domain>`` (RFC 3261 10.2).
    registrar: str
    call_id: str
    tag: str
    #: The lifetime asked for, seconds.
    expires: int
    cseq: int = 0
    registered: bool = False
    #: True from ``unregister`` until the next ``register``.
    unregistering: bool = False
    #: RFC 5626 outbound: REGISTERs say ``Supported: outbound`` (over TLS).
    outbound: bool = False

    def request(
        self,
        *,
        expires: int,
        contact: str,
        via: Address,
        branch: str,
        credentials: tuple[str, str] | None,
        user_agent: str | None,
    ) -> Request:
        """The next REGISTER of this binding (RFC 3261 10.2: same Call-ID, CSeq + 1)."""
        self.cseq += 1
        extra = [("Expires", str(expires)), ("Allow", ALLOW)]
        if self.outbound:
            extra.append(("Supported", "outbound"))
        if credentials is not None:
            extra.append(credentials)
        return build_request(
            "REGISTER",
            self.registrar,
            via_host=via[0],
            via_port=via[1],
            branch=branch,
            from_=f"<{self.aor}>;tag={self.tag}",
            to=f"<{self.aor}>",
            call_id=self.call_id,
            cseq=self.cseq,
            contact=contact,
            extra=extra,
            user_agent=user_agent,
        )

    def granted(self, resp: Response, contact_uri: str) -> int:
        """The lifetime the 2xx grants our contact: its ``expires`` parameter, else the Expires header, else
        what we asked for (RFC 3261 10.2.4)."""
        try:
            for contact in resp.contacts:
                if str(contact.uri) == contact_uri:
                    value = contact.param("expires")
                    # ASCII and short: str.isdigit takes '²', and int() refuses 4,300 digits
                    if value and len(value) <= 12 and value.isascii() and value.isdigit():
                        return int(value)
            if resp.expires is not None:
                return resp.expires
        except RemoteProtocolError:
            pass
        return self.expires
