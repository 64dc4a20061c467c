"""The reservation row as the ledger writes it: the same JSON as the generic encoder, one statement where one
suffices, and that statement waits for another connection's write lock as a transaction does."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.policy import AppSession, Grant, MediaComponent, ReservationState, Side, open_region_db
from server.policy.codec import (
    reservation_from_json_untrusted,
    reservation_json_text,
    reservation_to_json,
    time_text,
)
from server.policy.ledger import Change, SqliteLedger
from server.policy.model import Reservation


def reservation(req: AppSession, **changes: object) -> Reservation:
    grant = Grant(token="00ff", network="eu-dsl", qos_class="casual", priority=3, uplink_kbps=100,
                  downlink_kbps=200, latency_ms=40)
    res = Reservation(request=req, grant=grant, state=ReservationState.RESERVED, t_2xx=1_700_000_000.25,
                      deadline=1_700_000_032.25, record_id="rec-1")
    return dataclasses.replace(res, **changes)  # type: ignore[arg-type]


def odd_request(req: Callable[..., AppSession]) -> AppSession:
    base = req(7, loss=10_000, jit=10, cls=None)
    return dataclasses.replace(
        base, call_id='c"a\\l\u00e9l\u2028\x01@h', player="sip:j\u00fcrgen@eu.example", peer="",
        game_format="pong/1;tick=60", qos_text="lat=50;jit=10;loss=10000;pps=60/60",
        components=(*base.components,
                    MediaComponent(number=2, uplink_kbps=0, downlink_kbps=2**40, max_latency_ms=1,
                                   qos_class="action")))


@pytest.mark.parametrize("which", ["plain", "odd", "active", "int-times", "no-token"])
def test_row_text_is_the_generic_encoders(which: str, req: Callable[..., AppSession]) -> None:
    res = {
        "plain": lambda: reservation(req(1)),
        "odd": lambda: reservation(odd_request(req), record_id="\u00e9\"\n"),
        "active": lambda: reservation(req(2, side=Side.TERM), state=ReservationState.ACTIVE, t_confirm=5.5,
                                      t_last_refresh=1e-7, expires_s=90, interim_count=3),
        "int-times": lambda: reservation(req(3), t_2xx=0, deadline=32),
        "no-token": lambda: reservation(req(4), grant=dataclasses.replace(reservation(req(4)).grant, token=None)),
    }[which]()
    text = reservation_json_text(res)
    assert text == json.dumps(reservation_to_json(res), separators=(",", ":"))
    assert reservation_from_json_untrusted(json.loads(text)) == dataclasses.replace(res, clock_offset=0.0)


def test_one_statement_commit_waits_for_another_writer(tmp_path: Path, req: Callable[..., AppSession]) -> None:
    path = tmp_path / "region.sqlite3"
    ledger = SqliteLedger(open_region_db(path))
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock for a moment
    committed = threading.Event()

    def commit_other() -> None:
        committed.set()  # set first: until then the lock is surely held
        other.execute("COMMIT")

    release = threading.Timer(0.3, commit_other)
    release.start()
    try:
        ledger.commit(Change(key=req(1).key, save=reservation(req(1))))
        # It waited for the lock (busy timeout) instead of failing with "database is locked".
        written_after_other = committed.is_set()
    finally:
        release.join()
    assert written_after_other
    assert not ledger.connection.in_transaction
    rows = ledger.connection.execute("SELECT call_id, state FROM policy_reservations").fetchall()
    assert rows == [("call-1@eu.example", "reserved")]
    ledger.commit(Change(key=req(1).key, delete=True))
    assert ledger.connection.execute("SELECT COUNT(*) FROM policy_reservations").fetchone() == (0,)
    assert [r.key for r in ledger.load_all()] == []


def test_the_reservations_have_no_index_by_player(tmp_path: Path) -> None:
    """Nothing reads them by player; the index cost about 30 % of each row's write. Gone from a new database and
    from one made before (schema migration 11)."""
    from server.db import MIGRATIONS, migrate

    def indexes(conn: sqlite3.Connection) -> set[str]:
        return {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'policy_reservations'")}

    assert "policy_reservations_player" not in indexes(open_region_db(tmp_path / "new.sqlite3"))
    older = open_region_db(tmp_path / "older.sqlite3", migrations=MIGRATIONS[:10])
    assert "policy_reservations_player" in indexes(older)
    migrate(older)
    assert "policy_reservations_player" not in indexes(older)


def test_a_calls_two_rows_share_their_times_text_and_only_equal_texts_are_shared(
        req: Callable[..., AppSession]) -> None:
    # The two sides of a call have the same t2xx and deadline (one wall time): the second row reuses the first's
    # text of them. Equal floats with different texts (0.0 and -0.0) and ints equal to them are never confused.
    cases = [(1_700_000_000.25, 1_700_000_032.25), (1_700_000_000.25, 1_700_000_032.25), (0.0, 32.0),
             (-0.0, 32.0), (0.0, 32.0), (5.0, 37.0), (5, 37), (5.0, 37.0)]
    for n, (t_2xx, deadline) in enumerate(cases):
        res = reservation(req(n, side=Side.TERM if n % 2 else Side.ORIG), t_2xx=t_2xx, deadline=deadline)
        assert reservation_json_text(res) == json.dumps(reservation_to_json(res), separators=(",", ":"))


_texts = st.one_of(st.sampled_from(["", "eu-dsl", "sip:bob@eu.example", 'q"\\', "caf\u00e9", "\u2028\x01"]),
                   st.text(max_size=12), st.text(min_size=250, max_size=300))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_texts, _texts, _texts, _texts, _texts, _texts, _texts), min_size=1, max_size=4))
def test_the_texts_rows_share_are_kept_as_the_generic_encoder_writes_them(
        rows: list[tuple[str, str, str, str, str, str, str]]) -> None:
    """The values rows repeat (players, addresses, network, class, format, qos) are written from kept texts: the
    same text as json.dumps for any value, seen once or again, short or too long to be kept."""
    comp = MediaComponent(uplink_kbps=64, downlink_kbps=64, max_latency_ms=50, qos_class="action")
    for player, peer, ip, fmt, qos, network, cls in rows * 2:
        request = AppSession(call_id="c1", from_tag="f", to_tag="t", side=Side.ORIG, player=player, peer=peer,
                             player_ip=ip, components=(comp,), game_format=fmt, qos_text=qos)
        res = reservation(request, grant=Grant(token="00ff", network=network, qos_class=cls, priority=1,
                                               uplink_kbps=64, downlink_kbps=64, latency_ms=40))
        assert reservation_json_text(res) == json.dumps(reservation_to_json(res), separators=(",", ":"))


_ints = st.one_of(st.sampled_from([0, 1, 40, 2**40]), st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([Side.ORIG, Side.TERM]), st.sampled_from(["c1", "c2", ""]),
                          st.sampled_from(["f", "", 'f"']), st.sampled_from(["t", "", "t\u00e9"]), _ints, _ints,
                          _ints, _ints, _ints, _ints, st.sampled_from([ReservationState.RESERVED,
                                                                       ReservationState.ACTIVE])),
                min_size=1, max_size=5))
def test_the_row_parts_kept_are_the_generic_encoders(
        rows: list[tuple[Side, str, str, str, int, int, int, int, int, int, ReservationState]]) -> None:
    """A row's request part (side to components), grant part (network to latency) and dialog fields are kept by
    value and reused: any side, tags, round trips, priority, bandwidths, latency and state, seen once or again, in
    any order, are written as json.dumps writes them."""
    comp = MediaComponent(uplink_kbps=64, downlink_kbps=64, max_latency_ms=50, qos_class="action")
    components = (comp,)
    for side, call_id, from_tag, to_tag, transit, peer_rtt, prio, up, down, latency, state in rows * 2:
        request = AppSession(call_id=call_id, from_tag=from_tag, to_tag=to_tag, side=side, player="sip:a@eu",
                             peer="sip:b@eu", player_ip="192.0.2.1", components=components,
                             transit_rtt_ms=transit, peer_access_rtt_ms=peer_rtt, game_format="pong/1",
                             qos_text="lat=50")
        res = reservation(request, state=state, grant=Grant(token="00ff", network="eu-dsl", qos_class="action",
                                                            priority=prio, uplink_kbps=up, downlink_kbps=down,
                                                            latency_ms=latency))
        assert reservation_json_text(res) == json.dumps(reservation_to_json(res), separators=(",", ":"))


def test_a_kept_request_part_is_never_another_components_tuples(req: Callable[..., AppSession]) -> None:
    # Equal values but another components tuple (another game's): its own text, never the kept one's.
    first = req(1)
    other = dataclasses.replace(first, components=(MediaComponent(uplink_kbps=1, downlink_kbps=2, max_latency_ms=3),))
    for request in (first, other, first, other):
        res = reservation(request)
        assert reservation_json_text(res) == json.dumps(reservation_to_json(res), separators=(",", ":"))


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                 st.floats(min_value=2.0**30, max_value=2.0**53),
                 st.floats(min_value=1.0e9, max_value=1.1e10),
                 st.sampled_from([2.0**30, 2.0**30 - 2.0**-23, 2.0**52, 2.0**52 - 0.5, 1_700_000_000.25, 0.0, -0.0])))
def test_a_time_is_written_as_a_number_that_reads_back_as_it(value: float) -> None:
    """time_text (a row's t2xx and deadline): JSON that reads back as exactly the float, its sign and all;
    repr's text outside the wall times it writes exactly."""
    text = time_text(value)
    assert json.loads(text) == value and math.copysign(1.0, json.loads(text)) == math.copysign(1.0, value)
    assert float(text) == value
    if not 2.0**30 <= value < 2.0**52:
        assert text == repr(value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(2**30, 2**33), st.sampled_from([0.0, 0.25, 0.1, 0.7, 2.0**-22, 0.5 - 2.0**-22])),
                min_size=2, max_size=6))
def test_times_in_a_row_are_each_their_own_number(times: list[tuple[int, float]]) -> None:
    """time_text keeps the last fraction's digits for the next time with the same one (a row's deadline, whole
    seconds after its wall time): times one after the other, sharing fractions or not, each read back as itself."""
    for whole, fraction in times:
        for value in (whole + fraction, whole + 32 + fraction):
            text = time_text(value)
            assert float(text) == value and text == time_text(value)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1.0e9, max_value=1.0e10), st.sampled_from([0.0, 32.0, 0.1, 1e-6]))
def test_a_row_with_wall_times_reads_back_as_the_generic_encoders(wall: float, confirm_s: float) -> None:
    """A row stamped with a wall time (any fraction, not only the tests' round ones) is JSON that reads back as the
    generic encoder's text does, and as the reservation."""
    req = AppSession(call_id="c1", from_tag="f", to_tag="t", side=Side.ORIG, player="sip:a@eu", peer="sip:b@eu",
                     player_ip="192.0.2.1",
                     components=(MediaComponent(uplink_kbps=64, downlink_kbps=64, max_latency_ms=50),),
                     game_format="pong/1", qos_text="lat=50")
    for _ in range(2):  # (the second row reuses the first's text of the times)
        res = reservation(req, t_2xx=wall, deadline=wall + confirm_s)
        text = reservation_json_text(res)
        assert json.loads(text) == json.loads(json.dumps(reservation_to_json(res), separators=(",", ":")))
        assert reservation_from_json_untrusted(json.loads(text)) == dataclasses.replace(res, clock_offset=0.0)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="0123456789abcdefABCDEF", max_size=64),
                 st.text(alphabet=st.characters(codec="ascii"), max_size=40),
                 st.sampled_from(["", "a", "Z9", "\u00b2", "\u0661", "a\u00e9", "ab\"c", "a\\b", "x y"])))
def test_a_plain_text_is_what_the_encoder_writes(value: str) -> None:
    # The token's and record id's text is written without the escape pass when there is nothing to escape (ASCII
    # letters and digits): the encoder's text for every value.
    from json.encoder import encode_basestring_ascii

    from server.policy import codec

    assert codec._plain_text(value) == encode_basestring_ascii(value)
