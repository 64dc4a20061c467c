"""Builders for the requests a player's user agent sends (RFC 3261 section 8.1.1), and reservation headers."""

from __future__ import annotations

import logging

from gamesdk.events import Reservation
from gamesdk.sip.headers import Warning
from gamesdk.sip.message import Headers, Request, Response
from gamesdk.sip.uri import format_params, parse_params

__all__ = [
    "ALLOW",
    "RESERVATION_HEADER",
    "SDP",
    "build_request",
    "format_reservation",
    "host_text",
    "parse_reservations",
    "policy_warning",
    "resend_with",
]

log = logging.getLogger(__name__)

#: The body type of offers and answers (RFC 4566).
SDP = "application/sdp"
#: Methods the SDK's user agent handles.
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER"
#: What each regional server reserved, added to the 2xx next to ``P-Media-Authorization`` (RFC 3313) so the
#: application can show it: ``P-Gamesdk-Reservation: eu.gamesdk.test;network=eu-fiber;up=64;down=64``.
RESERVATION_HEADER = "P-Gamesdk-Reservation"


def host_text(host: str) -> str:
    """``host`` as it is written in a URI or Via: an IPv6 address in brackets (RFC 3261 25.1 ``IPv6reference``)."""
    return f"[{host}]" if ":" in host else host


def build_request(
    method: str,
    uri: str,
    *,
    via_host: str,
    via_port: int,
    branch: str,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    contact: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    user_agent: str | None = None,
) -> Request:
    """A request with the mandatory header fields in the usual order (RFC 3261 section 8.1.1)."""
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {host_text(via_host)}:{via_port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", from_),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
    )
    if contact is not None:
        headers.add("Contact", contact)
    for name, value in extra or ():
        headers.add(name, value)
    if user_agent is not None:
        headers.add("User-Agent", user_agent)
    if content_type is not None:
        headers.add("Content-Type", content_type)
    headers.add("Content-Length", str(len(body)))
    return Request(method, uri, headers, body)


def resend_with(request: Request, header: tuple[str, str], branch: str) -> Request:
    """``request`` sent again as a new transaction after a 401/407/423: new top Via ``branch``, CSeq + 1, and
    ``header`` (credentials, a longer Expires) set (RFC 3261 8.1.3.5, 22.2)."""
    via = request.top_via
    params = tuple((key, branch if key.lower() == "branch" else value) for key, value in via.params)
    again = request.copy()
    again.headers.set("Via", str(via._replace(params=params)))  # a request of ours has this one Via
    again.headers.set("CSeq", f"{request.cseq.seq + 1} {request.method}")
    again.headers.set(*header)
    return again


def policy_warning(response: Response) -> Warning | None:
    """The first ``Warning: 370`` (insufficient bandwidth / QoS refused by policy, RFC 3261 20.43), if any."""
    try:
        warnings = response.warnings
    except Exception:  # noqa: BLE001 - a malformed Warning must not hide the response itself
        return None
    for warning in warnings:
        if warning.code == 370:
            return warning
    return None


def format_reservation(reservation: Reservation) -> str:
    """The ``P-Gamesdk-Reservation`` value for one reservation."""
    params: list[tuple[str, str | None]] = [
        ("network", reservation.network),
        ("up", str(reservation.up_kbps)),
        ("down", str(reservation.down_kbps)),
    ]
    return reservation.region + format_params(tuple(params))


def parse_reservations(response: Response) -> tuple[Reservation, ...]:
    """Reservations reported in a 2xx, paired with ``P-Media-Authorization`` tokens in order.

    Unparseable values are skipped: they are informative, and a bad one must not fail a session.
    """
    tokens = [t.strip() for t in response.headers.values("P-Media-Authorization")]
    out: list[Reservation] = []
    for index, value in enumerate(response.headers.values(RESERVATION_HEADER)):
        region, _, rest = value.partition(";")
        try:
            params = dict(parse_params(";" + rest, "reservation")) if rest else {}
            up = int(params.get("up") or 0)
            down = int(params.get("down") or 0)
        except Exception as exc:  # noqa: BLE001 - see docstring
            log.debug("skipped an unreadable %s value %r: %s", RESERVATION_HEADER, value, exc)
            continue
        token = params.get("token") or (tokens[index] if index < len(tokens) else None)
        out.append(
            Reservation(
                region=region.strip(),
                network=params.get("network") or "",
                up_kbps=up,
                down_kbps=down,
                token=token,
            )
        )
    return tuple(out)
