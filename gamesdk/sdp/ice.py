"""ICE in the game stream's SDP (RFC 8839): ``a=ice-ufrag``, ``a=ice-pwd``, ``a=candidate`` lines and
``a=end-of-candidates``, beside the ``gsdk-*`` lines. No trickle: every candidate is in the offer or answer, so
``a=ice-options:trickle`` is never sent. ``c=``/``m=`` carry the default candidate (RFC 8839 section 4.2.1.2),
which is what a peer without ICE uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from gamesdk.errors import RemoteProtocolError, SdpError
from gamesdk.ice.candidate import Candidate
from gamesdk.sdp.game import find_game_media
from gamesdk.sdp.model import Attribute, SessionDescription

__all__ = ["MAX_CANDIDATES", "IceParameters", "add_ice", "canonical_ice_lines", "read_ice_untrusted"]

#: The attributes of RFC 8839 (and ``ice-lite``/``ice-options``, ``remote-candidates``) the transcript covers.
_ICE_NAMES = frozenset({"ice-ufrag", "ice-pwd", "ice-options", "ice-lite", "ice-mismatch", "ice-pacing",
                        "candidate", "remote-candidates", "end-of-candidates"})

#: Candidates read from a peer's SDP at most (each one costs checks; a real agent offers a handful).
MAX_CANDIDATES = 16
#: ice-char = ALPHA / DIGIT / "+" / "/" (RFC 8839 section 5.4); ufrag 4-256, pwd 22-256 characters.
_UFRAG = re.compile(r"^[A-Za-z0-9+/]{4,256}$")
_PWD = re.compile(r"^[A-Za-z0-9+/]{22,256}$")


@dataclass(frozen=True, slots=True)
class IceParameters:
    """One side's ICE credentials and candidates."""

    ufrag: str
    pwd: str
    candidates: tuple[Candidate, ...]


def add_ice(desc: SessionDescription, ice: IceParameters) -> SessionDescription:
    """``desc`` with the ICE lines appended to its game stream."""
    lines = [Attribute("ice-ufrag", ice.ufrag), Attribute("ice-pwd", ice.pwd)]
    lines += [Attribute("candidate", c.to_sdp().removeprefix("candidate:")) for c in ice.candidates]
    lines.append(Attribute("end-of-candidates"))
    game = find_game_media(desc)
    media = tuple(replace(m, lines=m.lines + tuple(lines)) if m is game else m for m in desc.media)
    return replace(desc, media=media)


def read_ice_untrusted(desc: SessionDescription) -> IceParameters | None:
    """The peer's ICE lines (game stream first, then session level), or ``None`` when it offers no ICE.

    Raises:
        SdpError: the ICE lines are malformed (a bad ufrag or password, a candidate we cannot read).
    """
    section = find_game_media(desc)
    values: dict[str, str] = {}
    candidates: list[Candidate] = []
    for attribute in (*desc.attributes, *section.attributes):
        if attribute.name in ("ice-ufrag", "ice-pwd"):
            if attribute.value is None:
                raise SdpError(f"a={attribute.name} needs a value", line=str(attribute))
            values[attribute.name] = attribute.value
        elif attribute.name == "candidate" and attribute.value is not None:
            if len(candidates) >= MAX_CANDIDATES:
                continue
            try:
                candidate = Candidate.from_sdp(attribute.value)
            except RemoteProtocolError as exc:
                raise SdpError(exc.message, line=str(attribute)) from None
            if candidate.component == 1:
                candidates.append(candidate)
    if "ice-ufrag" not in values and "ice-pwd" not in values:
        return None
    ufrag, pwd = values.get("ice-ufrag", ""), values.get("ice-pwd", "")
    if not _UFRAG.match(ufrag):
        raise SdpError("a=ice-ufrag must be 4-256 ice-chars (letters, digits, + and /)", line=f"a=ice-ufrag:{ufrag}")
    if not _PWD.match(pwd):
        raise SdpError("a=ice-pwd must be 22-256 ice-chars (letters, digits, + and /)", line="a=ice-pwd")
    return IceParameters(ufrag=ufrag, pwd=pwd, candidates=tuple(candidates))


def canonical_ice_lines(desc: SessionDescription) -> bytes:
    """The ICE lines of ``desc`` (session level, then the game stream, in their order, each ending in CRLF), for
    the channel's transcript hash: an edited candidate, ufrag or password gives both sides different keys, so
    the channel reports it instead of running on a path someone chose. Empty when the SDP has no ICE lines
    (the transcript of a peer without ICE is unchanged)."""
    section = find_game_media(desc)
    lines = [str(a) for a in (*desc.attributes, *section.attributes) if a.name in _ICE_NAMES]
    return "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogatepass")
