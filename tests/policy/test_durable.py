"""Durable first, memory second: a ledger that fails on demand, a journal file, a fake monotonic clock.

Each test drives the real PolicyServer on a real SQLite file (SqliteLedger), with the database's writes failing
when the test says so, and checks the books afterwards: nothing held, every START with exactly one STOP, the
STOP at the time the end was observed, never dropped with a log line.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from server.billing import read_rows
from server.policy import AppSession, EndReason, Grant, PolicyConfig, PolicyServer, ReservationState
from server.policy.ledger import Change, FileJournal, Journal, LedgerUnavailable, SqliteLedger
from server.policy.store import open_region_db

WALL = 1_700_000_000.0


class FlakyLedger:
    """A SqliteLedger whose commits fail while ``failing`` is set (as with a database locked by another process)."""

    def __init__(self, conn: sqlite3.Connection, config: PolicyConfig) -> None:
        self.inner = SqliteLedger(conn, config.tariff)
        self.failing = False
        self.attempts = 0

    def commit(self, change: Change) -> None:
        self.attempts += 1
        if self.failing:
            raise sqlite3.OperationalError("database is locked")
        self.inner.commit(change)

    def load_all(self) -> list:  # type: ignore[type-arg]
        return self.inner.load_all()


class BrokenJournal:
    """A FileJournal whose appends fail (a full disk). (A wrapper: a compiled build's FileJournal is a native class,
    which an interpreted class cannot extend.)"""

    def __init__(self, path: str) -> None:
        self.inner = FileJournal(path)

    def append(self, change: Change) -> None:
        raise OSError(28, "No space left on device")

    def entries(self) -> list[Change]:
        return self.inner.entries()

    def clear(self) -> None:
        self.inner.clear()


def boot(db: Path, config: PolicyConfig, tokens: Callable[[], str], *, journal: Journal | None = None,
         ) -> tuple[PolicyServer, FlakyLedger]:
    ledger = FlakyLedger(open_region_db(db), config)
    policy = PolicyServer(config, token_factory=tokens, region="eu", ledger=ledger,
                          journal=journal if journal is not None else FileJournal(f"{db}.journal"))
    return policy, ledger


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "region.sqlite"


def test_a_stop_the_database_refuses_is_journaled_retried_and_written_once(
    db: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    policy, ledger = boot(db, config, tokens)
    key = req(1).key
    assert isinstance(policy.final(req(1, up=300), 0.0, wall=WALL), Grant)
    policy.activate(key, 1.0, 90)
    ledger.failing = True
    released = policy.release(key, 61.0, EndReason.BYE_LOCAL)
    assert released is not None
    # Not in the database yet: the capacity stays counted, a repeated release is a no-op, the retry is armed.
    assert policy.capacity()[0].uplink_used_kbps == 300 and not policy.is_idle()
    assert policy.release(key, 62.0, EndReason.BYE_REMOTE) is released
    assert len(FileJournal(f"{db}.journal").entries()) == 1
    retry = policy.get_timer()
    assert retry is not None and retry <= 61.0 + 0.1
    policy.handle_timer(retry)  # still locked: backs off
    later = policy.get_timer()
    assert later is not None and later > retry
    ledger.failing = False
    policy.handle_timer(later)
    assert policy.is_idle() and policy.pending_writes == 0
    assert FileJournal(f"{db}.journal").entries() == []
    [row] = read_rows(open_region_db(db))
    # The STOP carries the time the end was observed (61), not when the write finally went in.
    assert (row.end_reason, row.t_stop, row.duration_s) == ("bye-local", WALL + 61.0, 61.0)


def test_the_journal_survives_a_crash_and_is_replayed_at_start_up(
    db: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    policy, ledger = boot(db, config, tokens)
    key = req(1).key
    policy.final(req(1), 0.0, wall=WALL)
    ledger.failing = True
    policy.activate(key, 1.0, 90)  # START journaled
    policy.release(key, 31.0, EndReason.BYE_REMOTE, sip_reason="SIP;cause=200")  # STOP journaled
    del policy  # killed before the database came back

    restarted, _ = boot(db, config, tokens)
    assert restarted.restore(5000.0, wall=WALL + 5000.0) == []  # nothing ran out: the end was journaled
    assert restarted.is_idle()
    [row] = read_rows(open_region_db(db))
    assert (row.t_start, row.t_stop, row.end_reason, row.duration_s) == (WALL + 1, WALL + 31, "bye-remote", 31.0)
    # A second start-up replays nothing twice.
    again, _ = boot(db, config, tokens)
    again.restore(6000.0, wall=WALL + 6000.0)
    assert len(read_rows(open_region_db(db))) == 1


def test_a_final_that_cannot_be_recorded_is_refused_and_holds_nothing(
    db: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    policy, ledger = boot(db, config, tokens, journal=BrokenJournal(f"{db}.journal"))
    ledger.failing = True
    deny = policy.final(req(1, up=300), 0.0, wall=WALL)
    assert not isinstance(deny, Grant) and "could not be recorded" in deny.reason
    # The capacity is free at once, not held until a confirm deadline for a 2xx that carries no token.
    assert policy.capacity()[0].uplink_used_kbps == 0 and policy.get(req(1).key) is None


def test_a_final_during_a_lock_is_journaled_and_the_session_goes_on(
    db: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    policy, ledger = boot(db, config, tokens)
    ledger.failing = True
    assert isinstance(policy.final(req(1), 0.0, wall=WALL), Grant)
    ledger.failing = False
    policy.handle_timer(1.0)
    assert [r.key for r in SqliteLedger(open_region_db(db)).load_all()] == [req(1).key]


def test_a_change_neither_database_nor_journal_takes_changes_nothing(
    db: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    policy, ledger = boot(db, config, tokens, journal=BrokenJournal(f"{db}.journal"))
    key = req(1).key
    policy.final(req(1), 0.0, wall=WALL)
    ledger.failing = True
    with pytest.raises(LedgerUnavailable):
        policy.activate(key, 1.0, 90)
    res = policy.get(key)
    assert res is not None and res.state is ReservationState.RESERVED  # memory did not run ahead
    # An end is never refused: it waits in memory, keeps the capacity, and is retried until it commits.
    policy.release(key, 2.0, EndReason.BYE_LOCAL)
    assert not policy.is_idle()
    ledger.failing = False
    when = policy.get_timer()
    assert when is not None
    policy.handle_timer(when)
    assert policy.is_idle()
    [row] = read_rows(open_region_db(db))
    assert row.end_reason == "bye-local" and row.t_stop == WALL + 2.0


def test_each_session_is_its_own_record_and_a_used_key_is_refused(
    db: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    policy, _ = boot(db, config, tokens)
    key = req(1).key
    policy.final(req(1), 0.0, wall=WALL)
    policy.activate(key, 1.0, 90)
    policy.release(key, 10.0, EndReason.BYE_LOCAL)
    # The same key again soon after (a replayed 2xx): refused, billed as nothing new, holds nothing.
    replay = policy.final(req(1), 20.0, wall=WALL + 20)
    assert not isinstance(replay, Grant) and policy.is_idle()
    # Much later a new session reuses Call-ID and To-tag (a broken client): a second record, not merged.
    assert isinstance(policy.final(req(1), 1000.0, wall=WALL + 1000), Grant)
    policy.activate(key, 1001.0, 90)
    policy.release(key, 1031.0, EndReason.BYE_LOCAL)
    rows = read_rows(open_region_db(db))
    assert [(r.end_reason, r.duration_s) for r in rows] == [("bye-local", 10.0), ("bye-local", 31.0)]
    assert len({r.uid for r in rows}) == 2


def test_one_final_per_invite_and_a_cap_per_player(
    db: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    policy, _ = boot(db, config, tokens)
    assert isinstance(policy.final(req(1, up=10, down=10, ip="10.2.0.1"), 0.0), Grant)
    # A second 2xx of the same INVITE (another To-tag) gets no second reservation.
    forked = policy.final(req(1, up=10, down=10, ip="10.2.0.1", to_tag="other"), 0.1)
    assert not isinstance(forked, Grant) and "one reservation per INVITE" in forked.reason
    for n in (2, 3, 4):
        assert isinstance(policy.final(req(n, up=10, down=10, ip="10.2.0.1"), 0.2), Grant)
    capped = policy.final(req(5, up=10, down=10, ip="10.2.0.1"), 0.3)
    assert not isinstance(capped, Grant) and "limit 4" in capped.reason
    assert len(policy.reservations()) == 4


def test_a_wall_clock_step_changes_neither_deadlines_nor_durations(
    db: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]
) -> None:
    policy, _ = boot(db, config, tokens)
    key = req(1).key
    policy.final(req(1), 100.0, wall=WALL)
    policy.activate(key, 101.0, 90)
    # The wall clock steps back an hour here; the core never reads it, and FINALs of other sessions carry it.
    policy.final(req(2, ip="10.2.0.1"), 130.0, wall=WALL + 30 - 3600)
    assert policy.handle_timer(160.0) == []  # the lease (101 + 90 + 32) is monotonic: nothing expired
    policy.release(key, 161.0, EndReason.BYE_LOCAL)
    row = next(r for r in read_rows(open_region_db(db)) if r.call_id == key.call_id)
    assert row.t_start is not None and row.t_stop is not None and row.t_stop > row.t_start
    assert (row.t_stop - WALL, row.duration_s) == (61.0, 61.0)
