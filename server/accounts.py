"""Player accounts in the region's SQLite database: name and HA1 per digest algorithm, never the password.

HA1 = H(username ":" realm ":" password) (RFC 7616 section 3.4.2) is all a digest server needs, so the
password itself is never stored. One HA1 per algorithm because SHA-256 and MD5 clients both log in (RFC 8760).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gamesdk.errors import GameSdkError
from gamesdk.sip.digest import compute_ha1
from server.db import open_region_db

__all__ = ["Account", "AccountError", "AccountStore", "valid_username"]

# The user part of sip:name@domain: keep to characters that need no escaping (RFC 3261 section 25.1 unreserved).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")

#: The token an account change writes into the stamp beside the database (random: two writers never write the
#: same one, so a token once read is never seen again after a change).
_STAMP_BYTES = 8
#: The accounts' change count is read at least this often (seconds) even when the stamp did not move.
_COUNT_AT_LEAST_EVERY_S = 1.0


class AccountError(GameSdkError):
    """An account operation cannot be done (bad name, duplicate, unknown user, unusable database)."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    realm: str
    created_at: float
    algorithms: tuple[str, ...]
    #: May use the operator console of the web site (``user add --admin``).
    admin: bool = False
    #: Refused at every login (SIP and web) until unlocked; the account and its history stay.
    locked: bool = False


def valid_username(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None


class AccountStore:
    """Accounts of one realm in one SQLite file. Lookups are cached in memory (the registrar asks per REGISTER)."""

    def __init__(self, path: str | Path, realm: str, algorithms: tuple[str, ...] = ("SHA-256", "MD5")) -> None:
        self.path = Path(path)
        self.realm = realm
        self.algorithms = algorithms
        # The tables come from the region schema (server/db.py); a database error propagates as DatabaseError.
        self._db = open_region_db(self.path, check_same_thread=False)
        self._cache: dict[tuple[str, str], str] = {}
        # The stamp beside the database (``<database>-accounts``, like SQLite's ``-wal``): every change made
        # through an AccountStore, in any process, writes a fresh token into it after its commit, so a lookup
        # learns that nothing changed from 8 bytes read, without an SQL statement (two read transactions on the
        # shared-memory locks of the WAL: the costliest step of a login's cache hit). None for a database only
        # this connection sees.
        self._stamp_fd: int | None = None
        if str(path) != ":memory:":
            self._stamp_fd = os.open(f"{self.path}-accounts", os.O_RDWR | os.O_CREAT, 0o600)
        self._stamp = self._read_stamp()
        self._accounts_changes = self._read_accounts_changes()
        self._version_checked_at = self._counted_at = time.monotonic()

    def _read_stamp(self) -> bytes:
        return b"" if self._stamp_fd is None else os.pread(self._stamp_fd, _STAMP_BYTES, 0)

    def _read_accounts_changes(self) -> int:
        row = self._db.execute("SELECT n FROM accounts_changes WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def _own_change(self) -> None:
        # After a change through this connection: the other processes' lookups are told by a fresh token in the
        # stamp (written after the commit, so one that reads it reads the count of this change or a later one),
        # the cache goes, and the count its triggers just raised is ours.
        if self._stamp_fd is not None:
            token = os.urandom(_STAMP_BYTES)
            os.pwrite(self._stamp_fd, token, 0)
            self._stamp = token
        self._cache.clear()
        self._accounts_changes = self._read_accounts_changes()

    def _drop_stale_cache(self) -> None:
        # The count kept by the triggers of schema migration 10 (server/db.py) moves when any connection changed
        # the accounts (``user remove`` in the CLI): a removed player or a changed password takes effect at the
        # next lookup, not at the next restart. Read at most once a millisecond: a login looks an account up twice
        # within microseconds (its HA1, then that it exists). Read straight away: PRAGMA data_version, asked
        # first to skip it, moves on every commit of the server's other connections (the policy's rows on every
        # answered call, the registrations every second). The count itself is read when the stamp moved (an
        # AccountStore of any process changed the accounts), and at least once a second for a writer that does
        # not write the stamp (an operator's sqlite3 shell; ``ctl flush`` drops the cache at once).
        now = time.monotonic()
        if now - self._version_checked_at < 0.001:
            return
        self._version_checked_at = now
        stamp = self._read_stamp()
        if stamp == self._stamp and now - self._counted_at < _COUNT_AT_LEAST_EVERY_S:
            return
        # The stamp first, then the count: a change whose token comes after this read is seen at the next one.
        self._stamp = stamp
        self._counted_at = now
        changes = self._read_accounts_changes()
        if changes != self._accounts_changes:
            self._accounts_changes = changes
            self._cache.clear()

    def close(self) -> None:
        self._db.close()
        if self._stamp_fd is not None:
            os.close(self._stamp_fd)
            self._stamp_fd = None

    def add(self, name: str, password: str, *, now: float, admin: bool = False) -> Account:
        """Create an account; raises :class:`AccountError` for a bad or taken name or an empty password."""
        if not valid_username(name):
            raise AccountError(f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_', '~' or '-', "
                               "starting with a letter or digit")
        if not password:
            raise AccountError("the password must not be empty")
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("INSERT INTO accounts(name, realm, created_at, admin) VALUES (?, ?, ?, ?)",
                                 (name, self.realm, now, int(admin)))
                self._db.executemany(
                    "INSERT INTO account_ha1(name, algorithm, ha1) VALUES (?, ?, ?)",
                    [(name, alg, compute_ha1(name, self.realm, password, alg)) for alg in self.algorithms],
                )
        except sqlite3.IntegrityError:
            raise AccountError(f"user {name!r} already exists") from None
        except sqlite3.Error as exc:
            raise AccountError(f"cannot add user {name!r}: {exc}") from None
        self._own_change()
        return Account(name, self.realm, now, self.algorithms, admin=admin)

    def set_password(self, name: str, password: str) -> None:
        """Replace every stored HA1 of ``name`` (one per configured algorithm) with the new password's."""
        if not password:
            raise AccountError("the password must not be empty")
        try:
            with self._db:
                self._db.execute("BEGIN")
                if self._db.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone() is None:
                    raise AccountError(f"no such user {name!r}")
                self._db.execute("DELETE FROM account_ha1 WHERE name = ?", (name,))
                self._db.executemany(
                    "INSERT INTO account_ha1(name, algorithm, ha1) VALUES (?, ?, ?)",
                    [(name, alg, compute_ha1(name, self.realm, password, alg)) for alg in self.algorithms],
                )
        except sqlite3.Error as exc:
            raise AccountError(f"cannot change the password of {name!r}: {exc}") from None
        self._own_change()

    def set_locked(self, name: str, locked: bool) -> None:
        """Lock (every login refused) or unlock an account."""
        try:
            count = self._db.execute("UPDATE accounts SET locked = ? WHERE name = ?", (int(locked), name)).rowcount
        except sqlite3.Error as exc:
            raise AccountError(f"cannot {'lock' if locked else 'unlock'} {name!r}: {exc}") from None
        self._own_change()
        if count == 0:
            raise AccountError(f"no such user {name!r}")

    def get(self, name: str) -> Account | None:
        """The account called ``name``, or None."""
        return next((a for a in self.list() if a.name == name), None)

    def add_many(self, users: list[tuple[str, str]], *, now: float) -> int:
        """Create many accounts in one transaction (all or none); raises :class:`AccountError` naming the first
        bad entry (1-based position)."""
        seen: set[str] = set()
        for i, (name, password) in enumerate(users, 1):
            if not valid_username(name):
                raise AccountError(f"entry {i}: invalid user name {name!r}: use 1-64 letters, digits, '.', '_', "
                                   "'~' or '-', starting with a letter or digit")
            if not password:
                raise AccountError(f"entry {i}: the password of {name!r} is empty")
            if name in seen:
                raise AccountError(f"entry {i}: {name!r} is listed twice")
            seen.add(name)
        try:
            with self._db:
                self._db.execute("BEGIN")
                for i, (name, password) in enumerate(users, 1):
                    try:
                        self._db.execute("INSERT INTO accounts(name, realm, created_at) VALUES (?, ?, ?)",
                                         (name, self.realm, now))
                    except sqlite3.IntegrityError:
                        raise AccountError(f"entry {i}: user {name!r} already exists (nothing was imported)"
                                           ) from None
                    self._db.executemany(
                        "INSERT INTO account_ha1(name, algorithm, ha1) VALUES (?, ?, ?)",
                        [(name, alg, compute_ha1(name, self.realm, password, alg)) for alg in self.algorithms])
        except sqlite3.Error as exc:
            raise AccountError(f"cannot import users: {exc}") from None
        self._own_change()
        return len(users)

    def remove(self, name: str) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM account_ha1 WHERE name = ?", (name,))
                count = self._db.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount
        except sqlite3.Error as exc:
            raise AccountError(f"cannot remove user {name!r}: {exc}") from None
        self._own_change()
        if count == 0:
            raise AccountError(f"no such user {name!r}")

    def list(self) -> list[Account]:
        rows = self._db.execute(
            "SELECT a.name, a.realm, a.created_at, group_concat(h.algorithm, ','), a.admin, a.locked FROM accounts a "
            "LEFT JOIN account_ha1 h ON h.name = a.name GROUP BY a.name ORDER BY a.name"
        ).fetchall()
        return [Account(n, r, c, tuple(sorted((algs or "").split(","))), admin=bool(adm), locked=bool(lck))
                for n, r, c, algs, adm, lck in rows]

    def exists(self, name: str) -> bool:
        self._drop_stale_cache()  # once per question, not once per algorithm
        cache = self._cache
        for alg in self.algorithms:
            if (name, alg) in cache:
                return True
        return any(self._lookup(name, alg) is not None for alg in self.algorithms)

    def ha1(self, name: str, algorithm: str) -> str | None:
        """The stored HA1 of ``name`` for ``algorithm`` (``None`` when there is no such account)."""
        self._drop_stale_cache()
        return self._lookup(name, algorithm)

    def _lookup(self, name: str, algorithm: str) -> str | None:
        key = (name, algorithm)
        try:
            return self._cache[key]
        except KeyError:
            pass
        row = self._db.execute(
            "SELECT h.ha1 FROM account_ha1 h JOIN accounts a ON a.name = h.name "
            "WHERE h.name = ? AND h.algorithm = ? AND a.realm = ? AND a.locked = 0", (name, algorithm, self.realm)
        ).fetchone()
        value: str | None = row[0] if row else None
        if value is not None:
            # Only hits are cached: a name added by the CLI while the server runs is found at once, and
            # lookups of made-up names cannot grow the cache.
            self._cache[key] = value
        return value

    def forget_cached(self) -> None:
        """Drop the lookup cache (after another process changed the accounts)."""
        self._cache.clear()
