"""Location service and account store."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from server.accounts import AccountError, AccountStore
from server.config import AccessNetworkRef
from server.location import Binding, LocationService


def net(name: str, *prefixes: str) -> AccessNetworkRef:
    return AccessNetworkRef(name, tuple(ipaddress.ip_network(p) for p in prefixes))


def binding(contact: str, expires_at: float, at: float = 0.0) -> Binding:
    return Binding("sip:a@r.test", contact, expires_at, ("10.1.2.3", 5060), None, "c", 1, at)


def test_longest_prefix_wins() -> None:
    location = LocationService([net("wide", "10.0.0.0/8"), net("narrow", "10.1.0.0/16"), net("v6", "2001:db8::/32")])
    lookup = location.networks.lookup
    assert lookup("10.1.2.3") == "narrow"
    assert lookup("10.2.0.1") == "wide"
    assert lookup("2001:db8::7") == "v6"
    assert lookup("192.0.2.1") is None
    assert lookup("not-an-ip") is None


def test_bindings_expire_in_order_and_refresh() -> None:
    location = LocationService()
    location.put(binding("sip:a@h1", 100.0, at=1.0))
    location.put(binding("sip:a@h2", 50.0, at=2.0))
    assert [b.contact for b in location.lookup("sip:a@r.test", 10.0)] == ["sip:a@h2", "sip:a@h1"]
    location.put(binding("sip:a@h2", 200.0, at=3.0))  # refreshed: the old expiry must not remove it
    assert location.next_expiry() == 50.0
    assert location.expire(60.0) == []
    gone = location.expire(150.0)
    assert [b.contact for b in gone] == ["sip:a@h1"]
    assert [b.contact for b in location.lookup("sip:a@r.test", 150.0)] == ["sip:a@h2"]
    assert location.lookup("sip:a@r.test", 250.0) == []  # past expiry it is invisible even before expire()


def test_account_store(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    store = AccountStore(tmp_path / "sub" / "r.db", "r.test")
    store.add("alice", "pw", now=1.0)
    assert store.exists("alice") and not store.exists("bob")
    assert store.ha1("alice", "MD5") is not None and store.ha1("alice", "SHA-256") is not None
    other = AccountStore(tmp_path / "sub" / "r.db", "other.test")  # another realm sees nothing
    assert other.ha1("alice", "MD5") is None
    with pytest.raises(AccountError):
        store.add("alice", "pw", now=2.0)
    store.remove("alice")
    assert store.ha1("alice", "MD5") is None
    with pytest.raises(AccountError):
        store.remove("alice")
    store.close()
    other.close()
