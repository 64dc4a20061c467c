"""server/policy/store: reservations persisted in the region's SQLite database.

The region database file is shared with the server's account table; our tables carry a ``policy_`` prefix.
A row is written when a FINAL reservation is made and on every state change, and deleted on release, so at
start-up :meth:`PolicyServer.restore` finds exactly what was held when the process stopped
(research/protocol.md (d) backstop (c)).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from gamesdk.errors import RemoteProtocolError

from .codec import reservation_from_json_untrusted, reservation_to_json
from .model import Reservation, SessionKey

__all__ = ["SqliteReservationStore", "open_region_db"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_reservations (
    call_id  TEXT NOT NULL,
    to_tag   TEXT NOT NULL,
    side     TEXT NOT NULL,
    player   TEXT NOT NULL,
    network  TEXT NOT NULL,
    state    TEXT NOT NULL,
    deadline REAL NOT NULL,
    data     TEXT NOT NULL,          -- reservation_to_json(): everything needed to bill it after a restart
    PRIMARY KEY (call_id, to_tag, side)
);
CREATE INDEX IF NOT EXISTS policy_reservations_player ON policy_reservations(player);
"""


def open_region_db(path: str | Path) -> sqlite3.Connection:
    """Open (create) the region database with the settings our stores expect.

    WAL lets the CLI (``billing list``, ``sessions``) read while the server writes; ``synchronous=NORMAL`` in WAL
    mode still never corrupts the file, it may only lose the last transactions on power loss.
    """
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class SqliteReservationStore:
    """:class:`~server.policy.core.ReservationStore` over an ``sqlite3.Connection`` (tables ``policy_*``)."""

    def __init__(self, conn: sqlite3.Connection, *, read_only: bool = False) -> None:
        """``read_only`` (for the CLI): create nothing, change nothing; a missing table reads as empty."""
        self._conn = conn
        self._read_only = read_only
        if not read_only:
            with conn:
                conn.executescript(_SCHEMA)

    def save(self, reservation: Reservation) -> None:
        key = reservation.key
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO policy_reservations"
                " (call_id, to_tag, side, player, network, state, deadline, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.call_id,
                    key.to_tag,
                    key.side.value,
                    reservation.request.player,
                    reservation.grant.network,
                    reservation.state.value,
                    reservation.deadline,
                    json.dumps(reservation_to_json(reservation), separators=(",", ":")),
                ),
            )

    def delete(self, key: SessionKey) -> None:
        with self._conn:
            self._conn.execute(
                "DELETE FROM policy_reservations WHERE call_id = ? AND to_tag = ? AND side = ?",
                (key.call_id, key.to_tag, key.side.value),
            )

    def load_all(self) -> list[Reservation]:
        out: list[Reservation] = []
        if self._read_only and not self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'policy_reservations'"
        ).fetchone():
            return out
        rows = self._conn.execute("SELECT call_id, to_tag, side, data FROM policy_reservations").fetchall()
        for call_id, to_tag, side, data in rows:
            try:
                out.append(reservation_from_json_untrusted(json.loads(data)))
            except (ValueError, RemoteProtocolError) as exc:
                # A row we cannot read would otherwise block start-up forever; say so and drop it.
                log.error("unreadable reservation %s;%s;%s: %s", call_id, to_tag, side, exc)
                if self._read_only:
                    continue
                with self._conn:
                    self._conn.execute(
                        "DELETE FROM policy_reservations WHERE call_id = ? AND to_tag = ? AND side = ?",
                        (call_id, to_tag, side),
                    )
        return out
