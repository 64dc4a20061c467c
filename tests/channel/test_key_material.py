"""Key material is single use: derived once, the private key wiped, a second channel refused, never shown."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from gamesdk.channel import Channel, ChannelParams, PrivateKey
from gamesdk.channel.crypto import generate_keypair
from gamesdk.channel.testing import DeterministicRandom, make_params_pair
from gamesdk.errors import LocalProtocolError


def test_a_second_channel_from_the_same_params_is_refused() -> None:
    offer, _ = make_params_pair()
    Channel(offer, now=0.0)
    with pytest.raises(LocalProtocolError, match="already keyed a channel: key material is single use"):
        Channel(offer, now=0.0)
    # copies share the one key, so they cannot be used to get round it
    for twin in (dataclasses.replace(offer, peer_addr=("127.0.0.1", 9)), copy.copy(offer), copy.deepcopy(offer)):
        with pytest.raises(LocalProtocolError, match="single use"):
            Channel(twin, now=0.0)


def test_the_private_key_is_wiped_after_derivation_and_never_shown() -> None:
    private, _ = generate_keypair(DeterministicRandom(3))
    offer, _ = make_params_pair()
    params = dataclasses.replace(offer, local_private_key=private)
    key = params.local_private_key
    assert isinstance(key, PrivateKey) and not key.used
    for text in (repr(params), str(params), repr(key)):
        assert private.hex() not in text and repr(private) not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(params)
    channel = Channel(params, now=0.0)
    assert key.used and key._key is None  # type: ignore[attr-defined]
    assert "used" in repr(channel.params.local_private_key)
    # nothing of the key schedule is kept in attributes a debugger or a log line would print
    for name, value in vars(channel).items() if hasattr(channel, "__dict__") else ():
        assert not (isinstance(value, bytes) and value == private), name


def test_params_check_the_key_length() -> None:
    offer, _ = make_params_pair()
    with pytest.raises(LocalProtocolError, match="local_private_key must be 32 bytes"):
        dataclasses.replace(offer, local_private_key=b"short")
    assert isinstance(ChannelParams.__dataclass_fields__["local_private_key"], dataclasses.Field)
