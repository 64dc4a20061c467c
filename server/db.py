"""The region's SQLite database: opening it (mode 0600, WAL), its schema version and ordered migrations.

Every table of a region (accounts, billing, policy, registrations) lives in one file. Its schema is the list
:data:`MIGRATIONS`, applied in order at start by :func:`migrate`; the table ``schema_version`` records each one
applied (version, time, what it did). A file written by a newer server (a version this code does not know) is
refused with :class:`SchemaError` instead of being read wrongly.

Adding a schema change: append ``Migration(N + 1, "what it does", (sql, ...))`` (or ``apply=function`` for a
data rewrite) to :data:`MIGRATIONS`. Never edit a migration that has shipped: a database that already ran it will
not run it again. Each migration runs in one transaction together with its ``schema_version`` row, so a crash
half-way leaves the previous version.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gamesdk.errors import GameSdkError

__all__ = ["MIGRATIONS", "DatabaseError", "Migration", "SchemaError", "backup", "check_schema", "latest_version",
           "migrate", "open_region_db", "schema_version"]


class DatabaseError(GameSdkError):
    """The region database cannot be used (missing directory, unreadable, corrupt)."""


class SchemaError(DatabaseError):
    """The database's schema is not one this code can use (written by a newer server, or a failed migration)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``statements`` run in order (no ``executescript``: it would commit mid-way), then
    ``apply`` (for data rewrites), all in one transaction."""

    version: int
    description: str
    statements: tuple[str, ...] = ()
    apply: Callable[[sqlite3.Connection], None] | None = None


_V1_BASELINE = (
    # Accounts (server/accounts.py): name and HA1 per digest algorithm, never the password.
    """CREATE TABLE IF NOT EXISTS accounts (
        name TEXT NOT NULL PRIMARY KEY,
        realm TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS account_ha1 (
        name TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        algorithm TEXT NOT NULL,
        ha1 TEXT NOT NULL,
        PRIMARY KEY (name, algorithm)
    )""",
    # Billing (server/billing/store.py).
    """CREATE TABLE IF NOT EXISTS billing_records (
        id            INTEGER PRIMARY KEY,
        call_id       TEXT NOT NULL,
        from_tag      TEXT NOT NULL,
        to_tag        TEXT NOT NULL,
        side          TEXT NOT NULL,
        region        TEXT NOT NULL,
        player        TEXT NOT NULL,
        peer          TEXT NOT NULL,
        network       TEXT NOT NULL,
        class         TEXT NOT NULL,
        format        TEXT NOT NULL,
        qos           TEXT NOT NULL,
        uplink_kbps   INTEGER NOT NULL,
        downlink_kbps INTEGER NOT NULL,
        token         TEXT NOT NULL,
        t_2xx         REAL NOT NULL,
        UNIQUE (call_id, to_tag, side)
    )""",
    """CREATE TABLE IF NOT EXISTS billing_events (
        seq        INTEGER PRIMARY KEY,
        record_id  INTEGER NOT NULL REFERENCES billing_records(id),
        kind       TEXT NOT NULL CHECK (kind IN ('START', 'INTERIM', 'STOP')),
        time       REAL NOT NULL,
        charged_s  REAL NOT NULL,
        charge     REAL NOT NULL,
        currency   TEXT NOT NULL,
        end_reason TEXT,
        sip_reason TEXT
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS billing_one_stop ON billing_events(record_id) WHERE kind = 'STOP'",
    "CREATE UNIQUE INDEX IF NOT EXISTS billing_one_start ON billing_events(record_id) WHERE kind = 'START'",
    "CREATE INDEX IF NOT EXISTS billing_events_record ON billing_events(record_id)",
    # Policy reservations (server/policy/store.py).
    """CREATE TABLE IF NOT EXISTS policy_reservations (
        call_id  TEXT NOT NULL,
        to_tag   TEXT NOT NULL,
        side     TEXT NOT NULL,
        player   TEXT NOT NULL,
        network  TEXT NOT NULL,
        state    TEXT NOT NULL,
        deadline REAL NOT NULL,
        data     TEXT NOT NULL,
        PRIMARY KEY (call_id, to_tag, side)
    )""",
    "CREATE INDEX IF NOT EXISTS policy_reservations_player ON policy_reservations(player)",
)

# Billing, second layout (server/billing/store.py): every record and event has its own identity (``uid``), so a
# second session reusing a Call-ID and To-tag is a second record (no more UNIQUE (call_id, to_tag, side) with
# INSERT OR IGNORE), and a replayed write is recognised; charges are exact integer millionths of the currency.
# Existing rows keep their numbers and get ``v1-<id>`` identities; REAL charges are rounded to micro-units.
_V2_BILLING_IDENTITY = (
    "ALTER TABLE billing_records RENAME TO billing_records_v1",
    "ALTER TABLE billing_events RENAME TO billing_events_v1",
    "DROP INDEX IF EXISTS billing_one_stop",
    "DROP INDEX IF EXISTS billing_one_start",
    "DROP INDEX IF EXISTS billing_events_record",
    """CREATE TABLE billing_records (
        id            INTEGER PRIMARY KEY,
        uid           TEXT NOT NULL UNIQUE,
        call_id       TEXT NOT NULL,
        from_tag      TEXT NOT NULL,
        to_tag        TEXT NOT NULL,
        side          TEXT NOT NULL,
        region        TEXT NOT NULL,
        player        TEXT NOT NULL,
        peer          TEXT NOT NULL,
        network       TEXT NOT NULL,
        class         TEXT NOT NULL,
        format        TEXT NOT NULL,
        qos           TEXT NOT NULL,
        uplink_kbps   INTEGER NOT NULL,
        downlink_kbps INTEGER NOT NULL,
        token         TEXT NOT NULL,
        t_2xx         REAL NOT NULL
    )""",
    "CREATE INDEX billing_records_key ON billing_records(call_id, to_tag, side)",
    """CREATE TABLE billing_events (
        seq           INTEGER PRIMARY KEY,
        uid           TEXT NOT NULL UNIQUE,
        record_id     INTEGER NOT NULL REFERENCES billing_records(id),
        kind          TEXT NOT NULL CHECK (kind IN ('START', 'INTERIM', 'STOP')),
        time          REAL NOT NULL,
        charged_s     REAL NOT NULL,
        charge_micros INTEGER NOT NULL,
        currency      TEXT NOT NULL,
        end_reason    TEXT,
        sip_reason    TEXT
    )""",
    "CREATE UNIQUE INDEX billing_one_stop ON billing_events(record_id) WHERE kind = 'STOP'",
    "CREATE UNIQUE INDEX billing_one_start ON billing_events(record_id) WHERE kind = 'START'",
    "CREATE INDEX billing_events_record ON billing_events(record_id)",
    """INSERT INTO billing_records (id, uid, call_id, from_tag, to_tag, side, region, player, peer, network, class,
                                   format, qos, uplink_kbps, downlink_kbps, token, t_2xx)
       SELECT id, 'v1-' || id, call_id, from_tag, to_tag, side, region, player, peer, network, class, format, qos,
              uplink_kbps, downlink_kbps, token, t_2xx FROM billing_records_v1""",
    """INSERT INTO billing_events (seq, uid, record_id, kind, time, charged_s, charge_micros, currency, end_reason,
                                  sip_reason)
       SELECT seq, 'v1-' || seq, record_id, kind, time, charged_s, CAST(ROUND(charge * 1000000) AS INTEGER),
              currency, end_reason, sip_reason FROM billing_events_v1""",
    "DROP TABLE billing_events_v1",
    "DROP TABLE billing_records_v1",
)

#: The schema, oldest step first; versions are 1, 2, 3, ... without gaps. Version 1 is the schema the first
#: release created without a version table (``IF NOT EXISTS`` adopts such a file as is).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "accounts, billing and policy tables", _V1_BASELINE),
    Migration(2, "billing records and events with their own identity, charges in integer micro-units",
              _V2_BILLING_IDENTITY),
    Migration(3, "registrations kept across restarts", (
        # server/registrations.py; times are wall-clock (UNIX) seconds, converted to the loop clock at start.
        """CREATE TABLE registrations (
            aor           TEXT NOT NULL,
            contact       TEXT NOT NULL,
            expires_at    REAL NOT NULL,
            source_host   TEXT NOT NULL,
            source_port   INTEGER NOT NULL,
            target_host   TEXT,
            target_port   INTEGER,
            call_id       TEXT NOT NULL,
            cseq          INTEGER NOT NULL,
            registered_at REAL NOT NULL,
            PRIMARY KEY (aor, contact)
        )""",
    )),
    Migration(4, "operator accounts and locked accounts (the web console)", (
        "ALTER TABLE accounts ADD COLUMN admin INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE accounts ADD COLUMN locked INTEGER NOT NULL DEFAULT 0",
    )),
    Migration(5, "calls whose in-dialog requests are relayed, kept across restarts", (
        # server/registrations.py; expires_at is wall-clock (UNIX) seconds.
        """CREATE TABLE relayed_dialogs (
            call_id    TEXT NOT NULL PRIMARY KEY,
            expires_at REAL NOT NULL,
            parties    TEXT NOT NULL  -- JSON {"caller": [[host, port], ...], "callee": [...]}
        )""",
    )),
    Migration(6, "server secrets kept across restarts (digest nonce and branch keys)", (
        """CREATE TABLE server_secrets (
            name  TEXT NOT NULL PRIMARY KEY,
            value BLOB NOT NULL
        )""",
    )),
    Migration(7, "the Path (RFC 3327) of each registration", (
        "ALTER TABLE registrations ADD COLUMN path TEXT NOT NULL DEFAULT '[]'",
    )),
    Migration(8, "state a clean shutdown hands to the next start (digest nonce counts, peer round trips)", (
        # server/registrations.py: written at shutdown, read and deleted at start; no row = no clean handover.
        """CREATE TABLE handover (
            name     TEXT NOT NULL PRIMARY KEY,
            saved_at REAL NOT NULL,
            value    TEXT NOT NULL  -- JSON
        )""",
    )),
    Migration(9, "dialog publications (RFC 3903 entity-tags) kept across restarts", (
        # server/registrations.py; expires_at is wall-clock (UNIX) seconds, info the RFC 4235 XML.
        """CREATE TABLE dialog_publications (
            etag       TEXT NOT NULL PRIMARY KEY,
            aor        TEXT NOT NULL,
            expires_at REAL NOT NULL,
            info       BLOB NOT NULL
        )""",
    )),
    Migration(10, "a count of the changes to the accounts (server/accounts.py keeps its cache while other tables "
                  "change)", (
        """CREATE TABLE accounts_changes (
            id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
            n  INTEGER NOT NULL
        )""",
        "INSERT INTO accounts_changes (id, n) VALUES (1, 0)",
        *(f"""CREATE TRIGGER accounts_changes_{table}_{event.lower()} AFTER {event} ON {table}
              BEGIN UPDATE accounts_changes SET n = n + 1 WHERE id = 1; END"""
          for table in ("accounts", "account_ha1") for event in ("INSERT", "UPDATE", "DELETE")),
    )),
    # Nothing reads reservations by player (the policy keeps them in memory; the CLI lists them all), and the index
    # was about 30 % of every reservation row's write (one per FINAL and per state change).
    Migration(11, "no index of the policy reservations by player (never read, written with every reservation)", (
        "DROP INDEX IF EXISTS policy_reservations_player",
    )),
)

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER NOT NULL PRIMARY KEY,
    applied_at  REAL NOT NULL,
    description TEXT NOT NULL
)"""


def latest_version(migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    return migrations[-1].version if migrations else 0


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in ``conn`` (0 for a database without a ``schema_version`` table)."""
    try:
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return int(row[0]) if row and row[0] is not None else 0


def _where(conn: sqlite3.Connection) -> str:
    for _, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return file or ":memory:"
    return "the database"


def _too_new(conn: sqlite3.Connection, found: int, known: int) -> SchemaError:
    return SchemaError(f"database {_where(conn)} has schema version {found}, newer than this gamesdk-server knows "
                       f"(up to {known}): run the newer gamesdk-server, or restore a backup taken before the upgrade")


def check_schema(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Refuse a database newer than the code (for read-only users such as the CLI listings); returns its version."""
    try:
        found = schema_version(conn)
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"cannot read database {_where(conn)}: {exc}") from None
    if found > latest_version(migrations):
        raise _too_new(conn, found, latest_version(migrations))
    return found


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS,
            *, now: Callable[[], float] = time.time) -> int:
    """Bring ``conn`` (autocommit mode) to the newest schema; returns the version it is at.

    Each migration and its ``schema_version`` row commit together. ``BEGIN IMMEDIATE`` takes the write lock before
    the version is read, so two processes starting at once (server and CLI) apply each step exactly once.
    """
    known = latest_version(migrations)
    try:
        if schema_version(conn) == known:  # the common case: one read, no write lock
            return known
        conn.execute(_VERSION_TABLE)
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = schema_version(conn)
                if current > known:
                    raise _too_new(conn, current, known)
                pending = [m for m in migrations if m.version > current]
                if not pending:
                    conn.execute("COMMIT")
                    return current
                step = pending[0]
                for statement in step.statements:
                    conn.execute(statement)
                if step.apply is not None:
                    step.apply(conn)
                conn.execute("INSERT INTO schema_version(version, applied_at, description) VALUES (?, ?, ?)",
                             (step.version, now(), step.description))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
    except SchemaError:
        raise
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"cannot prepare database {_where(conn)}: {exc}") from None


def _create_private(path: Path) -> None:
    """Create ``path`` as an empty file readable by its owner only (it holds HA1s), or tighten an existing one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
        return
    os.close(fd)


def open_region_db(path: str | Path, *, migrations: tuple[Migration, ...] = MIGRATIONS,
                   check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (create) the region database, mode 0600, migrated to the newest schema.

    WAL lets the CLI (``billing list``, ``sessions``) read while the server writes; ``synchronous=NORMAL`` in WAL
    mode still never corrupts the file, it may only lose the last transactions on power loss. SQLite creates the
    ``-wal`` and ``-shm`` files with the database file's mode. Raises :class:`DatabaseError` (missing directory,
    not a database) or :class:`SchemaError` (newer than this code).
    """
    memory = str(path) == ":memory:"
    if not memory:
        file = Path(path)
        if not file.parent.is_dir():
            raise DatabaseError(f"cannot open database {file}: directory {file.parent} does not exist")
        try:
            _create_private(file)
        except OSError as exc:
            raise DatabaseError(f"cannot open database {file}: {exc.strerror or exc}") from None
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=5.0, check_same_thread=check_same_thread)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from None
    try:
        if not memory:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, migrations)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DatabaseError(f"cannot open database {path}: {exc} (is it a gamesdk region database?)") from None
    except BaseException:
        conn.close()
        raise
    return conn


def backup(conn: sqlite3.Connection, target: Path) -> int:
    """Copy the database behind ``conn`` to ``target`` (a new file, mode 0600) with SQLite's online backup API:
    a consistent snapshot while the server keeps writing. Returns the number of pages copied."""
    if not target.parent.is_dir():
        raise DatabaseError(f"cannot back up to {target}: directory {target.parent} does not exist")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise DatabaseError(f"cannot back up to {target}: {exc.strerror or exc}") from None
    os.close(fd)
    copied = 0

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal copied
        copied = total

    try:
        with sqlite3.connect(str(target)) as dest:
            conn.backup(dest, pages=256, progress=progress)
        dest.close()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise DatabaseError(f"backup to {target} failed: {exc}") from None
    return copied
