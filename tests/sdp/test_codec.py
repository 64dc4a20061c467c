"""RFC 8866 parse/format: exact round trips, and every grammar error names its line."""

from __future__ import annotations

import pytest

from gamesdk.errors import LocalProtocolError, SdpError
from gamesdk.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    Field,
    MediaDescription,
    Origin,
    SessionDescription,
    format_sdp,
    format_sdp_bytes,
    parse_sdp_untrusted,
)
from gamesdk.sdp.codec import MAX_SDP_BYTES, is_token


def crlf(text: str) -> str:
    """Test bodies are written with LF for readability; SDP uses CRLF."""
    return text.replace("\n", "\r\n")


# Our own offer, with lines of other extensions (RFC 3312 preconditions, TIAS, a future gsdk attribute).
GAME_OFFER = crlf(
    """v=0
o=alice 2890844526 2890844526 IN IP4 198.51.100.10
s=-
c=IN IP4 198.51.100.10
t=0 0
m=application 50000 UDP/GSDK gsdk
b=AS:64
b=TIAS:60000
a=gsdk-format:pong/2;tick=60
a=gsdk-format:pong/1;tick=60
a=gsdk-class:action
a=gsdk-qos:lat=50;jit=10;loss=10000;pps=60
a=gsdk-sec:chacha20-poly1305,aes-256-gcm
a=gsdk-kx:x25519 e06Qm75__kTEZaIgA31gjuNYl9Me-XLwf3SJLLD3PxM
a=gsdk-sid:305419896
a=curr:qos local none
a=des:qos optional local sendrecv
a=gsdk-future:something new
"""
)

# A typical audio/video SDP with every session-level line type and lines we do not interpret.
AUDIO_VIDEO = crlf(
    """v=0
o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1
s=Call to John Smith
i=SDP Offer #1
u=http://www.jdoe.example.com/home.html
e=Jane Doe <jane@jdoe.example.com>
p=+1 617 555-6011
c=IN IP4 198.51.100.1
b=CT:384
t=0 0
a=tool:gamesdk-test 0.1
a=recvonly
m=audio 49170 RTP/AVP 0 8 97
i=voice
b=AS:64
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:97 iLBC/8000
a=fmtp:97 mode=30
a=ptime:20
a=sendrecv
m=video 51372 RTP/AVP 31 32
c=IN IP6 2001:db8::2
b=AS:256
a=rtpmap:31 H261/90000
a=rtpmap:32 MPV/90000
m=audio 0 RTP/AVP 96
"""
)

# Scheduled session: repeat and zone lines (RFC 8866 §5.10, §5.11), multicast with TTL, k= (obsolete).
SCHEDULED = crlf(
    """v=0
o=- 20518 0 IN IP6 2001:db8::1
s= 
t=3034423619 3042462419
r=7d 1h 0 25h
z=3042462419 -1h 3050462419 0
t=3050462419 3060462419
k=prompt
a=charset:UTF-8
m=audio 49170/2 RTP/AVP 0
c=IN IP4 233.252.0.1/127
c=IN IP4 233.252.0.2/127
k=clear:secret
a=recvonly
"""
)

# A WebRTC-style offer: data channel section, ICE and DTLS lines, property attributes.
WEBRTC = crlf(
    """v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=candidate:1 1 udp 2113937151 192.0.2.4 54400 typ host generation 0
a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=fingerprint:sha-256 19:E2:1C:3B:4B:9F:81:E6:B8:5C:F4:A5:A8:D8:73:04:BB:05:2F:70:9F:04:A9:0E:05:E9:26:33:E8:70:88:A2
a=setup:actpass
a=mid:0
a=sctp-port:5000
a=max-message-size:262144
"""
)

CORPUS = {"game-offer": GAME_OFFER, "audio-video": AUDIO_VIDEO, "scheduled": SCHEDULED, "webrtc": WEBRTC}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_exact_round_trip(name: str) -> None:
    text = CORPUS[name]
    desc = parse_sdp_untrusted(text)
    assert format_sdp(desc) == text
    assert format_sdp_bytes(desc) == text.encode()
    assert parse_sdp_untrusted(text.encode()) == desc


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_lf_only_input_is_accepted_and_formatted_with_crlf(name: str) -> None:
    text = CORPUS[name]
    lf = text.replace("\r\n", "\n")
    desc = parse_sdp_untrusted(lf)
    assert desc == parse_sdp_untrusted(text)
    assert format_sdp(desc) == text


def test_missing_final_line_end_and_trailing_blank_lines_are_tolerated() -> None:
    assert parse_sdp_untrusted(GAME_OFFER[:-2]) == parse_sdp_untrusted(GAME_OFFER)
    assert parse_sdp_untrusted(GAME_OFFER + "\r\n\r\n") == parse_sdp_untrusted(GAME_OFFER)


def test_fields_of_the_audio_video_body() -> None:
    desc = parse_sdp_untrusted(AUDIO_VIDEO)
    assert desc.origin == Origin("jdoe", 3724394400, 3724394405, "IN", "IP4", "198.51.100.1")
    assert desc.session_name == "Call to John Smith"
    assert desc.connection == Connection("IN", "IP4", "198.51.100.1")
    assert desc.bandwidths == (Bandwidth("CT", 384),)
    assert desc.attributes == (Attribute("tool", "gamesdk-test 0.1"), Attribute("recvonly"))
    assert [m.media for m in desc.media] == ["audio", "video", "audio"]
    audio, video, rejected = desc.media
    assert (audio.port, audio.proto, audio.formats) == (49170, "RTP/AVP", ("0", "8", "97"))
    assert audio.lines[0] == Field("i", "voice")
    assert audio.attribute_values("rtpmap") == ["0 PCMU/8000", "8 PCMA/8000", "97 iLBC/8000"]
    assert audio.attribute_values("sendrecv") == [None]
    assert video.connections == (Connection("IN", "IP6", "2001:db8::2"),)
    assert video.bandwidths == (Bandwidth("AS", 256),)
    assert rejected.port == 0 and rejected.lines == ()


def test_scheduled_body_keeps_time_lines_and_port_count() -> None:
    desc = parse_sdp_untrusted(SCHEDULED)
    assert desc.session_name == " "
    assert [line for line in desc.lines if isinstance(line, Field)][:4] == [
        Field("t", "3034423619 3042462419"),
        Field("r", "7d 1h 0 25h"),
        Field("z", "3042462419 -1h 3050462419 0"),
        Field("t", "3050462419 3060462419"),
    ]
    media = desc.media[0]
    assert (media.port, media.port_count) == (49170, 2)
    assert len(media.connections) == 2


def test_built_description_formats_as_expected() -> None:
    desc = SessionDescription(
        origin=Origin("bob", 7, 8, "IN", "IP4", "127.0.0.1"),
        lines=(Connection("IN", "IP4", "127.0.0.1"), Field("t", "0 0")),
        media=(
            MediaDescription(
                "application",
                4000,
                "UDP/GSDK",
                ("gsdk",),
                (Bandwidth("AS", 32), Attribute("gsdk-class", "casual"), Attribute("inactive")),
            ),
        ),
    )
    assert format_sdp(desc) == crlf(
        """v=0
o=bob 7 8 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=application 4000 UDP/GSDK gsdk
b=AS:32
a=gsdk-class:casual
a=inactive
"""
    )


@pytest.mark.parametrize(
    "desc",
    [
        SessionDescription(origin=Origin("a", 1, 1, "IN", "IP4", "127.0.0.1"), session_name="x\r\na=evil"),
        SessionDescription(
            origin=Origin("a", 1, 1, "IN", "IP4", "127.0.0.1"),
            lines=(Field("t", "0 0"), Attribute("x", "1\n2")),
        ),
        SessionDescription(origin=Origin("a", 1, 1, "IN", "IP4", "127.0.0.1\x00")),
    ],
)
def test_format_refuses_line_injection(desc: SessionDescription) -> None:
    with pytest.raises(LocalProtocolError, match="CR, LF or NUL"):
        format_sdp(desc)


def test_format_bytes_refuses_unencodable_text() -> None:
    desc = SessionDescription(origin=Origin("a", 1, 1, "IN", "IP4", "127.0.0.1"), session_name="\udc80")
    with pytest.raises(LocalProtocolError, match="UTF-8"):
        format_sdp_bytes(desc)


HEAD = "v=0\no=a 1 1 IN IP4 192.0.2.1\ns=-\n"

# (body, the line the error must name, a fragment of the message)
GRAMMAR_ERRORS = [
    ("v=1\no=a 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n", "v=1", "version"),
    ("o=a 1 1 IN IP4 192.0.2.1\nv=0\ns=-\nt=0 0\n", "o=a 1 1 IN IP4 192.0.2.1", "expected an v= line"),
    ("v=0\ns=-\nt=0 0\n", "s=-", "expected an o= line"),
    ("v=0\no=a 1 1 IN IP4 192.0.2.1\nt=0 0\n", "t=0 0", "expected an s= line"),
    ("v=0\no=a 1 1 IN IP4 192.0.2.1\n", "o=a 1 1 IN IP4 192.0.2.1", "must start with v=, o= and s="),
    ("v=0\no=a 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n", "o=a 1 IN IP4 192.0.2.1", "6 fields"),
    ("v=0\no=a x 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n", "o=a x 1 IN IP4 192.0.2.1", "sess-id"),
    ("v=0\no=a 1 1 I@N IP4 192.0.2.1\ns=-\nt=0 0\n", "o=a 1 1 I@N IP4 192.0.2.1", "tokens"),
    (HEAD, "s=-", "without a t= line"),
    (HEAD + "m=audio 1 RTP/AVP 0\n", "m=audio 1 RTP/AVP 0", "no t= line before"),
    (HEAD + "a=x\nt=0 0\n", "a=x", "no t= line before"),
    (HEAD + "t=0\n", "t=0", "t= must be"),
    (HEAD + "t=0 x\n", "t=0 x", "t= must be"),
    (HEAD + "t=0 0\nr=7d 1h\n", "r=7d 1h", "r= needs"),
    (HEAD + "t=0 0\nr=7d 1h 0 2w\n", "r=7d 1h 0 2w", "not a time"),
    (HEAD + "t=0 0\nz=3042462419 -1h\n", "z=3042462419 -1h", "must follow an r="),
    (HEAD + "t=0 0\nr=7d 1h 0\nz=3042462419\n", "z=3042462419", "pairs"),
    (HEAD + "c=IN IP4\nt=0 0\n", "c=IN IP4", "c= must be"),
    (HEAD + "c=IN IP4 192.0.2.1 extra\nt=0 0\n", "c=IN IP4 192.0.2.1 extra", "c= must be"),
    (HEAD + "c=IN IP4 192.0.2.1\nc=IN IP4 192.0.2.2\nt=0 0\n", "c=IN IP4 192.0.2.2", "repeated"),
    (HEAD + "b=AS\nt=0 0\n", "b=AS", "b= must be"),
    (HEAD + "b=AS:6x\nt=0 0\n", "b=AS:6x", "bandwidth must be decimal"),
    (HEAD + "b=A S:64\nt=0 0\n", "b=A S:64", "b= must be"),
    (HEAD + "t=0 0\nb=AS:64\n", "b=AS:64", "out of order"),
    (HEAD + "t=0 0\na=x\nt=0 0\n", "t=0 0", "after k= or a="),
    (HEAD + "t=0 0\na=x\nk=prompt\n", "k=prompt", "out of order"),
    (HEAD + "t=0 0\nk=prompt\nk=prompt\n", "k=prompt", "repeated"),
    (HEAD + "i=one\ni=two\nt=0 0\n", "i=two", "repeated"),
    (HEAD + "t=0 0\na=na me\n", "a=na me", "token"),
    (HEAD + "t=0 0\na=:value\n", "a=:value", "token"),
    (HEAD + "t=0 0\ny=unknown\n", "y=unknown", "unknown line type"),
    (HEAD + "t=0 0\nX=1\n", "X=1", "unknown line type"),
    (HEAD + "t=0 0\nab=1\n", "ab=1", "not a '<type>=<value>' line"),
    (HEAD + "t=0 0\njunk\n", "junk", "not a '<type>=<value>' line"),
    (HEAD + "t=0 0\n\na=x\n", "", "empty line"),
    (HEAD + "t=0 0\na= x\n", "a= x", "whitespace after '='"),
    (HEAD + "t=0 0\na=\n", "a=", "empty value"),
    (HEAD + "t=0 0\na=x\ry\n", "a=x\ry", "CR or NUL"),
    (HEAD + "t=0 0\na=x\x00y\n", "a=x\x00y", "CR or NUL"),
    (HEAD + "t=0 0\nv=0\n", "v=0", "only once"),
    (HEAD + "t=0 0\nm=audio\n", "m=audio", "m= must be"),
    (HEAD + "t=0 0\nm=audio 99999 RTP/AVP 0\n", "m=audio 99999 RTP/AVP 0", "at most 65535"),
    (HEAD + "t=0 0\nm=audio x RTP/AVP 0\n", "m=audio x RTP/AVP 0", "port must be decimal"),
    (HEAD + "t=0 0\nm=audio 1/x RTP/AVP 0\n", "m=audio 1/x RTP/AVP 0", "port count"),
    (HEAD + "t=0 0\nm=audio 1 RTP//AVP 0\n", "m=audio 1 RTP//AVP 0", "proto"),
    (HEAD + "t=0 0\nm=audio 1 RTP/AVP 0  8\n", "m=audio 1 RTP/AVP 0  8", "formats"),
    (HEAD + "t=0 0\nm=a@udio 1 RTP/AVP 0\n", "m=a@udio 1 RTP/AVP 0", "media must be a token"),
    (HEAD + "t=0 0\nm=audio 1 RTP/AVP 0\nt=0 0\n", "t=0 0", "not allowed inside a media section"),
    (HEAD + "t=0 0\nm=audio 1 RTP/AVP 0\na=x\nc=IN IP4 192.0.2.1\n", "c=IN IP4 192.0.2.1", "out of order"),
    (HEAD + "t=0 0\nm=audio 1 RTP/AVP 0\ni=a\ni=b\n", "i=b", "repeated"),
    (HEAD + "t=0 0\nm=audio 1 RTP/AVP 0\nb=AS:1x\n", "b=AS:1x", "bandwidth"),
    (HEAD + "t=0 0\nm=audio 1 RTP/AVP 0\nc=IN IP4\n", "c=IN IP4", "c= must be"),
]


@pytest.mark.parametrize(("body", "line", "fragment"), GRAMMAR_ERRORS)
def test_grammar_errors_name_the_line(body: str, line: str, fragment: str) -> None:
    for variant in (body, crlf(body)):
        with pytest.raises(SdpError) as info:
            parse_sdp_untrusted(variant)
        assert info.value.line == line
        assert fragment in str(info.value)
        assert info.value.status_hint == 488
        shown = line.replace("\r", "\\x0d").replace("\x00", "\\x00")
        assert f"'{shown}'" in str(info.value)


def test_whole_body_errors() -> None:
    with pytest.raises(SdpError, match="empty SDP body"):
        parse_sdp_untrusted(b"")
    with pytest.raises(SdpError, match="not UTF-8"):
        parse_sdp_untrusted(b"v=0\r\no=\xff\r\n")
    with pytest.raises(SdpError, match="longer than") as info:
        parse_sdp_untrusted(b"v=0\r\n" + b"a" * MAX_SDP_BYTES)
    assert info.value.status_hint == 413
    with pytest.raises(SdpError, match="longer than"):
        parse_sdp_untrusted("v=0\r\n" + "a" * MAX_SDP_BYTES)


def test_huge_numbers_are_refused_not_crashing() -> None:
    with pytest.raises(SdpError, match="sess-id"):
        parse_sdp_untrusted(f"v=0\no=a {'9' * 5000} 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n")


def test_error_message_is_printable_and_quote_free() -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp_untrusted(HEAD + 't=0 0\na=bad name"\\\x01\n')
    message = str(info.value)
    assert message.isprintable()
    assert '"' not in message
    assert info.value.line == 'a=bad name"\\\x01'


def test_long_lines_are_shortened_in_the_message_but_kept_in_line() -> None:
    bad = "a=" + "x" * 200 + " y"
    with pytest.raises(SdpError) as info:
        parse_sdp_untrusted(HEAD + "t=0 0\n" + bad.replace("a=", "a=na me") + "\n")
    assert len(str(info.value)) < 160
    assert info.value.line is not None and len(info.value.line) > 200


def test_is_token() -> None:
    assert is_token("chacha20-poly1305")
    assert is_token("a.b_c~d")
    assert not is_token("")
    assert not is_token("a b")
    assert not is_token("a/b")
    assert not is_token("a;b")
    assert not is_token("é")
