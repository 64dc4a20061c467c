"""Reservations persisted in a real SQLite file: restart re-holds live leases and bills the ones that passed."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.billing import SqliteBillingStore
from server.policy import (
    AppSession,
    EndReason,
    Grant,
    PolicyConfig,
    PolicyServer,
    ReservationState,
    Side,
    SqliteReservationStore,
    open_region_db,
)


def boot(path: Path, config: PolicyConfig, tokens: Callable[[], str]) -> tuple[PolicyServer, SqliteBillingStore]:
    conn = open_region_db(path)
    billing = SqliteBillingStore(conn, config.tariff)
    policy = PolicyServer(
        config, token_factory=tokens, region="eu", store=SqliteReservationStore(conn), billing=billing
    )
    return policy, billing


def test_restart_releases_passed_leases_and_keeps_live_ones(
    tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    db = tmp_path / "region.sqlite"
    # The server's own account table lives in the same file; our tables must coexist with it.
    with sqlite3.connect(db) as other:
        other.execute("CREATE TABLE accounts (name TEXT PRIMARY KEY, ha1 TEXT)")
        other.execute("INSERT INTO accounts VALUES ('alice', 'x')")

    policy, _ = boot(db, config, tokens)
    grants = {n: policy.final(req(n, up=100, down=100), 1000.0) for n in (1, 2, 3)}
    policy.activate(req(1).key, 1001.0, 90)  # lease until 1001 + 90 + 32 = 1123
    policy.activate(req(2).key, 1001.0, 90)
    policy.refresh(req(2).key, 1046.0, 90)  # lease until 1168
    # 3 stays unconfirmed: confirm deadline 1032.
    del policy  # the process dies: no releases written

    restarted, billing = boot(db, config, tokens)
    released = restarted.restore(1150.0)
    assert sorted(r.key.call_id for r in released) == ["call-1@eu.example", "call-3@eu.example"]
    live = restarted.reservations()
    assert [r.key.call_id for r in live] == ["call-2@eu.example"]
    assert live[0].state is ReservationState.ACTIVE and live[0].interim_count == 1
    # The retransmitted 2xx of the live session still gets the same token after the restart.
    assert restarted.final(req(2, up=100, down=100), 1150.0) == grants[2]
    assert restarted.capacity()[0].uplink_used_kbps == 100
    assert restarted.get_timer() == 1168.0

    rows = {r.call_id: r for r in billing.rows()}
    assert rows["call-1@eu.example"].end_reason == "server-restart"
    # Billed up to the last evidence of play (its confirm), not up to the restart.
    assert rows["call-1@eu.example"].t_stop == 1001.0
    assert rows["call-1@eu.example"].duration_s == 1.0
    assert rows["call-3@eu.example"].end_reason == "server-restart"
    # Never confirmed, but its capacity was held to the confirm deadline: those 32 s are billed.
    assert rows["call-3@eu.example"].t_start is None and rows["call-3@eu.example"].duration_s == 32.0
    assert rows["call-3@eu.example"].charge > 0
    assert rows["call-2@eu.example"].open and rows["call-2@eu.example"].interim_count == 1

    restarted.release(req(2).key, 1200.0, EndReason.BYE_LOCAL)
    assert restarted.is_idle()
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT COUNT(*) FROM policy_reservations").fetchone() == (0,)
        assert check.execute("SELECT name FROM accounts").fetchall() == [("alice",)]


def test_restore_twice_is_harmless(
    tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    db = tmp_path / "r.sqlite"
    policy, _ = boot(db, config, tokens)
    assert isinstance(policy.final(req(1), 0.0), Grant)
    again, billing = boot(db, config, tokens)
    assert again.restore(1.0) == []
    assert again.restore(1.0) == []
    assert len(again.reservations()) == 1
    assert again.capacity()[0].sessions == 1
    assert billing.rows() == []


def test_unreadable_row_is_dropped_not_fatal(
    tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    db = tmp_path / "r.sqlite"
    policy, _ = boot(db, config, tokens)
    policy.final(req(1), 0.0)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE policy_reservations SET data = '{\"broken\": 1}'")
    again, _ = boot(db, config, tokens)
    assert again.restore(1.0) == []
    assert again.is_idle()


def test_network_removed_from_config_is_released_at_start(
    tmp_path: Path, region_doc: dict[str, Any], tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    db = tmp_path / "r.sqlite"
    policy, _ = boot(db, PolicyConfig.from_mapping(region_doc), tokens)
    policy.final(req(1, ip="10.2.5.5"), 0.0)  # eu-lab
    region_doc["access_networks"].pop(2)
    again, billing = boot(db, PolicyConfig.from_mapping(region_doc), tokens)
    [released] = again.restore(1.0)
    assert released.grant.network == "eu-lab"
    assert again.is_idle()
    assert [r.end_reason for r in billing.rows()] == ["server-restart"]


def _pair_rows(path: Path, config: PolicyConfig, req: Callable[..., AppSession],
               change: Callable[[Any, Any], tuple[Any, Any]], *, general: bool) -> list[tuple[object, ...]]:
    """The rows write_many writes for a call's two sides (``change`` edits them first), or the general statement's
    (every value bound on its own), each column with its SQLite type."""
    from server.policy import store as store_module

    conn = open_region_db(path)
    policy = PolicyServer(config, token_factory=lambda: "0" * 32, region="eu")
    callee = req(1, side=Side.TERM, player="sip:bob@eu.example", ip="10.2.0.9")
    caller = req(1, side=Side.ORIG, player="sip:alice@eu.example", ip="10.2.0.7")
    first, second = change(*(policy._new_reservation(r, policy._decide(r), 0.0, 1.7e9)  # type: ignore[arg-type]
                             for r in (callee, caller)))
    if general:
        conn.execute(store_module._WRITE_MANY[2], store_module._row(first) + store_module._row(second))
    else:
        SqliteReservationStore(conn).write_many([first, second])
    return conn.execute("SELECT call_id, typeof(call_id), to_tag, side, player, network, state, typeof(state),"
                        " deadline, typeof(deadline), quote(deadline), data FROM policy_reservations"
                        " ORDER BY rowid").fetchall()


@pytest.mark.parametrize("name", ["shared", "other to-tag", "other state", "other deadline", "zero deadlines",
                                  "minus zero", "int deadline", "other network"])
def test_a_calls_two_rows_bound_once_are_the_general_statements(
        tmp_path: Path, config: PolicyConfig, req: Callable[..., AppSession], name: str) -> None:
    # write_many binds the values a call's two rows share (Call-ID, To-tag, state, deadline) once: the rows are
    # those every value bound on its own writes, whatever the values (shared or not, of any type).
    def change(first: Any, second: Any) -> tuple[Any, Any]:
        if name == "other to-tag":
            second = dataclasses.replace(second, request=dataclasses.replace(second.request, to_tag="other"))
        elif name == "other state":
            second = dataclasses.replace(second, state=ReservationState.ACTIVE)
        elif name == "other deadline":
            second = dataclasses.replace(second, deadline=second.deadline + 1.0)
        elif name in ("zero deadlines", "minus zero"):
            first = dataclasses.replace(first, deadline=0.0)
            second = dataclasses.replace(second, deadline=-0.0 if name == "minus zero" else 0.0)
        elif name == "int deadline":
            first = dataclasses.replace(first, deadline=17)
        elif name == "other network":
            second = dataclasses.replace(second, grant=dataclasses.replace(second.grant, network="other"))
        return first, second

    rows = [_pair_rows(tmp_path / f"{general}.sqlite3", config, req, change, general=general)
            for general in (False, True)]
    assert rows[0] == rows[1] and len(rows[0]) == 2
    assert repr(rows[0]) == repr(rows[1])  # (-0.0 and 0.0 are equal, their texts are not)
