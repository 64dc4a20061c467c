"""gamesdk/sip/pidf: the presence document (PIDF, RFC 3863) a regional server NOTIFYs to a player's watchers.

One tuple per player: ``basic`` is ``open`` while the player is logged in, ``closed`` when not; a player in a
match also carries the RPID activity ``playing`` (RFC 4480 section 3.2) in a ``person`` element. The body
comes from the network, so :func:`parse_presence_untrusted` is strict like the dialog-info parser: a size
limit before parsing, no DOCTYPE (so no entity tricks), a depth and an element limit; it raises only
:class:`PresenceError`.
"""

from __future__ import annotations

import enum
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

from gamesdk.errors import RemoteProtocolError

__all__ = ["CONTENT_TYPE", "PresenceError", "PresenceStatus", "format_presence", "parse_presence_untrusted"]

CONTENT_TYPE = "application/pidf+xml"
PIDF_NS = "urn:ietf:params:xml:ns:pidf"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
MAX_BODY_BYTES = 8 * 1024
_MAX_DEPTH = 8
_MAX_ELEMENTS = 128


class PresenceStatus(str, enum.Enum):
    """What a watcher sees of a player."""

    #: Not logged in (PIDF ``basic`` closed).
    OFFLINE = "offline"
    #: Logged in and free to be invited.
    ONLINE = "online"
    #: Logged in and playing (RPID activity ``playing``): an invitation would likely get 486 Busy Here.
    IN_MATCH = "in_match"


class PresenceError(RemoteProtocolError):
    """The presence document is malformed, hostile or too large."""

    def __init__(self, message: str) -> None:
        super().__init__(f"bad presence document: {message}", 400)


def format_presence(entity: str, status: PresenceStatus) -> bytes:
    """The PIDF body for ``entity`` (``sip:bob@na.gamesdk.test``) in ``status``."""
    basic = "closed" if status is PresenceStatus.OFFLINE else "open"
    person = ""
    if status is PresenceStatus.IN_MATCH:
        person = '<dm:person id="p1"><rpid:activities><rpid:playing/></rpid:activities></dm:person>'
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="{PIDF_NS}" xmlns:dm="{DM_NS}" xmlns:rpid="{RPID_NS}" entity={quoteattr(entity)}>'
        f'<tuple id="game"><status><basic>{basic}</basic></status></tuple>{person}</presence>'
    ).encode()


def parse_presence_untrusted(body: bytes) -> PresenceStatus:
    """Read a PIDF body; raises :class:`PresenceError` for anything malformed."""
    if len(body) > MAX_BODY_BYTES:
        raise PresenceError(f"{len(body)} bytes, over the {MAX_BODY_BYTES}-byte limit")
    parser = expat.ParserCreate(namespace_separator=" ")
    stack: list[str] = []
    count = 0
    basics: list[str] = []
    playing = False
    text: list[str] = []

    def doctype(*_: object) -> None:
        raise PresenceError("a DOCTYPE is not allowed")

    def start(name: str, _attrs: dict[str, str]) -> None:
        nonlocal count, playing
        count += 1
        if count > _MAX_ELEMENTS or len(stack) >= _MAX_DEPTH:
            raise PresenceError("too many or too deeply nested elements")
        if not stack and name != f"{PIDF_NS} presence":
            raise PresenceError("the root element is not a PIDF presence")
        if name == f"{RPID_NS} playing":
            playing = True
        stack.append(name)
        text.clear()

    def end(name: str) -> None:
        if name == f"{PIDF_NS} basic":
            basics.append("".join(text).strip())
        stack.pop()

    def chars(data: str) -> None:
        text.append(data)

    parser.StartDoctypeDeclHandler = doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise PresenceError(str(exc)) from None
    if not basics or any(b not in ("open", "closed") for b in basics):
        raise PresenceError("no tuple with a basic status of open or closed")
    if "open" not in basics:
        return PresenceStatus.OFFLINE
    return PresenceStatus.IN_MATCH if playing else PresenceStatus.ONLINE
