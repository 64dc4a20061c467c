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
from typing import Final

from gamesdk.errors import RemoteProtocolError
from server.db import migrate, open_region_db

from .codec import reservation_from_json_untrusted, reservation_json_text
from .model import Reservation, SessionKey

__all__ = ["SqliteReservationStore", "open_region_db"]

log = logging.getLogger(__name__)

_WRITE: Final = ("INSERT OR REPLACE INTO policy_reservations"
          " (call_id, to_tag, side, player, network, state, deadline, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_WRITE_HEAD: Final = _WRITE[:_WRITE.index(" VALUES ") + len(" VALUES ")]
_ROW: Final = "(?, ?, ?, ?, ?, ?, ?, ?)"
#: Rows one :meth:`SqliteReservationStore.write_many` statement writes, at most (8 parameters each: far below
#: SQLite's limit on a statement's parameters); the distinct statements stay few for the statement cache.
WRITE_MANY_MAX: Final = 64
#: The statement of each row count write_many takes, made once (the text was joined and hashed again for the
#: statement cache on every call).
_WRITE_MANY: Final = [""] + [_WRITE_HEAD + ", ".join([_ROW] * n) for n in range(1, WRITE_MANY_MAX + 1)]
#: A call's two rows (its two sides: one Call-ID, To-tag, state and deadline), those four values bound once: 12
#: parameters instead of 16 (SQLite's binding was some 800 instructions a value). The same rows as
#: ``_WRITE_MANY[2]`` writes (tests/policy/test_store.py).
_WRITE_PAIR: Final = (_WRITE_HEAD + "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8), (?1, ?2, ?9, ?10, ?11, ?6, ?7, ?12)")
_REMOVE: Final = "DELETE FROM policy_reservations WHERE call_id = ? AND to_tag = ? AND side = ?"


class SqliteReservationStore:
    """:class:`~server.policy.core.ReservationStore` over an ``sqlite3.Connection`` (tables ``policy_*``)."""

    #: Rows :meth:`write_many` takes, at most.
    write_many_max = WRITE_MANY_MAX

    def __init__(self, conn: sqlite3.Connection, *, read_only: bool = False) -> None:
        """``read_only`` (for the CLI): create nothing, change nothing; a missing table reads as empty."""
        self._conn = conn
        #: The store's statements run on one cursor: ``Connection.execute`` makes (and drops) a cursor each time,
        #: some 3,000 instructions a write. (A statement run to its end is reset, so the cursor holds no lock.)
        self._cursor = conn.cursor()
        self._read_only = read_only
        if not read_only:
            migrate(conn)  # the tables are part of the region schema (server/db.py)

    def save(self, reservation: Reservation) -> None:
        with self._conn:
            self.write(reservation)

    def delete(self, key: SessionKey) -> None:
        with self._conn:
            self.remove(key)

    def write(self, reservation: Reservation) -> None:
        """Insert or replace the row: inside the caller's transaction, or alone as one atomic statement
        (``SqliteLedger.commit``)."""
        # REPLACE on the key is right here: one key holds one reservation at a time (the core refuses a FINAL
        # for a key in use); its billing record has its own identity.
        self._cursor.execute(_WRITE, _row(reservation))

    def write_many(self, reservations: list[Reservation]) -> None:
        """Insert or replace the rows (at most :data:`WRITE_MANY_MAX`, in order) in ONE statement: atomic by
        itself outside a transaction (all rows or none), one step of SQLite. Each step of the ``sqlite3`` module
        releases the GIL, which a busy signalling loop then takes: one statement instead of BEGIN, a row each and
        COMMIT is one hand-over instead of four (docs/policy.md, the policy's thread)."""
        if not 0 < len(reservations) <= WRITE_MANY_MAX:
            raise ValueError(f"write_many takes 1 to {WRITE_MANY_MAX} rows, not {len(reservations)}")
        if len(reservations) == 2:
            first, second = _row(reservations[0]), _row(reservations[1])
            call_id, to_tag, state, deadline = first[0], first[1], first[5], first[6]
            # (Only values whose equal ones bind alike: texts, and non-zero floats (0.0 == -0.0).)
            if (type(call_id) is str and type(to_tag) is str and type(state) is str and type(deadline) is float
                    and call_id == second[0] and to_tag == second[1] and state == second[5]
                    and type(second[6]) is float and deadline == second[6] and deadline != 0.0):
                self._cursor.execute(_WRITE_PAIR, first + (second[2], second[3], second[4], second[7]))
                return
            self._cursor.execute(_WRITE_MANY[2], first + second)
            return
        params: list[object] = []
        for reservation in reservations:
            params.extend(_row(reservation))
        self._cursor.execute(_WRITE_MANY[len(reservations)], params)

    def remove(self, key: SessionKey) -> None:
        """Delete the row, inside the caller's transaction."""
        self._cursor.execute(_REMOVE, (key.call_id, key.to_tag, key.side.value))

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


def _row(reservation: Reservation) -> tuple[object, ...]:
    request = reservation.request  # (its fields are the key's)
    # ``_value_``: the member's value as stored, without the enum's ``value`` property (a Python call each).
    return (request.call_id, request.to_tag, request.side._value_, request.player, reservation.grant.network,
            reservation.state._value_, reservation.deadline, reservation_json_text(reservation))
