"""SIP dialogs (RFC 3261 section 12) and the requests sent inside them: the ACK for a 2xx, BYE, re-INVITE...

A :class:`Dialog` is an immutable value. Building a request that consumes a CSeq number returns the request and
the next dialog value; keep the latter::

    dialog = dialog_from_2xx(invite, ok)                       # UAC, on the first 2xx
    ack = build_ack_for_2xx(dialog, invite, ids.branch())      # end to end, no transaction (13.2.2.4)
    bye, dialog = build_bye(dialog, ids.branch(), reason=Reason("SIP", 488, "QoS answer unacceptable"))

Our proxies never Record-Route (DESIGN 2), so the route set is usually empty and in-dialog requests go straight
to the peer's Contact; a route set learnt from Record-Route is still honoured (loose and strict routing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from gamesdk.errors import LocalProtocolError, RemoteProtocolError
from gamesdk.sip.headers import MAX_CSEQ, CSeq, Reason
from gamesdk.sip.message import Headers, Request, Response
from gamesdk.sip.uri import NameAddr, SipUri

__all__ = [
    "Dialog",
    "DialogId",
    "build_ack_for_2xx",
    "build_bye",
    "build_in_dialog_request",
    "dialog_from_2xx",
    "dialog_from_invite",
    "incoming_dialog_id",
    "receive_in_dialog_request",
]

#: Methods that replace the remote target with their Contact (RFC 3261 12.2.1.2, RFC 3311 UPDATE).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID + local tag + remote tag (RFC 3261 12), as seen from this side."""

    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialog:
    """The state of one dialog, from this side (RFC 3261 12.1)."""

    call_id: str
    local_tag: str
    #: The peer's tag ("" for an RFC 2543 peer that sent none).
    remote_tag: str
    #: Our From (UAC) or To (UAS) address, without the tag.
    local_uri: NameAddr
    #: The peer's address, without the tag.
    remote_uri: NameAddr
    #: The CSeq number of the last request we sent in the dialog (0 = none yet on the UAS side).
    local_seq: int
    #: The CSeq number of the last request the peer sent, or None.
    remote_seq: int | None
    #: Where requests go: the peer's Contact (updated by target refresh requests).
    remote_target: SipUri
    #: Record-Route, reversed on the UAC side (12.1.2), in order on the UAS side (12.1.1).
    route_set: tuple[NameAddr, ...] = ()
    #: Our Contact, sent in target refresh requests.
    local_contact: NameAddr | None = None
    #: ``host[:port]`` put in the Via of requests we build.
    via_sent_by: str = ""
    via_transport: str = "UDP"
    #: True when we sent the INVITE.
    is_uac: bool = True
    #: sips: request URI (RFC 3261 12.1.1).
    secure: bool = False

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)


def _sent_by(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


def _strip_tag(addr: NameAddr) -> NameAddr:
    return addr._replace(params=tuple((k, v) for k, v in addr.params if k.lower() != "tag"))


def dialog_from_2xx(invite: Request, response: Response) -> Dialog:
    """The UAC's dialog from the INVITE it sent and a 2xx it received (RFC 3261 12.1.2).

    Raises :class:`RemoteProtocolError` (400) when the 2xx lacks a To tag or a Contact.
    """
    if not 200 <= response.status < 300:
        raise LocalProtocolError(f"a dialog is made from a 2xx, not {response.status}", 500)
    to_tag = response.to.tag
    if not to_tag:
        raise RemoteProtocolError("2xx to INVITE has no To tag", 400)
    contacts = response.contacts
    if not contacts:
        raise RemoteProtocolError("2xx to INVITE has no Contact", 400)
    via = invite.top_via
    from_ = invite.from_
    return Dialog(
        call_id=invite.call_id,
        local_tag=from_.tag or "",
        remote_tag=to_tag,
        local_uri=_strip_tag(from_),
        remote_uri=_strip_tag(response.to),
        local_seq=invite.cseq.seq,
        remote_seq=None,
        remote_target=contacts[0].uri,
        route_set=tuple(reversed(response.record_routes)),
        local_contact=invite.contacts[0] if invite.contacts else None,
        via_sent_by=_sent_by(via.host, via.port),
        via_transport=via.transport,
        is_uac=True,
        secure=invite.request_uri.scheme.lower() == "sips",
    )


def dialog_from_invite(
    invite: Request, local_tag: str, local_contact: NameAddr | str, *, via_sent_by: str | None = None
) -> Dialog:
    """The UAS's dialog from an INVITE it answers with a 2xx carrying ``local_tag`` (RFC 3261 12.1.1).

    ``via_sent_by`` defaults to the host and port of ``local_contact``. Raises :class:`RemoteProtocolError`
    (400) when the INVITE has no Contact (8.1.1.8 requires one).
    """
    contact = NameAddr.parse(local_contact) if isinstance(local_contact, str) else local_contact
    contacts = invite.contacts
    if not contacts:
        raise RemoteProtocolError("INVITE has no Contact", 400)
    return Dialog(
        call_id=invite.call_id,
        local_tag=local_tag,
        remote_tag=invite.from_.tag or "",
        local_uri=_strip_tag(invite.to),
        remote_uri=_strip_tag(invite.from_),
        local_seq=0,
        remote_seq=invite.cseq.seq,
        remote_target=contacts[0].uri,
        route_set=tuple(invite.record_routes),
        local_contact=contact,
        via_sent_by=via_sent_by or _sent_by(contact.uri.host, contact.uri.port),
        via_transport=(contact.uri.param("transport") or "UDP").upper(),
        is_uac=False,
        secure=invite.request_uri.scheme.lower() == "sips",
    )


def incoming_dialog_id(request: Request) -> DialogId:
    """The dialog id of a request we received, from our side: local tag = To tag, remote = From tag."""
    return DialogId(request.call_id, request.to.tag or "", request.from_.tag or "")


def _request(
    dialog: Dialog,
    method: str,
    cseq: CSeq,
    branch: str,
    *,
    body: bytes,
    content_type: str | None,
    extra: Iterable[tuple[str, str]],
) -> Request:
    if not dialog.via_sent_by:
        raise LocalProtocolError("dialog has no Via sent-by to build requests with", 500)
    # 12.2.1.1: empty route set -> Request-URI = remote target. Loose routing (first route has lr) -> Route
    # = route set. Strict routing -> Request-URI = first route, Route = the rest + the remote target.
    uri: SipUri = dialog.remote_target
    routes: list[str] = [str(r) for r in dialog.route_set]
    if dialog.route_set and not dialog.route_set[0].uri.has_param("lr"):
        uri = dialog.route_set[0].uri._replace(headers=None)
        routes = [str(r) for r in dialog.route_set[1:]] + [f"<{dialog.remote_target}>"]
    headers = Headers()
    headers.add("Via", f"SIP/2.0/{dialog.via_transport} {dialog.via_sent_by};branch={branch};rport")
    for route in routes:
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", str(dialog.local_uri.with_tag(dialog.local_tag)))
    remote = dialog.remote_uri.with_tag(dialog.remote_tag) if dialog.remote_tag else dialog.remote_uri
    headers.add("To", str(remote))
    headers.add("Call-ID", dialog.call_id)
    headers.add("CSeq", str(cseq))
    if method in TARGET_REFRESH_METHODS and dialog.local_contact is not None:
        headers.add("Contact", str(dialog.local_contact))
    for name, value in extra:
        headers.add(name, value)
    if body:
        if content_type is None:
            raise LocalProtocolError("a request body needs a content type", 500)
        headers.add("Content-Type", content_type)
    return Request(method, uri, headers, body)


def build_in_dialog_request(
    dialog: Dialog,
    method: str,
    *,
    branch: str,
    body: bytes = b"",
    content_type: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> tuple[Request, Dialog]:
    """A request inside the dialog with the next local CSeq (RFC 3261 12.2.1.1); returns it and the new dialog.

    Not for ACK (use :func:`build_ack_for_2xx`) or CANCEL (use ``transaction_client.build_cancel``).
    """
    method = method.upper()
    if method in ("ACK", "CANCEL"):
        raise LocalProtocolError(f"{method} is not built with build_in_dialog_request", 500)
    seq = dialog.local_seq + 1
    if seq > MAX_CSEQ:
        raise LocalProtocolError("local CSeq space exhausted", 500)
    request = _request(
        dialog, method, CSeq(seq, method), branch, body=body, content_type=content_type, extra=extra
    )
    return request, replace(dialog, local_seq=seq)


def build_ack_for_2xx(
    dialog: Dialog,
    invite: Request,
    branch: str,
    *,
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """The ACK for a 2xx to ``invite`` (RFC 3261 13.2.2.4): built like an in-dialog request, sent end to end to
    the remote target (or the route set) with a new ``branch``, the INVITE's CSeq number with method ACK, and
    the INVITE's credentials. It is sent again for every 2xx retransmission, with no transaction."""
    extra = [(name, value) for name, value in invite.headers if name.lower() in _CREDENTIAL_HEADERS]
    return _request(
        dialog,
        "ACK",
        CSeq(invite.cseq.seq, "ACK"),
        branch,
        body=body,
        content_type=content_type,
        extra=extra,
    )


_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})


def build_bye(
    dialog: Dialog,
    branch: str,
    reason: Reason | None = None,
    *,
    extra: Iterable[tuple[str, str]] = (),
) -> tuple[Request, Dialog]:
    """A BYE ending the dialog, with an optional ``Reason: SIP;cause=580;text="..."`` (RFC 3326)."""
    headers = list(extra)
    if reason is not None:
        headers.append(("Reason", str(reason)))
    return build_in_dialog_request(dialog, "BYE", branch=branch, extra=headers)


def receive_in_dialog_request(dialog: Dialog, request: Request) -> Dialog:
    """Account for a request the peer sent in the dialog (RFC 3261 12.2.2); returns the new dialog.

    Raises :class:`RemoteProtocolError` with status hint 500 for a CSeq lower than the last one (out of
    order). A target refresh request (re-INVITE, UPDATE) with a Contact updates the remote target.
    ACK and CANCEL reuse their INVITE's number and leave the dialog as it is.
    """
    if request.method in ("ACK", "CANCEL"):
        return dialog
    seq = request.cseq.seq
    if dialog.remote_seq is not None and seq < dialog.remote_seq:
        raise RemoteProtocolError(f"CSeq {seq} lower than {dialog.remote_seq}: out of order", 500)
    target = dialog.remote_target
    if request.method in TARGET_REFRESH_METHODS and request.contacts:
        target = request.contacts[0].uri
    return replace(dialog, remote_seq=seq, remote_target=target)
