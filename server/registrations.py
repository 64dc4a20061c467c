"""Registrations kept in the region database (table ``registrations``), so a restart logs no player out; the
calls whose in-dialog requests this server relays (table ``relayed_dialogs``), so their BYEs still pass; the
players' dialog publications (table ``dialog_publications``), so their RFC 3903 refreshes still match; and
what a clean shutdown hands to the next start (table ``handover``: the digest nonce counts, so a count seen
before a restart is never accepted again).

The location service is the truth while the server runs; the driver hands this store what changed
(:meth:`LocationService.take_changes`) every second and at shutdown, and reads it back at start. Times in the
table are wall-clock seconds: the loop clock of the next process starts elsewhere, so ``to_wall`` and
``from_wall`` offsets convert. A binding whose time ran out while the server was down is not restored.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.dialog_info import format_dialog_info, parse_dialog_info_untrusted
from gamesdk.sip.digest import NonceSnapshot
from server.db import migrate
from server.location import Binding
from server.proxy import DialogParties
from server.publish import Publication

__all__ = ["RegistrationStore"]

_NONCES = "digest-nonces"
_PEER_RTTS = "peer-rtts"


def _path(text: str) -> tuple[str, ...]:
    try:
        value = json.loads(text)
    except ValueError:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


class RegistrationStore:
    """Bindings persisted in ``conn`` (the region database)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        migrate(conn)

    def apply(self, changes: Mapping[tuple[str, str], Binding | None], wall_offset: float) -> None:
        """Write what changed in one transaction; ``wall_offset`` = wall clock - loop clock."""
        if not changes:
            return
        put = [(b.aor, b.contact, b.expires_at + wall_offset, b.source[0], b.source[1],
                b.target[0] if b.target else None, b.target[1] if b.target else None, b.call_id, b.cseq,
                b.registered_at + wall_offset, json.dumps(list(b.path))) for b in changes.values() if b is not None]
        gone = [key for key, b in changes.items() if b is None]
        with self._conn:
            self._conn.execute("BEGIN")
            if gone:
                self._conn.executemany("DELETE FROM registrations WHERE aor = ? AND contact = ?", gone)
            if put:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO registrations (aor, contact, expires_at, source_host, source_port,"
                    " target_host, target_port, call_id, cseq, registered_at, path)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    put)

    def load(self, wall_now: float, wall_offset: float) -> list[Binding]:
        """The bindings still live at ``wall_now``, on the loop clock (loop = wall - ``wall_offset``); rows that
        ran out are deleted."""
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM registrations WHERE expires_at <= ?", (wall_now,))
            rows = self._conn.execute(
                "SELECT aor, contact, expires_at, source_host, source_port, target_host, target_port, call_id,"
                " cseq, registered_at, path FROM registrations ORDER BY registered_at").fetchall()
        return [Binding(aor=aor, contact=contact, expires_at=expires - wall_offset, source=(sh, int(sp)),
                        access_network=None, call_id=call_id, cseq=int(cseq), registered_at=reg - wall_offset,
                        target=(th, int(tp)) if th is not None and tp is not None else None,
                        path=_path(path))
                for aor, contact, expires, sh, sp, th, tp, call_id, cseq, reg, path in rows]

    def save_dialogs(self, dialogs: list[tuple[str, DialogParties]], wall_offset: float, wall_now: float) -> None:
        """Remember calls whose in-dialog requests we relay (their parties and until when, on the loop clock);
        rows that ran out are dropped on the way."""
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM relayed_dialogs WHERE expires_at <= ?", (wall_now,))
            if dialogs:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO relayed_dialogs (call_id, expires_at, parties) VALUES (?, ?, ?)",
                    [(call_id, p.expires_at + wall_offset,
                      json.dumps({"caller": sorted(p.caller), "callee": sorted(p.callee)}))
                     for call_id, p in dialogs])

    def save_publications(self, changes: Mapping[str, Publication | None], wall_offset: float) -> None:
        """Write the dialog publications (RFC 3903 entity-tags) that changed, in one transaction."""
        if not changes:
            return
        put = [(etag, p.aor, p.expires_at + wall_offset, format_dialog_info(p.info))
               for etag, p in changes.items() if p is not None]
        gone = [(etag,) for etag, p in changes.items() if p is None]
        with self._conn:
            self._conn.execute("BEGIN")
            if gone:
                self._conn.executemany("DELETE FROM dialog_publications WHERE etag = ?", gone)
            if put:
                self._conn.executemany("INSERT OR REPLACE INTO dialog_publications (etag, aor, expires_at, info)"
                                       " VALUES (?, ?, ?, ?)", put)

    def load_publications(self, wall_now: float, wall_offset: float) -> list[Publication]:
        """The publications still live at ``wall_now``, on the loop clock; expired rows are deleted. A row whose
        XML no longer parses is skipped (that player's next refresh gets 412 and it publishes afresh)."""
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM dialog_publications WHERE expires_at <= ?", (wall_now,))
            rows = self._conn.execute("SELECT etag, aor, expires_at, info FROM dialog_publications").fetchall()
        out: list[Publication] = []
        for etag, aor, expires_at, info in rows:
            try:
                parsed = parse_dialog_info_untrusted(bytes(info))
            except RemoteProtocolError:
                continue
            out.append(Publication(aor=str(aor), etag=str(etag), info=parsed, expires_at=expires_at - wall_offset))
        return out

    def load_dialogs(self, wall_now: float, wall_offset: float) -> list[tuple[str, DialogParties]]:
        rows = self._conn.execute("SELECT call_id, expires_at, parties FROM relayed_dialogs WHERE expires_at > ?",
                                  (wall_now,)).fetchall()
        out = []
        for call_id, expires, text in rows:
            try:
                data = json.loads(text)
                caller = tuple({(str(h), int(p)) for h, p in data["caller"]})
                callee = tuple({(str(h), int(p)) for h, p in data["callee"]})
            except (ValueError, KeyError, TypeError):
                continue  # a damaged row costs that call its relayed BYE, not the start-up
            out.append((call_id, DialogParties(caller, callee, expires - wall_offset)))
        return out

    def put_handover(self, name: str, value: object, wall_now: float) -> None:
        """Keep ``value`` (JSON) for the next start under ``name``."""
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO handover (name, saved_at, value) VALUES (?, ?, ?)",
                               (name, wall_now, json.dumps(value)))

    def take_handover(self, name: str) -> object | None:
        """What the last clean shutdown kept under ``name``, deleted as it is read (None: nothing, or damaged)."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            row = self._conn.execute("SELECT value FROM handover WHERE name = ?", (name,)).fetchone()
            self._conn.execute("DELETE FROM handover WHERE name = ?", (name,))
        if row is None:
            return None
        try:
            value: object = json.loads(row[0])
        except ValueError:
            return None
        return value

    def save_nonces(self, snapshot: NonceSnapshot, wall_offset: float, wall_now: float) -> None:
        """Hand the nonce counts to the next start (times converted to wall-clock ms with ``wall_offset``)."""
        moved = snapshot.shifted(round(wall_offset * 1000))
        self.put_handover(_NONCES, {"tracked": [list(t) for t in moved.tracked], "floor_ms": moved.floor_ms,
                                    "user_floor_ms": [list(f) for f in moved.user_floor_ms],
                                    "forgotten": [list(f) for f in moved.forgotten]}, wall_now)

    def take_nonces(self, wall_offset: float) -> NonceSnapshot | None:
        """The nonce counts the last clean shutdown saved (on this process's clock), deleted as they are read:
        None when there are none (first start, or the last process did not stop cleanly)."""
        data = self.take_handover(_NONCES)
        try:
            assert isinstance(data, dict)
            snapshot = NonceSnapshot(
                tuple((str(n), int(t), int(hi), int(seen), str(u)) for n, t, hi, seen, u in data["tracked"]),
                None if data["floor_ms"] is None else int(data["floor_ms"]),
                tuple((str(u), int(f)) for u, f in data["user_floor_ms"]),
                tuple((str(u), str(n), int(t)) for u, n, t in data["forgotten"]))
        except (AssertionError, ValueError, KeyError, TypeError):
            return None  # none or damaged: no clean handover (old nonces become stale, never replayable)
        return snapshot.shifted(-round(wall_offset * 1000))

    def save_peer_rtts(self, peers: list[tuple[str, str, int, list[tuple[float, float]]]], wall_offset: float,
                       wall_now: float) -> None:
        """The round-trip samples of each peer (domain, host, port, [(answer time, seconds)]), times to wall."""
        self.put_handover(_PEER_RTTS, [[d, h, p, [[t + wall_offset, s] for t, s in samples]]
                                       for d, h, p, samples in peers], wall_now)

    def take_peer_rtts(self, wall_offset: float) -> list[tuple[str, str, int, list[tuple[float, float]]]]:
        data = self.take_handover(_PEER_RTTS)
        out: list[tuple[str, str, int, list[tuple[float, float]]]] = []
        try:
            assert isinstance(data, list)
            for d, h, p, samples in data:
                out.append((str(d), str(h), int(p), [(float(t) - wall_offset, float(s)) for t, s in samples]))
        except (AssertionError, ValueError, TypeError):
            return []
        return out

    def secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The secret ``name`` of this region, created with ``make()`` the first time (the database is 0600)."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            row = self._conn.execute("SELECT value FROM server_secrets WHERE name = ?", (name,)).fetchone()
            if row is not None:
                return bytes(row[0])
            value = make()
            self._conn.execute("INSERT INTO server_secrets (name, value) VALUES (?, ?)", (name, value))
        return value

    def close(self) -> None:
        self._conn.close()
