"""server/billing/store: billing records in the region's SQLite database (tables ``billing_*``).

``billing_records`` holds the fixed part of each record (one per server per session), each with its own identity
(``uid``): a second session that reuses a Call-ID and To-tag is a second record, never silently merged into the
first. ``billing_events`` is append-only; each event has its own identity too (record uid, kind, INTERIM number),
so a write replayed after a fault (the policy's journal, a retry) is recognised instead of doubled. Partial unique
indexes make "exactly one STOP" and "at most one START" per record a property of the file.

Money is exact: charges are integer millionths of the currency (``charge_micros``), read back as ``Decimal``.
:func:`write_event` runs inside the caller's transaction (the policy's ledger writes a reservation change and
its billing event in one).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from decimal import Decimal

from server.db import migrate

from .model import BillingEvent, EventKind, charge_for
from .tariff import Tariff, from_micros, to_micros

__all__ = ["BillingRow", "SqliteBillingStore", "read_rows", "write_event"]


def write_event(conn: sqlite3.Connection, tariff: Tariff, event: BillingEvent) -> None:
    """Insert ``event`` (and its record, the first time), inside the caller's transaction.

    The same event written twice (same identity) is one event: a replay is a no-op, not a second charge.
    """
    rec = event.record
    charge = charge_for(tariff, rec, event.charged_s) if event.kind is EventKind.STOP else Decimal(0)
    uid = rec.identity
    row = conn.execute("SELECT id FROM billing_records WHERE uid = ?", (uid,)).fetchone()
    if row is None:
        cur = conn.execute(
            "INSERT INTO billing_records (uid, call_id, from_tag, to_tag, side, region, player, peer, network,"
            " class, format, qos, uplink_kbps, downlink_kbps, token, t_2xx)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                uid, rec.call_id, rec.from_tag, rec.to_tag, rec.side, rec.region, rec.player, rec.peer,
                rec.network, rec.qos_class, rec.game_format, rec.qos_text, rec.uplink_kbps, rec.downlink_kbps,
                rec.token, rec.t_2xx,
            ),
        )
        record_id = cur.lastrowid
    else:
        record_id = row[0]
    if conn.execute("SELECT 1 FROM billing_events WHERE uid = ?", (event.uid,)).fetchone():
        return  # this very event was written before (a replay)
    # A different second START or STOP for one record is a bug upstream: the unique indexes refuse it loudly.
    conn.execute(
        "INSERT INTO billing_events (uid, record_id, kind, time, charged_s, charge_micros, currency, end_reason,"
        " sip_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.uid, record_id, event.kind.value, event.time, event.charged_s, to_micros(charge),
            tariff.currency, event.end_reason, event.sip_reason,
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BillingRow:
    """One billing record with its events folded in (what ``billing list`` shows)."""

    id: int
    call_id: str
    from_tag: str
    to_tag: str
    side: str
    region: str
    player: str
    peer: str
    network: str
    qos_class: str
    game_format: str
    qos_text: str
    uplink_kbps: int
    downlink_kbps: int
    token: str
    t_2xx: float
    t_start: float | None
    t_last_interim: float | None
    interim_count: int
    t_stop: float | None
    end_reason: str | None
    sip_reason: str | None
    duration_s: float
    charge: Decimal
    currency: str
    uid: str = ""
    """The record's own identity."""

    @property
    def open(self) -> bool:
        return self.t_stop is None


_ROW_SQL = """
SELECT r.id, r.call_id, r.from_tag, r.to_tag, r.side, r.region, r.player, r.peer, r.network, r.class, r.format,
       r.qos, r.uplink_kbps, r.downlink_kbps, r.token, r.t_2xx,
       (SELECT time FROM billing_events e WHERE e.record_id = r.id AND e.kind = 'START'),
       (SELECT MAX(time) FROM billing_events e WHERE e.record_id = r.id AND e.kind = 'INTERIM'),
       (SELECT COUNT(*) FROM billing_events e WHERE e.record_id = r.id AND e.kind = 'INTERIM'),
       s.time, s.end_reason, s.sip_reason,
       COALESCE(s.charged_s, (SELECT MAX(charged_s) FROM billing_events e WHERE e.record_id = r.id), 0),
       COALESCE(s.charge_micros, 0), COALESCE(s.currency, ''), r.uid
FROM billing_records r
LEFT JOIN billing_events s ON s.record_id = r.id AND s.kind = 'STOP'
"""


class SqliteBillingStore:
    """:class:`~server.billing.model.BillingSink` writing to SQLite (one transaction per event); charges STOPs
    with ``tariff``."""

    def __init__(self, conn: sqlite3.Connection, tariff: Tariff | None = None) -> None:
        self._conn = conn
        self._tariff = tariff or Tariff()
        migrate(conn)  # the tables are part of the region schema (server/db.py)

    @property
    def tariff(self) -> Tariff:
        return self._tariff

    def set_tariff(self, tariff: Tariff) -> None:
        """Charge STOPs from now on with ``tariff`` (a reloaded region file)."""
        self._tariff = tariff

    def append(self, event: BillingEvent) -> None:
        with self._conn:
            write_event(self._conn, self._tariff, event)

    def rows(self, *, limit: int | None = None, open_only: bool = False) -> list[BillingRow]:
        """Records, oldest first (``limit`` = the most recent N)."""
        return read_rows(self._conn, limit=limit, open_only=open_only)

    def event_counts(self) -> dict[str, int]:
        """Number of events of each kind (START, INTERIM, STOP)."""
        counts = {k.value: 0 for k in EventKind}
        for kind, n in self._conn.execute("SELECT kind, COUNT(*) FROM billing_events GROUP BY kind"):
            counts[kind] = n
        return counts


def read_rows(conn: sqlite3.Connection, *, limit: int | None = None, open_only: bool = False) -> list[BillingRow]:
    """Billing rows from a region database (creates nothing; an empty database has no rows)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'billing_records'"
    ).fetchone()
    if not exists:
        return []
    sql = _ROW_SQL + (" WHERE s.time IS NULL" if open_only else "")
    params: tuple[int, ...] = ()
    if limit is not None:
        sql += " ORDER BY r.id DESC LIMIT ?"
        params = (limit,)
    else:
        sql += " ORDER BY r.id"
    out = []
    for row in conn.execute(sql, params):
        out.append(
            BillingRow(
                id=row[0], call_id=row[1], from_tag=row[2], to_tag=row[3], side=row[4], region=row[5],
                player=row[6], peer=row[7], network=row[8], qos_class=row[9], game_format=row[10],
                qos_text=row[11], uplink_kbps=row[12], downlink_kbps=row[13], token=row[14], t_2xx=row[15],
                t_start=row[16], t_last_interim=row[17], interim_count=row[18], t_stop=row[19],
                end_reason=row[20], sip_reason=row[21], duration_s=float(row[22]), charge=from_micros(int(row[23])),
                currency=row[24], uid=row[25],
            )
        )
    if limit is not None:
        out.reverse()
    return out
