"""server/policy/ledger: where reservation changes and their billing events become durable, together.

A :class:`Change` is one reservation change (save or delete the row) with the billing events it causes; the
:class:`Ledger` commits it in ONE database transaction, so the books never show a STOP for a reservation still
held, nor a reservation gone without its STOP. The policy core keeps memory behind what is durable.

When the database refuses a write (locked past its busy timeout, disk full), the core appends the change to a
:class:`Journal`, an append-only file next to the database (one JSON line per change, fsync'd), and retries the
database with backoff until it commits. At start-up the journal is replayed into the database before anything
else; replays are harmless because every row and every billing event has its own identity.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gamesdk.errors import RemoteProtocolError
from server.billing.model import BillingEvent, BillingRecord, BillingSink, EventKind
from server.billing.store import write_event
from server.billing.tariff import Tariff

from .codec import key_from_json_untrusted, key_to_json, reservation_from_json_untrusted, reservation_to_json
from .model import Reservation, SessionKey, positional_maker, slot_setting_init

__all__ = [
    "LOOP_ROWS_PER_CHECKPOINT",
    "Change",
    "FileJournal",
    "Journal",
    "Ledger",
    "LedgerUnavailable",
    "MemoryJournal",
    "SplitLedger",
    "SqliteLedger",
    "change_from_json_untrusted",
    "change_to_json",
    "new_change",
    "open_loop_connection",
    "transaction",
]

log = logging.getLogger(__name__)


class LedgerUnavailable(Exception):
    """A change could not be made durable (neither the database nor the journal took it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One reservation change and the billing events it causes, committed together or not at all."""

    key: SessionKey
    save: Reservation | None = None
    """The reservation's row after the change (insert or replace)."""
    delete: bool = False
    """Remove the reservation's row (it ended)."""
    events: tuple[BillingEvent, ...] = ()


slot_setting_init(Change)  # made per reservation change: fields set through the slots (still frozen)


def _change_native(key: SessionKey, save: Reservation | None, delete: bool,
                   events: tuple[BillingEvent, ...]) -> Change:
    # A compiled build's maker: the fields set as native attributes (see server.policy.model's native makers).
    made: Change = Change.__new__(Change)
    made.key = key  # type: ignore[misc]
    made.save = save  # type: ignore[misc]
    made.delete = delete  # type: ignore[misc]
    made.events = events  # type: ignore[misc]
    return made


#: ``Change(...)`` with every field given positionally (a FINAL's new row: ``new_change(key, res, False, ())``).
new_change: Callable[[SessionKey, Reservation | None, bool, tuple[BillingEvent, ...]], Change] = (
    positional_maker(Change) or _change_native)


class Ledger(Protocol):
    """Durable storage of reservations and billing (:class:`SqliteLedger`)."""

    def commit(self, change: Change) -> None:
        """Make ``change`` durable, all of it or nothing; raise on failure."""
        ...

    def load_all(self) -> list[Reservation]: ...


class Journal(Protocol):
    """Changes the database refused, kept durably until it takes them (:class:`FileJournal`)."""

    def append(self, change: Change) -> None: ...

    def entries(self) -> list[Change]: ...

    def clear(self) -> None: ...


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error), whatever the connection's isolation mode."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


#: Rows the signalling loop's connection writes (:meth:`SqliteLedger.commit_many_now`) before a write is left to the
#: policy's thread, which checkpoints the WAL first (the loop's connection never checkpoints) and then restarts it
#: (the first write after a complete checkpoint syncs the WAL's header: on the thread, not the loop). A call's two
#: rows add some three WAL pages (the table's leaf and its two indexes' leaves, shared by neighbouring rows), so the
#: WAL stays at some 400-500 pages with the registration writer's, under SQLite's own checkpoint threshold (1,000
#: pages), at which the region's other connections would checkpoint and leave the restart to whichever connection
#: writes next.
LOOP_ROWS_PER_CHECKPOINT = 256


def open_loop_connection(path: str | Path) -> sqlite3.Connection:
    """A second connection to the region database for the signalling loop's writes (:meth:`SqliteLedger.
    commit_many_now`): the same WAL file and ``synchronous`` setting, but ``busy_timeout`` 0 (a locked database
    answers SQLITE_BUSY at once: the write is then left to the policy's thread, which waits and journals) and
    ``wal_autocheckpoint`` 0 (a checkpoint copies pages and syncs the file: never on the loop)."""
    from server.db import open_region_db

    conn = open_region_db(path, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


class SqliteLedger:
    """:class:`Ledger` on the region database: tables ``policy_reservations`` and ``billing_*``.

    With ``loop_conn`` (:func:`open_loop_connection`) the signalling loop writes a FINAL's new rows itself when the
    database takes them at once (:meth:`commit_many_now`); everything else, and what that connection cannot write at
    once, goes through ``conn`` on the policy's thread. The two are never used at the same time for the policy: the
    loop writes only while the policy's thread is idle and holds nothing of its own (``PolicyWorker.decide_inline``,
    under the lock the thread holds for its jobs and timers), so the writes keep their order.
    """

    def __init__(self, conn: sqlite3.Connection, tariff: Tariff | None = None, *,
                 loop_conn: sqlite3.Connection | None = None) -> None:
        from .store import SqliteReservationStore  # the row SQL lives with the read-only views

        self._conn = conn
        self._tariff = tariff or Tariff()
        self._rows = SqliteReservationStore(conn)  # migrates the region schema (server/db.py)
        self._loop_conn = loop_conn
        self._loop_rows = SqliteReservationStore(loop_conn) if loop_conn is not None else None
        #: The rows the loop wrote since the thread last checkpointed the WAL (read and reset on the thread,
        #: counted on the loop: never at the same time, see above).
        self._loop_writes = 0
        #: Writes made on the loop, writes the loop's connection could not make at once (handed to the thread),
        #: and WAL checkpoints the thread ran for the loop's writes.
        self.loop_written = 0
        self.loop_refused = 0
        self.checkpoints = 0

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    @property
    def loop_connection(self) -> sqlite3.Connection | None:
        """The signalling loop's own connection (:meth:`commit_many_now`), if it has one."""
        return self._loop_conn

    def set_tariff(self, tariff: Tariff) -> None:
        """Charge STOPs from now on with ``tariff`` (a reloaded region file)."""
        self._tariff = tariff

    def commit(self, change: Change) -> None:
        if self._loop_writes >= LOOP_ROWS_PER_CHECKPOINT:
            self._checkpoint()
        save = change.save
        if not change.events and (save is None) != (not change.delete) and not self._conn.in_transaction:
            # One statement (a FINAL's new row, a row's new state, a row gone without an event): SQLite makes a
            # statement outside a transaction atomic by itself, and waits for the write lock as BEGIN IMMEDIATE
            # does (busy timeout), so the BEGIN and COMMIT round trips are left out.
            if save is not None:
                self._rows.write(save)
            else:
                self._rows.remove(change.key)
            return
        with transaction(self._conn):
            self._write(change)

    def commit_many(self, changes: list[Change]) -> None:
        """Make ``changes`` durable in ONE transaction, all of them or none; raise on failure (the two rows of a
        call's two sides: one lock, one write of the pages they share)."""
        if self._loop_writes >= LOOP_ROWS_PER_CHECKPOINT:
            self._checkpoint()
        if len(changes) == 1:
            self.commit(changes[0])
            return
        if (len(changes) <= self._rows.write_many_max and not self._conn.in_transaction
                and all(c.save is not None and not c.delete and not c.events for c in changes)):
            # New rows only (a call's FINALs): one multi-row statement, atomic by itself and waiting for the
            # write lock as BEGIN IMMEDIATE does; BEGIN and COMMIT would be two more steps, each a GIL hand-over
            # on the policy's thread.
            self._rows.write_many([c.save for c in changes if c.save is not None])
            return
        with transaction(self._conn):
            for change in changes:
                self._write(change)

    def commit_many_now(self, changes: list[Change]) -> bool:
        """On the signalling loop: write the new rows of ``changes`` (a FINAL's, no events) in one statement with
        the loop's connection, if the database takes them at once. False, with nothing written, when there is no
        loop connection, the changes are anything else, the database is locked or busy (never waited for) or
        refuses them, or the loop has written :data:`LOOP_ROWS_PER_CHECKPOINT` rows since the last checkpoint:
        then hand them to the policy's thread (:meth:`commit_many`, which checkpoints first when that is due)."""
        rows = self._loop_rows
        if rows is None or self._loop_writes >= LOOP_ROWS_PER_CHECKPOINT or not changes:
            return False
        saves: list[Reservation] = []
        for change in changes:
            if change.save is None or change.delete or change.events:
                return False
            saves.append(change.save)
        if len(saves) > rows.write_many_max:
            return False
        try:
            if len(saves) == 1:
                rows.write(saves[0])
            else:
                rows.write_many(saves)
        except sqlite3.Error:  # locked (busy timeout 0), disk full, I/O error: the thread's path waits and journals
            self.loop_refused += 1
            return False
        self._loop_writes += len(saves)
        self.loop_written += 1
        return True

    def _checkpoint(self) -> None:
        """On the policy's thread: copy the WAL's pages (the loop's writes among them) into the database file
        (``PASSIVE``: waits for no reader or writer), so the next write restarts the WAL from its start (and syncs
        its header here, not on the loop)."""
        self._loop_writes = 0
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the next one, or SQLite's own on this connection, catches up
            log.warning("WAL checkpoint failed: %s", exc)
            return
        self.checkpoints += 1

    def _write(self, change: Change) -> None:
        if change.save is not None:
            self._rows.write(change.save)
        if change.delete:
            self._rows.remove(change.key)
        for event in change.events:
            write_event(self._conn, self._tariff, event)

    def load_all(self) -> list[Reservation]:
        return self._rows.load_all()


class SplitLedger:
    """A :class:`Ledger` over a separate reservation store and billing sink (memory, tests): not atomic."""

    def __init__(self, store: Any | None = None, billing: BillingSink | None = None) -> None:
        self._store = store
        self._billing = billing

    def set_tariff(self, tariff: Tariff) -> None:
        set_tariff = getattr(self._billing, "set_tariff", None)
        if set_tariff is not None:
            set_tariff(tariff)

    def commit(self, change: Change) -> None:
        if self._store is not None:
            if change.save is not None:
                self._store.save(change.save)
            if change.delete:
                self._store.delete(change.key)
        if self._billing is not None:
            for event in change.events:
                self._billing.append(event)

    def load_all(self) -> list[Reservation]:
        return list(self._store.load_all()) if self._store is not None else []


class MemoryJournal:
    """A :class:`Journal` in memory (tests; a deployment without a database file)."""

    def __init__(self) -> None:
        self.changes: list[Change] = []

    def append(self, change: Change) -> None:
        self.changes.append(change)

    def entries(self) -> list[Change]:
        return list(self.changes)

    def clear(self) -> None:
        self.changes.clear()


class FileJournal:
    """A :class:`Journal` as an append-only JSON-lines file, each line fsync'd before :meth:`append` returns.

    A torn last line (a crash mid-write) is skipped on reading: its change was never acknowledged.
    """

    def __init__(self, path: str | Path, *, fsync: Callable[[int], None] = os.fsync) -> None:
        self.path = Path(path)
        self._fsync = fsync

    def append(self, change: Change) -> None:
        line = json.dumps(change_to_json(change), separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            self._fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[Change]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out: list[Change] = []
        for line in text.splitlines():
            try:
                out.append(change_from_json_untrusted(json.loads(line)))
            except (ValueError, RemoteProtocolError):
                continue  # the torn tail of a crash: never acknowledged
        return out

    def clear(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC)
        except FileNotFoundError:
            return
        try:
            self._fsync(fd)
        finally:
            os.close(fd)


# -- JSON of a change (the journal's lines) ---------------------------------------------------------------------


def _record_to_json(rec: BillingRecord) -> dict[str, Any]:
    return {
        "callId": rec.call_id, "fromTag": rec.from_tag, "toTag": rec.to_tag, "side": rec.side,
        "player": rec.player, "peer": rec.peer, "region": rec.region, "network": rec.network,
        "class": rec.qos_class, "format": rec.game_format, "qos": rec.qos_text, "up": rec.uplink_kbps,
        "down": rec.downlink_kbps, "token": rec.token, "t2xx": rec.t_2xx, "uid": rec.uid,
    }


def _event_to_json(ev: BillingEvent) -> dict[str, Any]:
    return {
        "kind": ev.kind.value, "time": ev.time, "record": _record_to_json(ev.record), "endReason": ev.end_reason,
        "sipReason": ev.sip_reason, "chargedS": ev.charged_s, "seq": ev.seq,
    }


def change_to_json(change: Change) -> dict[str, Any]:
    return {
        "key": key_to_json(change.key),
        "save": reservation_to_json(change.save) if change.save is not None else None,
        "delete": change.delete,
        "events": [_event_to_json(e) for e in change.events],
    }


def _event_from_json_untrusted(value: Any) -> BillingEvent:
    try:
        r = value["record"]
        record = BillingRecord(
            call_id=str(r["callId"]), from_tag=str(r["fromTag"]), to_tag=str(r["toTag"]), side=str(r["side"]),
            player=str(r["player"]), peer=str(r["peer"]), region=str(r["region"]), network=str(r["network"]),
            qos_class=str(r["class"]), game_format=str(r["format"]), qos_text=str(r["qos"]),
            uplink_kbps=int(r["up"]), downlink_kbps=int(r["down"]), token=str(r["token"]),
            t_2xx=float(r["t2xx"]), uid=str(r["uid"]),
        )
        return BillingEvent(
            kind=EventKind(value["kind"]), time=float(value["time"]), record=record,
            end_reason=value["endReason"], sip_reason=value["sipReason"], charged_s=float(value["chargedS"]),
            seq=int(value["seq"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"bad billing event in the journal: {exc}", 400) from None


def change_from_json_untrusted(value: object) -> Change:
    if not isinstance(value, dict):
        raise RemoteProtocolError("a journal entry must be a JSON object", 400)
    save = value.get("save")
    events = value.get("events")
    if not isinstance(events, list):
        raise RemoteProtocolError("a journal entry's events must be a list", 400)
    return Change(
        key=key_from_json_untrusted(value.get("key")),
        save=reservation_from_json_untrusted(save) if save is not None else None,
        delete=value.get("delete") is True,
        events=tuple(_event_from_json_untrusted(e) for e in events),
    )
