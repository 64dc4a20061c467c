"""Key schedule and per-packet AEAD: RFC 7748 vector, transcript binding, both suites, tampering."""

from __future__ import annotations

import dataclasses

import pytest

from gamesdk.channel.config import ChannelParams
from gamesdk.channel.crypto import (
    InvalidTag,
    PacketCrypto,
    derive_keys,
    generate_keypair,
    public_key_from_private,
    transcript_hash,
)
from gamesdk.channel.testing import DeterministicRandom, make_params_pair
from gamesdk.errors import LocalProtocolError, RemoteProtocolError

SUITES = ["chacha20-poly1305", "aes-256-gcm"]


def test_x25519_rfc7748_section_6_1_vector() -> None:
    alice_priv = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    alice_pub = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    bob_priv = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    bob_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    assert public_key_from_private(alice_priv) == alice_pub
    assert public_key_from_private(bob_priv) == bob_pub


def _th(**change: object) -> bytes:
    base: dict[str, object] = {
        "offer_gsdk": b"a=gsdk-sid:1\r\n",
        "answer_gsdk": b"a=gsdk-sid:2\r\n",
        "offer_public": bytes(range(32)),
        "answer_public": bytes(range(1, 33)),
        "call_id": "c1",
        "from_tag": "f",
        "to_tag": "t",
    }
    base.update(change)
    return transcript_hash(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"offer_gsdk": b"a=gsdk-sid:3\r\n"},
        {"answer_gsdk": b"a=gsdk-sid:1\r\n"},
        {"offer_public": bytes(range(2, 34))},
        {"answer_public": bytes(range(32))},
        {"call_id": "c2"},
        {"from_tag": "g"},
        {"to_tag": "u"},
        # moving bytes between fields must not collide (length prefixes)
        {"offer_gsdk": b"a=gsdk-sid:1\r\na", "answer_gsdk": b"=gsdk-sid:2\r\n"},
        {"from_tag": "ft", "to_tag": ""},
    ],
)
def test_transcript_hash_covers_every_input(change: dict[str, object]) -> None:
    assert _th() != _th(**change)
    assert len(_th()) == 32


def test_transcript_hash_rejects_short_key() -> None:
    with pytest.raises(LocalProtocolError, match="32-byte"):
        _th(offer_public=b"short")


def test_generate_keypair_is_deterministic_with_injected_factory() -> None:
    assert generate_keypair(DeterministicRandom(7)) == generate_keypair(DeterministicRandom(7))
    assert generate_keypair(DeterministicRandom(7)) != generate_keypair(DeterministicRandom(8))
    with pytest.raises(LocalProtocolError):
        generate_keypair(lambda n: b"x")


def test_both_roles_derive_mirrored_keys_and_directions_differ() -> None:
    offer, answer = make_params_pair()
    ko, ka = derive_keys(offer), derive_keys(answer)
    assert ko.send == ka.receive and ko.receive == ka.send
    assert ko.send.key != ko.receive.key and ko.send.iv != ko.receive.iv
    assert ko.confirm_send == ka.confirm_receive and ko.confirm_send != ko.confirm_receive


def test_edited_sdp_changes_every_key() -> None:
    offer, answer = make_params_pair(edit_offer=lambda g: g.replace(b"lat=50", b"lat=500"))
    ko, ka = derive_keys(offer), derive_keys(answer)
    assert ko.send.key != ka.receive.key and ko.receive.key != ka.send.key


@pytest.mark.parametrize("suite", SUITES)
def test_aead_round_trip_and_tamper_detection(suite: str) -> None:
    offer, answer = make_params_pair(suite=suite)
    a = PacketCrypto(suite, derive_keys(offer))
    b = PacketCrypto(suite, derive_keys(answer))
    header = b"\x42" + bytes(12)
    sealed = a.seal(5, header, b"payload")
    assert len(sealed) == len(b"payload") + 16
    assert b.open(5, header, sealed) == b"payload"
    assert a.seal(6, header, b"payload") != sealed  # a new nonce per packet number
    with pytest.raises(InvalidTag):
        b.open(6, header, sealed)  # wrong packet number = wrong nonce
    with pytest.raises(InvalidTag):
        b.open(5, b"\x43" + bytes(12), sealed)  # header is associated data
    tampered = bytearray(sealed)
    tampered[0] ^= 1
    with pytest.raises(InvalidTag):
        b.open(5, header, bytes(tampered))
    with pytest.raises(InvalidTag):
        a.open(5, header, sealed)  # own direction's key cannot open it


def test_low_order_peer_key_is_refused_with_488() -> None:
    offer, _ = make_params_pair()
    bad = dataclasses.replace(offer, remote_public_key=bytes(32))  # the all-zero point has order 1
    with pytest.raises(RemoteProtocolError) as info:
        derive_keys(bad)
    assert info.value.status_hint == 488


@pytest.mark.parametrize(
    "change, message",
    [
        ({"role": "client"}, "role"),
        ({"suite": "rot13"}, "unknown AEAD suite"),
        ({"local_private_key": b"x"}, "local_private_key"),
        ({"transcript_hash": b""}, "transcript_hash"),
        ({"local_session_id": -1}, "local_session_id"),
        ({"remote_session_id": 1 << 32}, "remote_session_id"),
        ({"peer_addr": ("127.0.0.1", 0)}, "peer_addr"),
    ],
)
def test_params_validation_names_the_field(change: dict[str, object], message: str) -> None:
    offer, _ = make_params_pair()
    fields = {f.name: getattr(offer, f.name) for f in dataclasses.fields(ChannelParams)}
    fields.update(change)
    with pytest.raises(LocalProtocolError, match=message):
        ChannelParams(**fields)  # type: ignore[arg-type]
