"""Location service and account store."""

from __future__ import annotations

import ipaddress
import sqlite3
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


def _store_under_commits(tmp_path: Path) -> tuple[Path, AccountStore, list[str], sqlite3.Connection]:
    """An account store with alice's HA1 cached, its statements traced, and another connection that just committed
    to a table other than the accounts (as the server's policy and registrations do all the time)."""
    from gamesdk.sip.digest import compute_ha1
    from server.db import open_region_db

    path = tmp_path / "r.db"
    store = AccountStore(path, "r.test", ("MD5",))
    store.add("alice", "pw", now=1.0)
    assert store.ha1("alice", "MD5") == compute_ha1("alice", "r.test", "pw", "MD5")
    queries: list[str] = []
    store._db.set_trace_callback(queries.append)
    writer = open_region_db(path)
    writer.execute("INSERT INTO server_secrets (name, value) VALUES ('x', x'00')")
    return path, store, queries, writer


def test_account_cache_survives_other_tables_and_follows_account_changes(tmp_path: Path) -> None:
    # The server's other connections commit all the time (reservations on every answered call, registrations every
    # second): that must not drop the cache of HA1s (a database query per login otherwise), while an account
    # changed by another connection (the CLI) is seen at the next lookup.
    from gamesdk.sip.digest import compute_ha1

    path, store, queries, writer = _store_under_commits(tmp_path)
    store._version_checked_at = float("-inf")  # asked at most once a millisecond: ask now
    assert store.ha1("alice", "MD5") == compute_ha1("alice", "r.test", "pw", "MD5") and store.exists("alice")
    assert not [q for q in queries if "account_ha1" in q], queries
    cli = AccountStore(path, "r.test", ("MD5",))
    cli.set_password("alice", "new")
    store._version_checked_at = float("-inf")
    assert store.ha1("alice", "MD5") == compute_ha1("alice", "r.test", "new", "MD5")
    cli.set_locked("alice", True)
    store._version_checked_at = float("-inf")
    assert store.ha1("alice", "MD5") is None and not store.exists("alice")
    cli.remove("alice")
    cli.add("alice", "again", now=2.0)
    store._version_checked_at = float("-inf")
    assert store.ha1("alice", "MD5") == compute_ha1("alice", "r.test", "again", "MD5")
    for conn in (writer,):
        conn.close()
    store.close()
    cli.close()


def test_account_lookup_runs_no_statement_while_no_account_changed(tmp_path: Path) -> None:
    # A lookup asks the accounts' change count only when the stamp beside the database moved (or once a second):
    # a login's cache hit runs no SQL statement, whatever the server's other connections commit.
    from gamesdk.sip.digest import compute_ha1

    path, store, queries, writer = _store_under_commits(tmp_path)
    store._version_checked_at = float("-inf")
    assert store.ha1("alice", "MD5") == compute_ha1("alice", "r.test", "pw", "MD5")
    assert queries == []
    # Another process's change is seen at the next lookup, by the stamp its AccountStore wrote.
    cli = AccountStore(path, "r.test", ("MD5",))
    cli.remove("alice")
    store._version_checked_at = float("-inf")
    assert store.ha1("alice", "MD5") is None and not store.exists("alice")
    writer.close()
    cli.close()
    store.close()


def test_account_change_without_the_stamp_is_seen_within_a_second(tmp_path: Path) -> None:
    # A writer that does not write the stamp (an operator's sqlite3 shell) is caught by the count, read at least
    # once a second (ctl flush drops the cache at once).
    from server.db import open_region_db

    path = tmp_path / "r.db"
    store = AccountStore(path, "r.test", ("MD5",))
    store.add("alice", "pw", now=1.0)
    assert store.ha1("alice", "MD5") is not None
    shell = open_region_db(path)
    shell.execute("UPDATE accounts SET locked = 1 WHERE name = 'alice'")
    store._version_checked_at = float("-inf")
    store._counted_at = float("-inf")
    assert store.ha1("alice", "MD5") is None
    shell.close()
    store.close()


def test_refreshes_keep_one_expiry_entry_per_binding() -> None:
    # A refresh used to push one more entry on the expiry heap, kept until its time came: a player refreshing every
    # minute with Expires 3600 left 60 entries. Now a binding has one; a later expiry pushes nothing.
    location = LocationService()
    for i in range(100):
        location.put(binding("sip:a@h1", 3600.0 + 60 * i, at=60.0 * i))
        location.put(binding("sip:a@h2", 3600.0 + 60 * i, at=60.0 * i))
    assert len(location._expiry) == 2
    assert location.next_expiry() == 3600.0
    assert location.expire(3600.0) == []  # refreshed since: put back at its expiry, not removed
    assert len(location._expiry) == 2 and location.next_expiry() == 3600.0 + 60 * 99
    gone = location.expire(3600.0 + 60 * 99)
    assert sorted(b.contact for b in gone) == ["sip:a@h1", "sip:a@h2"]
    assert location._expiry == [] and location.lookup("sip:a@r.test", 0.0) == []


def test_expiry_follows_a_shortened_refresh_and_a_binding_added_again() -> None:
    location = LocationService()
    location.put(binding("sip:a@h1", 3600.0))
    location.put(binding("sip:a@h1", 60.0, at=1.0))  # refreshed with a shorter time: expires at the new one
    assert location.next_expiry() == 60.0
    assert [b.expires_at for b in location.expire(60.0)] == [60.0]
    location.put(binding("sip:a@h1", 3600.0, at=61.0))  # registered again: the entry left at 3600 serves it
    location.remove("sip:a@r.test", "sip:a@h1")
    location.put(binding("sip:a@h1", 7200.0, at=62.0))
    assert location.expire(3600.0) == []
    assert [b.expires_at for b in location.expire(7200.0)] == [7200.0]
    assert location.expire(10_000.0) == [] and location._expiry == []
