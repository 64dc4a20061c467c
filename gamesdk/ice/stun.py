"""STUN (RFC 8489) on top of ``aioice.stun``: safe parsing of untrusted bytes and the Binding responder.

The message encoding, MESSAGE-INTEGRITY and FINGERPRINT come from aioice's ``stun`` module (a well-kept codec,
used by aiortc); this module adds what an endpoint facing the internet needs around it: a parser that never
raises on hostile input, the demultiplexing test of RFC 7983 and the stateless Binding responder the regional
server runs on its SIP port.
"""

from __future__ import annotations

import struct

from aioice import stun

from gamesdk.address import Address

__all__ = [
    "COOKIE",
    "MAX_STUN_BYTES",
    "Class",
    "Message",
    "Method",
    "binding_response",
    "is_stun",
    "parse_untrusted",
    "unknown_required_attributes",
]

Message = stun.Message
Method = stun.Method
Class = stun.Class
COOKIE = stun.COOKIE

_COOKIE_BYTES = struct.pack("!I", COOKIE)
#: Comprehension-required attributes (type < 0x8000) that a Binding request may carry and we understand.
_KNOWN_REQUIRED = {0x0006, 0x0008, 0x0024, 0x0025, 0x001C, 0x0017, 0x0003}
#: Largest STUN message we parse: checks and TURN messages are a few hundred bytes.
MAX_STUN_BYTES = 1500


def is_stun(data: bytes) -> bool:
    """Whether ``data`` looks like STUN: first byte 0-3 (RFC 7983), magic cookie, 4-byte aligned length."""
    return (len(data) >= 20 and data[0] < 4 and data[4:8] == _COOKIE_BYTES and len(data) % 4 == 0
            and len(data) <= MAX_STUN_BYTES)


def parse_untrusted(data: bytes) -> stun.Message | None:
    """A STUN message from the network, or ``None`` when it is not one (never raises)."""
    if not is_stun(data):
        return None
    try:
        return stun.parse_message(data)
    except (ValueError, struct.error):
        return None


def unknown_required_attributes(data: bytes) -> list[int]:
    """Comprehension-required attribute types in ``data`` we do not understand (RFC 8489 section 6.3.1)."""
    unknown: list[int] = []
    pos = 20
    while pos + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, pos)
        if kind < 0x8000 and kind not in _KNOWN_REQUIRED:
            unknown.append(kind)
        pos += 4 + length + (-length % 4)
    return unknown


def binding_response(data: bytes, source: Address, software: str = "") -> bytes | None:
    """The answer of a stateless Binding responder (RFC 8489 section 6.3) to the datagram ``data`` from ``source``.

    A Binding request gets a success response with XOR-MAPPED-ADDRESS (= ``source``) and FINGERPRINT; one with an
    unknown comprehension-required attribute gets 420. Anything else (indications, the keep-alives of RFC 5626,
    responses, other methods, garbage) gets ``None``: nothing is sent.
    """
    message = parse_untrusted(data)
    if message is None or message.message_method != Method.BINDING or message.message_class != Class.REQUEST:
        return None
    unknown = unknown_required_attributes(data)
    if unknown:
        reply = stun.Message(Method.BINDING, Class.ERROR, transaction_id=message.transaction_id,
                             attributes={"ERROR-CODE": (420, "Unknown Attribute")})
    else:
        attributes: dict[str, object] = {"XOR-MAPPED-ADDRESS": (source[0], source[1])}
        if software:
            attributes["SOFTWARE"] = software
        reply = stun.Message(Method.BINDING, Class.RESPONSE, transaction_id=message.transaction_id,
                             attributes=attributes)
    reply.add_fingerprint()
    return bytes(reply)
