"""PIDF presence documents: round trip, and hostile bodies refused with PresenceError only."""

from __future__ import annotations

import pytest

from gamesdk.sip.pidf import PresenceError, PresenceStatus, format_presence, parse_presence_untrusted


@pytest.mark.parametrize("status", list(PresenceStatus))
def test_round_trip(status: PresenceStatus) -> None:
    assert parse_presence_untrusted(format_presence("sip:bob@na.gamesdk.test", status)) is status


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa">]><presence xmlns="urn:ietf:params:xml:ns:pidf"/>',
        (b"<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple id='t'><status><basic>maybe</basic></status>"
        b"</tuple></presence>"),
        b"<other/>",
        b"<presence xmlns='urn:ietf:params:xml:ns:pidf'>" + b"<x>" * 20 + b"</x>" * 20 + b"</presence>",
        b"<presence " + b"a" * 9000,
        b"not xml at all",
    ],
)
def test_hostile_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(PresenceError):
        parse_presence_untrusted(body)
