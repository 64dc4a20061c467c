"""server/policy/cli_support: what ``gamesdk-server billing list|export`` and ``sessions`` print.

The CLI only parses arguments and calls these; each returns text (or writes a file) from the region database,
so the commands work while the server runs (WAL) and after it stopped.

- :func:`billing_list_text` / :func:`billing_list_json` -> ``billing list [--json] [--limit N] [--open]``
- :func:`billing_export_csv` -> ``billing export --csv FILE``
- :func:`sessions_text` / :func:`sessions_json` -> ``sessions [--json]``
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from server.billing.store import BillingRow, read_rows
from server.billing.tariff import format_money
from server.db import check_schema

from .codec import capacity_to_json
from .config import PolicyConfig
from .core import NetworkCapacity, capacity_view
from .model import Reservation
from .store import SqliteReservationStore

__all__ = [
    "BILLING_CSV_COLUMNS",
    "SessionsReport",
    "billing_export_csv",
    "billing_list_json",
    "billing_list_text",
    "billing_rows",
    "sessions_json",
    "sessions_report",
    "sessions_text",
]

#: Column order of ``billing export --csv`` (and keys of ``billing list --json``).
BILLING_CSV_COLUMNS = (
    "id", "region", "side", "call_id", "from_tag", "to_tag", "player", "peer", "network", "qos_class",
    "game_format", "qos_text", "uplink_kbps", "downlink_kbps", "token", "t_2xx", "t_start", "t_last_interim",
    "interim_count", "t_stop", "end_reason", "sip_reason", "duration_s", "charge", "currency",
)


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _connect(db: str | Path | sqlite3.Connection) -> sqlite3.Connection:
    if isinstance(db, sqlite3.Connection):
        return db
    path = Path(db)
    if not path.exists():
        raise FileNotFoundError(f"no region database at {path}")
    # Read-only: a listing must never create or change the operator's database.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        check_schema(conn)  # a newer server's file is refused; a corrupt one is a DatabaseError, not a traceback
    except BaseException:
        conn.close()
        raise
    return conn


def billing_rows(db: str | Path | sqlite3.Connection, *, limit: int | None = None, open_only: bool = False,
                 ) -> list[BillingRow]:
    """Billing records of a region database, oldest first."""
    return read_rows(_connect(db), limit=limit, open_only=open_only)


def _row_dict(row: BillingRow) -> dict[str, Any]:
    data = dataclasses.asdict(row)
    for name in ("t_2xx", "t_start", "t_last_interim", "t_stop"):
        data[name] = _iso(data[name]) or None
    # Exact money: a decimal string with every decimal shown (JSON numbers would turn it into a float).
    data["charge"] = format_money(row.charge)
    return {**{k: data[k] for k in BILLING_CSV_COLUMNS}, "open": row.open}


def billing_list_json(rows: Sequence[BillingRow]) -> str:
    """``billing list --json``: a JSON array, one object per record (times in ISO 8601 UTC)."""
    return json.dumps([_row_dict(r) for r in rows], indent=2)


def _table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for line in body:
        widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip()]
    out.extend(fmt.format(*line).rstrip() for line in body)
    return "\n".join(out) + "\n"


def billing_list_text(rows: Sequence[BillingRow]) -> str:
    """``billing list``: one line per record; open records show ``open`` as their end."""
    if not rows:
        return "no billing records\n"
    headers = ("ID", "START (UTC)", "SIDE", "PLAYER", "PEER", "NETWORK", "CLASS", "UP/DOWN KBIT/S", "SECONDS",
               "END", "CHARGE")
    body = [
        (
            str(r.id),
            _iso(r.t_2xx)[:19],
            r.side,
            r.player,
            r.peer,
            r.network or "-",
            r.qos_class,
            f"{r.uplink_kbps}/{r.downlink_kbps}",
            f"{r.duration_s:.1f}",
            r.end_reason or "open",
            "-" if r.open else format_money(r.charge, r.currency),
        )
        for r in rows
    ]
    total: dict[str, Decimal] = {}
    for r in rows:
        if r.currency:
            total[r.currency] = total.get(r.currency, Decimal(0)) + r.charge
    summary = ", ".join(format_money(v, k) for k, v in sorted(total.items())) or format_money(Decimal(0))
    n_open = sum(1 for r in rows if r.open)
    return _table(headers, body) + f"{len(rows)} records, {n_open} open, total {summary}\n"


def billing_export_csv(rows: Sequence[BillingRow], out: TextIO | str | Path) -> int:
    """``billing export --csv FILE``: header + one line per record (RFC 4180). Returns the row count."""
    if isinstance(out, (str, Path)):
        with open(out, "w", newline="", encoding="utf-8") as fh:
            return billing_export_csv(rows, fh)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(BILLING_CSV_COLUMNS)
    for r in rows:
        d = _row_dict(r)
        writer.writerow([_csv_cell(d[c]) for c in BILLING_CSV_COLUMNS])
    return len(rows)


#: A spreadsheet runs a cell that starts with one of these as a formula (CSV injection, OWASP): Call-IDs, tags and
#: player names come from the network.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> object:
    """A CSV cell that a spreadsheet shows as text: text starting like a formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionsReport:
    """Live reservations and the capacity left in each access network."""

    reservations: tuple[Reservation, ...]
    capacity: tuple[NetworkCapacity, ...]


def sessions_report(db: str | Path | sqlite3.Connection, config: PolicyConfig) -> SessionsReport:
    """Read held reservations from the region database and compute free capacity from the config."""
    store = SqliteReservationStore(_connect(db), read_only=True)
    held = sorted(store.load_all(), key=lambda r: r.t_2xx)
    return SessionsReport(reservations=tuple(held), capacity=tuple(capacity_view(config, held)))


def _state(res: Reservation, now: float) -> str:
    # A deadline in the past means no server is running timers on this database (stopped or crashed): the
    # next start-up releases it (server-restart). Say so rather than show it as live.
    return res.state.value + (" (overdue)" if res.deadline <= now else "")


def sessions_text(report: SessionsReport, now: float | None = None) -> str:
    """``sessions``: a table of held reservations, then one line of capacity per access network."""
    now = time.time() if now is None else now
    out = io.StringIO()
    if report.reservations:
        headers = ("CALL-ID", "SIDE", "PLAYER", "NETWORK", "CLASS", "UP/DOWN KBIT/S", "STATE", "SINCE (UTC)",
                   "DEADLINE (UTC)")
        body = [
            (
                r.key.call_id, r.key.side.value, r.request.player, r.grant.network, r.grant.qos_class,
                f"{r.grant.uplink_kbps}/{r.grant.downlink_kbps}", _state(r, now), _iso(r.t_2xx)[:19],
                _iso(r.deadline)[:19],
            )
            for r in report.reservations
        ]
        out.write(_table(headers, body))
    else:
        out.write("no live reservations\n")
    out.write("\n")
    cap_headers = ("ACCESS NETWORK", "SESSIONS", "UPLINK FREE KBIT/S", "DOWNLINK FREE KBIT/S")
    cap_body = [
        (
            c.network,
            f"{c.sessions}/{c.max_sessions}",
            f"{c.uplink_free_kbps}/{c.uplink_kbps}",
            f"{c.downlink_free_kbps}/{c.downlink_kbps}",
        )
        for c in report.capacity
    ]
    out.write(_table(cap_headers, cap_body))
    return out.getvalue()


def sessions_json(report: SessionsReport, now: float | None = None) -> str:
    """``sessions --json``: ``{"reservations": [...], "networks": [...]}``."""
    now = time.time() if now is None else now
    return json.dumps(
        {
            "reservations": [
                {
                    "callId": r.key.call_id, "toTag": r.key.to_tag, "side": r.key.side.value,
                    "player": r.request.player, "peer": r.request.peer, "network": r.grant.network,
                    "class": r.grant.qos_class, "uplinkKbps": r.grant.uplink_kbps,
                    "downlinkKbps": r.grant.downlink_kbps, "state": r.state.value, "since": _iso(r.t_2xx),
                    "deadline": _iso(r.deadline), "overdue": r.deadline <= now, "interims": r.interim_count,
                }
                for r in report.reservations
            ],
            "networks": [capacity_to_json(c) for c in report.capacity],
        },
        indent=2,
    )
