"""RFC 8839 ICE lines beside the gsdk lines: written, read back, and refused with the offending line."""

from __future__ import annotations

import pytest

from gamesdk.errors import SdpError
from gamesdk.ice.candidate import Candidate, candidate_priority
from gamesdk.sdp.codec import format_sdp, parse_sdp_untrusted
from gamesdk.sdp.examples import example_offer
from gamesdk.sdp.game import canonical_gsdk_lines
from gamesdk.sdp.ice import MAX_CANDIDATES, IceParameters, add_ice, read_ice_untrusted

HOST = Candidate("abcd1234", candidate_priority("host"), "192.168.1.2", 5000, "host")
RELAY = Candidate("ffff0000", candidate_priority("relay"), "203.0.113.7", 49152, "relay",
                  related=("198.51.100.2", 40000))
ICE = IceParameters("abcd", "0123456789abcdef012345", (HOST, RELAY))


def test_round_trip_and_gsdk_lines_untouched() -> None:
    text = format_sdp(add_ice(example_offer(), ICE))
    assert "a=candidate:ffff0000 1 udp 16777215 203.0.113.7 49152 typ relay raddr 198.51.100.2 rport 40000" in text
    assert text.rstrip().endswith("a=end-of-candidates") and "trickle" not in text
    desc = parse_sdp_untrusted(text)
    assert read_ice_untrusted(desc) == ICE
    assert canonical_gsdk_lines(desc) == canonical_gsdk_lines(example_offer())
    assert read_ice_untrusted(example_offer()) is None  # a peer without ICE


@pytest.mark.parametrize(("old", "new", "needle"), [
    ("a=ice-ufrag:abcd", "a=ice-ufrag:ab", "ice-ufrag"),
    ("a=ice-pwd:0123456789abcdef012345", "a=ice-pwd:short", "ice-pwd"),
    ("1 udp 2130706431 192.168.1.2 5000 typ host", "1 tcp 2130706431 192.168.1.2 5000 typ host", "udp"),
    ("192.168.1.2 5000 typ host", "example.com 5000 typ host", "malformed"),
    ("192.168.1.2 5000 typ host", "192.168.1.2 70000 typ host", "out of range"),
    ("typ host", "typ magic", "unknown"),
])
def test_bad_ice_lines_name_the_line(old: str, new: str, needle: str) -> None:
    text = format_sdp(add_ice(example_offer(), ICE)).replace(old, new)
    with pytest.raises(SdpError) as err:
        read_ice_untrusted(parse_sdp_untrusted(text))
    assert needle in err.value.message and err.value.status_hint == 488


def test_candidate_count_is_capped() -> None:
    many = tuple(Candidate(f"f{i}", candidate_priority("host"), "10.0.0.1", 1000 + i, "host") for i in range(40))
    desc = parse_sdp_untrusted(format_sdp(add_ice(example_offer(), IceParameters("abcd", "x" * 22, many))))
    found = read_ice_untrusted(desc)
    assert found is not None and len(found.candidates) == MAX_CANDIDATES
