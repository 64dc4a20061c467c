"""gamesdk.sdp: SDP (RFC 8866) parse/format and the game extension of DESIGN section 3. Pure: no I/O."""

from __future__ import annotations

from gamesdk.sdp.codec import MAX_SDP_BYTES, format_sdp, format_sdp_bytes, parse_sdp_untrusted
from gamesdk.sdp.game import (
    GameMedia,
    Role,
    canonical_gsdk_lines,
    encode_public_key,
    find_game_media,
    game_from_sdp,
    game_to_sdp,
    read_game_untrusted,
)
from gamesdk.sdp.model import (
    Attribute,
    Bandwidth,
    Connection,
    Field,
    MediaDescription,
    Origin,
    SessionDescription,
)

__all__ = [
    "MAX_SDP_BYTES",
    "Attribute",
    "Bandwidth",
    "Connection",
    "Field",
    "GameMedia",
    "MediaDescription",
    "Origin",
    "Role",
    "SessionDescription",
    "canonical_gsdk_lines",
    "encode_public_key",
    "find_game_media",
    "format_sdp",
    "format_sdp_bytes",
    "game_from_sdp",
    "game_to_sdp",
    "parse_sdp_untrusted",
    "read_game_untrusted",
]
