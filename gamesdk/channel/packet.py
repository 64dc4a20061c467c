"""gamesdk/channel/packet: wire layout of channel packets and the frames inside them.

Packet (research/channel.md (c); all of the 13-byte header is AEAD associated data)::

    byte 0      ver(2) | key_phase(1) | type(5)      ver = 1, key_phase flips at each key update
    bytes 1..4  receiver session id, u32 little-endian (the `a=gsdk-sid` of the side receiving it)
    bytes 5..12 packet number, u64 little-endian, 0, 1, 2, ... per direction, never reused
    bytes 13..  AEAD(frames) || 16-byte tag

Frames inside the ciphertext, one type byte each, back to back::

    0x01 ACK         largest pn u64 | ack bits u64 (bit i = largest-1-i received) | ack delay u16 (8 µs units)
    0x02 PING        (empty; makes the packet ack-eliciting: keepalive and RTT probe)
    0x03 CONFIRM     16-byte confirm value of the sender's role
    0x04 CLOSE       reason length u8 | UTF-8 reason
    0x05 PATH_CHALLENGE  8 bytes the sender cannot be guessed by anyone else (address validation, consent)
    0x06 PATH_RESPONSE   the 8 bytes of a PATH_CHALLENGE, echoed
    0x10 UNRELIABLE  length u16 | data
    0x11 SEQUENCED   sequence u16 | length u16 | data
    0x12 RELIABLE    sequence u16 | fragment index u16 | fragment count u16 | length u16 | data
    0x13 FRAGMENT    lane u8 | message sequence u16 | fragment index u8 | fragment count u8 | length u16 | data
                     (a slice of an unreliable or sequenced message too big for one datagram; all or nothing)

Every parser here that reads network data ends in ``_untrusted`` and raises only ``RemoteProtocolError``.
"""

from __future__ import annotations

import enum
import struct

from gamesdk.errors import RemoteProtocolError

__all__ = [
    "ACK",
    "CLOSE",
    "CONFIRM",
    "FRAGMENT_FRAME_OVERHEAD",
    "HEADER",
    "HEADER_BYTES",
    "MAX_UNRELIABLE_FRAGMENTS",
    "PATH_CHALLENGE",
    "PATH_RESPONSE",
    "PING",
    "RELIABLE_FRAME_OVERHEAD",
    "SEQUENCED_FRAME_OVERHEAD",
    "UNRELIABLE_FRAME_OVERHEAD",
    "VERSION",
    "FrameType",
    "PacketType",
    "decode_header_untrusted",
    "encode_header",
    "parse_frames_untrusted",
    "push_ack",
    "push_close",
    "push_confirm",
    "push_fragment",
    "push_path_challenge",
    "push_path_response",
    "push_reliable",
    "push_sequenced",
    "push_unreliable",
]

VERSION = 1
HEADER = struct.Struct("<BIQ")
HEADER_BYTES = HEADER.size  # 13
_VERSION_BITS = VERSION << 6


class PacketType(enum.IntEnum):
    """Low 5 bits of header byte 0. Informational: the frames inside say what the packet carries."""

    #: Carries CONFIRM (sent until a CONFIRM-carrying packet is acked).
    CONFIRM = 1
    #: Carries acks, messages, pings.
    DATA = 2
    #: Carries CLOSE.
    CLOSE = 3


class FrameType(enum.IntEnum):
    """Frame type bytes inside a decrypted packet."""

    ACK = 0x01
    PING = 0x02
    CONFIRM = 0x03
    CLOSE = 0x04
    PATH_CHALLENGE = 0x05
    PATH_RESPONSE = 0x06
    UNRELIABLE = 0x10
    SEQUENCED = 0x11
    RELIABLE = 0x12
    FRAGMENT = 0x13


ACK = FrameType.ACK.value
PING = FrameType.PING.value
CONFIRM = FrameType.CONFIRM.value
CLOSE = FrameType.CLOSE.value
PATH_CHALLENGE = FrameType.PATH_CHALLENGE.value
PATH_RESPONSE = FrameType.PATH_RESPONSE.value
#: Bytes of a PATH_CHALLENGE or PATH_RESPONSE frame (type + 8 bytes).
PATH_FRAME_BYTES = 9
_UNRELIABLE = FrameType.UNRELIABLE.value
_SEQUENCED = FrameType.SEQUENCED.value
_RELIABLE = FrameType.RELIABLE.value
_FRAGMENT = FrameType.FRAGMENT.value

ACK_FRAME = struct.Struct("<BQQH")
_ACK = ACK_FRAME
U16 = struct.Struct("<H")
_U16 = U16
UNRELIABLE_HEAD = struct.Struct("<BH")
_UNREL = UNRELIABLE_HEAD
_SEQ = struct.Struct("<BHH")
_REL = struct.Struct("<BHHHH")
UNRELIABLE_FRAME_OVERHEAD = _UNREL.size  # 3
SEQUENCED_FRAME_OVERHEAD = _SEQ.size  # 5
RELIABLE_FRAME_OVERHEAD = _REL.size  # 9
_FRAG = struct.Struct("<BBHBBH")
_FRAG_BODY = struct.Struct("<BHBBH")
FRAGMENT_FRAME_OVERHEAD = _FRAG.size  # 8
#: Most slices an unreliable or sequenced message is cut into (research/channel.md (c): all-or-nothing
#: delivery makes more slices useless, 16 at 5 % loss already loses 56 % of messages).
MAX_UNRELIABLE_FRAGMENTS = 16
ACK_FRAME_BYTES = _ACK.size  # 19
CONFIRM_FRAME_BYTES = 1 + 16
ACK_BODY = struct.Struct("<QQH")
_ACK_BODY = ACK_BODY
SEQ_BODY = struct.Struct("<HH")
_SEQ_BODY = SEQ_BODY
_REL_BODY = struct.Struct("<HHHH")


#: The key phase bit of header byte 0.
KEY_PHASE_BIT = 0x20


def encode_header(packet_type: int, session_id: int, pn: int, key_phase: int = 0) -> bytes:
    """The 13-byte header for a packet to the peer whose session id is ``session_id``."""
    return HEADER.pack(_VERSION_BITS | (KEY_PHASE_BIT if key_phase & 1 else 0) | packet_type, session_id, pn)


def key_phase_of(data: bytes) -> int:
    """The key phase bit (0 or 1) of a packet's header."""
    return 1 if data[0] & KEY_PHASE_BIT else 0


def decode_header_untrusted(data: bytes) -> tuple[int, int, int]:
    """``(packet_type, receiver session id, packet number)``; checks size, version and type."""
    if len(data) < HEADER_BYTES + 16:
        raise RemoteProtocolError(f"datagram of {len(data)} bytes is shorter than header + tag")
    first, sid, pn = HEADER.unpack_from(data)
    if first >> 6 != VERSION:
        raise RemoteProtocolError(f"unknown channel version {first >> 6}")
    ptype = first & 0x1F
    if not 1 <= ptype <= 3:
        raise RemoteProtocolError(f"unknown packet type {ptype}")
    return ptype, sid, pn


def push_ack(largest: int, bits: int, delay_units: int) -> bytes:
    return _ACK.pack(ACK, largest, bits, delay_units)


def push_confirm(value: bytes) -> bytes:
    return bytes((CONFIRM,)) + value


def push_path_challenge(data: bytes) -> bytes:
    return bytes((PATH_CHALLENGE,)) + data


def push_path_response(data: bytes) -> bytes:
    return bytes((PATH_RESPONSE,)) + data


def push_close(reason: str) -> bytes:
    text = reason.encode("utf-8")[:255]
    return bytes((CLOSE, len(text))) + text


def push_unreliable(data: bytes) -> bytes:
    return _UNREL.pack(_UNRELIABLE, len(data)) + data


def push_sequenced(seq: int, data: bytes) -> bytes:
    return _SEQ.pack(_SEQUENCED, seq, len(data)) + data


def push_reliable(seq: int, index: int, count: int, data: bytes) -> bytes:
    return _REL.pack(_RELIABLE, seq, index, count, len(data)) + data


def push_fragment(lane: int, seq: int, index: int, count: int, data: bytes) -> bytes:
    return _FRAG.pack(_FRAGMENT, lane, seq, index, count, len(data)) + data


#: A parsed frame: a tuple whose first item is the frame type byte.
#:   (ACK, largest, bits, delay_units) (PING,) (CONFIRM, value) (CLOSE, reason)
#:   (PATH_CHALLENGE, data) (PATH_RESPONSE, data)
#:   (UNRELIABLE, data) (SEQUENCED, seq, data) (RELIABLE, seq, index, count, data)
#:   (FRAGMENT, lane, seq, index, count, data)
Frame = tuple[object, ...]


def parse_frames_untrusted(buf: bytes) -> list[Frame]:
    """Split a decrypted payload into frames; raises ``RemoteProtocolError`` on any malformed frame."""
    frames: list[Frame] = []
    pos = 0
    end = len(buf)
    while pos < end:
        ftype = buf[pos]
        pos += 1
        if ftype == _UNRELIABLE:
            if pos + 2 > end:
                raise RemoteProtocolError("truncated UNRELIABLE frame")
            (length,) = _U16.unpack_from(buf, pos)
            pos += 2
            if pos + length > end:
                raise RemoteProtocolError("UNRELIABLE frame runs past the packet")
            frames.append((ftype, buf[pos : pos + length]))
            pos += length
        elif ftype == ACK:
            if pos + 18 > end:
                raise RemoteProtocolError("truncated ACK frame")
            largest, bits, delay = _ACK_BODY.unpack_from(buf, pos)
            pos += 18
            frames.append((ftype, largest, bits, delay))
        elif ftype == _SEQUENCED:
            if pos + 4 > end:
                raise RemoteProtocolError("truncated SEQUENCED frame")
            seq, length = _SEQ_BODY.unpack_from(buf, pos)
            pos += 4
            if pos + length > end:
                raise RemoteProtocolError("SEQUENCED frame runs past the packet")
            frames.append((ftype, seq, buf[pos : pos + length]))
            pos += length
        elif ftype == _RELIABLE:
            if pos + 8 > end:
                raise RemoteProtocolError("truncated RELIABLE frame")
            seq, index, count, length = _REL_BODY.unpack_from(buf, pos)
            pos += 8
            if count == 0 or index >= count:
                raise RemoteProtocolError(f"RELIABLE fragment {index} of {count} is impossible")
            if pos + length > end:
                raise RemoteProtocolError("RELIABLE frame runs past the packet")
            frames.append((ftype, seq, index, count, buf[pos : pos + length]))
            pos += length
        elif ftype == _FRAGMENT:
            if pos + 7 > end:
                raise RemoteProtocolError("truncated FRAGMENT frame")
            lane, seq, index, count, length = _FRAG_BODY.unpack_from(buf, pos)
            pos += 7
            if lane > 1:
                raise RemoteProtocolError(f"FRAGMENT frame for lane {lane}, only unreliable lanes fragment")
            if not 2 <= count <= MAX_UNRELIABLE_FRAGMENTS or index >= count:
                raise RemoteProtocolError(f"FRAGMENT {index} of {count} is impossible")
            if pos + length > end:
                raise RemoteProtocolError("FRAGMENT frame runs past the packet")
            frames.append((ftype, lane, seq, index, count, buf[pos : pos + length]))
            pos += length
        elif ftype == PING:
            frames.append((ftype,))
        elif ftype == CONFIRM:
            if pos + 16 > end:
                raise RemoteProtocolError("truncated CONFIRM frame")
            frames.append((ftype, buf[pos : pos + 16]))
            pos += 16
        elif ftype == PATH_CHALLENGE or ftype == PATH_RESPONSE:
            if pos + 8 > end:
                raise RemoteProtocolError(f"truncated {FrameType(ftype).name} frame")
            frames.append((ftype, buf[pos : pos + 8]))
            pos += 8
        elif ftype == CLOSE:
            if pos + 1 > end:
                raise RemoteProtocolError("truncated CLOSE frame")
            length = buf[pos]
            pos += 1
            if pos + length > end:
                raise RemoteProtocolError("CLOSE reason runs past the packet")
            frames.append((ftype, buf[pos : pos + length].decode("utf-8", "replace")))
            pos += length
        else:
            raise RemoteProtocolError(f"unknown frame type 0x{ftype:02x}")
    return frames
