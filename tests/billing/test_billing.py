"""Billing in SQLite: charges from the tariff, exactly one STOP per record, and the CLI outputs."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from server.billing import BillingEvent, BillingRecord, EventKind, SqliteBillingStore, charge_for
from server.billing.tariff import format_money
from server.policy import (
    AppSession,
    EndReason,
    MediaComponent,
    PolicyConfig,
    PolicyServer,
    Side,
    SqliteReservationStore,
    open_region_db,
)
from server.policy.cli_support import (
    BILLING_CSV_COLUMNS,
    billing_export_csv,
    billing_list_json,
    billing_list_text,
    billing_rows,
    sessions_json,
    sessions_report,
    sessions_text,
)

CONFIG = PolicyConfig.from_mapping(
    {
        "access_networks": [
            {"name": "eu-dsl", "prefixes": ["10.1.0.0/16"], "uplink_kbps": 1000, "downlink_kbps": 2000,
             "rtt_ms": 20},
        ],
        "classes": [{"name": "casual"}, {"name": "action", "max_share": 0.5}],
        "tariff": {
            "currency": "EUR",
            "casual": {"per_minute": 0.01},
            "action": {"per_minute": 0.02, "per_kbps_minute": 0.0001},
        },
    }
)


def request(n: int, cls: str = "action", up: int = 100, down: int = 300) -> AppSession:
    return AppSession(
        call_id=f"c{n}@eu.example", from_tag=f"f{n}", to_tag=f"t{n}", side=Side.ORIG,
        player="sip:alice@eu.example", peer="sip:bob@na.example", player_ip="10.1.0.9",
        components=(MediaComponent(uplink_kbps=up, downlink_kbps=down, max_latency_ms=100, qos_class=cls),),
        game_format="pong/1", qos_text="lat=100;jit=10;loss=10000;pps=60",
    )


@pytest.fixture
def region(tmp_path: Path) -> tuple[Path, PolicyServer, SqliteBillingStore]:
    db = tmp_path / "region.sqlite"
    conn = open_region_db(db)
    billing = SqliteBillingStore(conn, CONFIG.tariff)
    counter = itertools.count(1)
    policy = PolicyServer(
        CONFIG, token_factory=lambda: f"{next(counter):08x}", region="eu",
        store=SqliteReservationStore(conn), billing=billing,
    )
    return db, policy, billing


def test_charge_formula() -> None:
    rec = BillingRecord(
        call_id="c", from_tag="f", to_tag="t", side="orig", player="a", peer="b", region="eu", network="n",
        qos_class="action", game_format="", qos_text="", uplink_kbps=100, downlink_kbps=300, token="", t_2xx=0,
    )
    # 2 minutes * (0.02 + 0.0001 * 400) = 0.12
    assert charge_for(CONFIG.tariff, rec, 120.0) == Decimal("0.12")
    assert charge_for(CONFIG.tariff, rec, 0.0) == 0
    casual = dataclasses.replace(rec, qos_class="casual")
    assert charge_for(CONFIG.tariff, casual, 120.0) == Decimal("0.02")
    # A class without a tariff entry pays the default class's tariff (casual is the first, hence default).
    assert charge_for(CONFIG.tariff, dataclasses.replace(rec, qos_class="unknown"), 60.0) == Decimal("0.01")


def test_money_is_exact_decimal() -> None:
    rec = BillingRecord(
        call_id="c", from_tag="f", to_tag="t", side="orig", player="a", peer="b", region="eu", network="n",
        qos_class="action", game_format="", qos_text="", uplink_kbps=1, downlink_kbps=2, token="", t_2xx=0,
    )
    # Sums stay exact: 2 x 30 s at 0.0203/min is exactly one minute's 0.0203 (floats give 0.020300000000000002).
    parts = [charge_for(CONFIG.tariff, rec, 30.0) for _ in range(2)]
    assert sum(parts, Decimal(0)) == charge_for(CONFIG.tariff, rec, 60.0) == Decimal("0.020300")
    assert format_money(sum(parts, Decimal(0)), "EUR") == "0.020300 EUR"
    # A float rate in the TOML is read as the digits written.
    assert CONFIG.tariff.for_class("action").per_kbps_minute == Decimal("0.0001")


def test_session_billing_start_interim_stop(region: tuple[Path, PolicyServer, SqliteBillingStore]) -> None:
    _db, policy, billing = region
    policy.final(request(1), 1_700_000_000.0)
    policy.activate(request(1).key, 1_700_000_001.0, 90)
    policy.refresh(request(1).key, 1_700_000_046.0, 90)
    policy.release(request(1).key, 1_700_000_120.0, EndReason.BYE_LOCAL, sip_reason="SIP;cause=200")
    [row] = billing.rows()
    assert (row.side, row.region, row.network, row.qos_class, row.game_format) == (
        "orig", "eu", "eu-dsl", "action", "pong/1",
    )
    assert (row.uplink_kbps, row.downlink_kbps, row.token) == (100, 300, "00000001")
    assert (row.t_start, row.t_last_interim, row.interim_count) == (1_700_000_001.0, 1_700_000_046.0, 1)
    assert (row.t_stop, row.end_reason, row.duration_s) == (1_700_000_120.0, "bye-local", 120.0)
    assert row.charge == Decimal("0.12") and row.currency == "EUR"
    assert billing.event_counts() == {"START": 1, "INTERIM": 1, "STOP": 1}


def test_database_refuses_a_second_stop(region: tuple[Path, PolicyServer, SqliteBillingStore]) -> None:
    db, policy, billing = region
    policy.final(request(1), 0.0)
    policy.activate(request(1).key, 1.0, 90)
    res = policy.release(request(1).key, 60.0, EndReason.BYE_LOCAL)
    assert res is not None
    # Replay the STOP (as after a crash between the STOP and the reservation delete): ignored by the index.
    record = billing.rows()[0]
    billing.append(BillingEvent(
        kind=EventKind.STOP, time=99.0, end_reason="server-restart", charged_s=99.0,
        record=BillingRecord(
            call_id=record.call_id, from_tag=record.from_tag, to_tag=record.to_tag, side=record.side,
            player=record.player, peer=record.peer, region=record.region, network=record.network,
            qos_class=record.qos_class, game_format=record.game_format, qos_text=record.qos_text,
            uplink_kbps=record.uplink_kbps, downlink_kbps=record.downlink_kbps, token=record.token,
            t_2xx=record.t_2xx, uid=record.uid,
        ),
    ))
    [row] = billing.rows()
    assert (row.end_reason, row.t_stop) == ("bye-local", 60.0)
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO billing_events (uid, record_id, kind, time, charged_s, charge_micros, currency)"
                     " VALUES ('other', ?, 'STOP', 1, 0, 0, 'EUR')", (row.id,))


def test_cli_outputs(region: tuple[Path, PolicyServer, SqliteBillingStore], tmp_path: Path) -> None:
    db, policy, _ = region
    policy.final(request(1), 1_700_000_000.0)
    policy.activate(request(1).key, 1_700_000_001.0, 90)
    policy.release(request(1).key, 1_700_000_060.0, EndReason.BYE_REMOTE)
    policy.final(request(2, cls="casual", up=2000), 1_700_000_100.0)  # denied: attempt record
    policy.final(request(3, cls="casual"), 1_700_000_200.0)
    policy.activate(request(3).key, 1_700_000_201.0, 90)

    rows = billing_rows(db)
    assert [r.end_reason for r in rows] == ["bye-remote", "qos-failed", None]
    text = billing_list_text(rows)
    assert "bye-remote" in text and "qos-failed" in text and "open" in text
    assert "3 records, 1 open, total 0.060000 EUR" in text
    assert billing_list_text([]) == "no billing records\n"
    assert [r.id for r in billing_rows(db, limit=1)] == [rows[-1].id]
    assert [r.call_id for r in billing_rows(db, open_only=True)] == ["c3@eu.example"]

    listed = json.loads(billing_list_json(rows))
    assert listed[0]["t_stop"] == "2023-11-14T22:14:20.000Z" and listed[0]["charge"] == "0.060000"
    assert listed[2]["open"] is True and listed[2]["t_stop"] is None

    out = tmp_path / "bill.csv"
    assert billing_export_csv(rows, out) == 3
    with open(out, newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert tuple(lines[0]) == BILLING_CSV_COLUMNS
    assert lines[2][BILLING_CSV_COLUMNS.index("end_reason")] == "qos-failed"
    assert out.read_bytes().count(b"\r\n") == 4

    report = sessions_report(db, CONFIG)
    assert [r.key.call_id for r in report.reservations] == ["c3@eu.example"]
    [cap] = report.capacity
    assert (cap.sessions, cap.uplink_free_kbps, cap.downlink_free_kbps) == (1, 900, 1700)
    text = sessions_text(report, now=1_700_000_210.0)
    assert "active" in text and "overdue" not in text
    assert "active (overdue)" in sessions_text(report, now=1_700_001_000.0)
    assert json.loads(sessions_json(report, now=1_700_001_000.0))["reservations"][0]["overdue"] is True
    assert "c3@eu.example" in text and "eu-dsl" in text and "900/1000" in text and "1700/2000" in text
    data = json.loads(sessions_json(report))
    assert data["networks"][0]["uplinkFreeKbps"] == 900 and data["reservations"][0]["state"] == "active"


def test_cli_on_missing_or_empty_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no region database"):
        billing_rows(tmp_path / "nope.sqlite")
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    assert billing_rows(empty) == []
    report = sessions_report(empty, CONFIG)
    assert report.reservations == () and report.capacity[0].uplink_free_kbps == 1000
    assert "no live reservations" in sessions_text(report)
    # Reading never creates tables in the operator's file.
    with sqlite3.connect(empty) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone() == (0,)


def test_a_first_layout_database_is_carried_over_with_exact_charges(tmp_path: Path) -> None:
    from server.db import MIGRATIONS, migrate

    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn, MIGRATIONS[:1])  # the first layout: UNIQUE (call_id, to_tag, side), REAL charges
    conn.execute("INSERT INTO billing_records (call_id, from_tag, to_tag, side, region, player, peer, network, class,"
                 " format, qos, uplink_kbps, downlink_kbps, token, t_2xx)"
                 " VALUES ('c1', 'f', 't', 'orig', 'eu', 'a', 'b', 'n', 'action', '', '', 1, 1, 'x', 10.0)")
    conn.execute("INSERT INTO billing_events (record_id, kind, time, charged_s, charge, currency)"
                 " VALUES (1, 'STOP', 70.0, 60.0, 0.1640000001, 'EUR')")
    conn.close()
    [row] = billing_rows(open_region_db(db))
    assert (row.call_id, row.uid, row.charge, row.currency) == ("c1", "v1-1", Decimal("0.164000"), "EUR")
