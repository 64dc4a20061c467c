"""A 2xx's FINAL rows written on the signalling loop when the database takes them at once (server/policy/worker.py
``decide_inline``, ``FinalBatch.commit_now``, ``SqliteLedger.commit_many_now``), handed to the policy's thread only
when it cannot: a locked database never blocks the loop, the writes keep their order, WAL checkpoints run on the
thread and the WAL stays bounded.

The tests fail on counts and on the order of events, never on time: a loop that waited for a lock would still get
its answer, after the lock was let go, which the tests see.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from server.hooks import QueryAnswer
from server.policy import PolicyConfig, PolicyServer
from server.policy import ledger as ledger_module
from server.policy.ledger import SqliteLedger
from server.policy.model import Grant, Side
from server.policy.queries import PolicyCall
from server.policy.runner import WRITE_BUSY_TIMEOUT_S, build_policy_server
from server.policy.worker import PolicyWorker

from .conftest import REGION, CollectedInbox, make_request

#: Longest another connection holds the database locked in these tests: a loop that waited for it would get its
#: write in afterwards, so the test fails on the order of events, not on a timeout.
LOCK_S = 3.0

Items = list[tuple[Any, tuple[PolicyCall, ...], float, float]]


def _policy(path: Path) -> PolicyServer:
    """The SIP server's embedded policy as ``make_policy_hooks`` builds it: the thread's connection (busy wait
    ``WRITE_BUSY_TIMEOUT_S``, then the journal next to the file) and the loop's own connection."""
    counter = iter(range(1, 100_000))
    return build_policy_server(PolicyConfig.from_mapping(REGION), path, region="eu",
                               token_factory=lambda: f"{next(counter):032x}", loop_writes=True)


def _ledger(policy: PolicyServer) -> SqliteLedger:
    ledger = policy._ledger
    assert isinstance(ledger, SqliteLedger)
    return ledger


def _call(k: int) -> Items:
    """Call ``k`` at one server with both players: its INVITE's check, then its 2xx with both sides' FINALs."""
    callee = make_request(k, ip="10.2.0.9", side=Side.TERM, player=f"sip:bob{k}@eu.example", up=10, down=10)
    caller = make_request(k, ip="10.2.0.7", player=f"sip:alice{k}@eu.example", up=10, down=10)
    return [(f"invite-{k}", (PolicyCall("preliminary", request=caller),), 1.0 + k, 1_000.0 + k),
            (f"2xx-{k}", (PolicyCall("final", request=callee), PolicyCall("final", request=caller)),
             1.5 + k, 1_000.5 + k)]



def _decide_when_free(worker: PolicyWorker, items: Items, inbox: CollectedInbox) -> tuple[list[QueryAnswer], int]:
    """``worker.decide_inline`` once the thread has let go of its lock: right after a wake-up (its start, a grant's
    timer the loop armed, a job) the thread briefly holds it, and decide_inline then decides nothing and hands
    nothing over (the driver would submit the queries to the thread); these tests are about an idle thread."""
    for _ in range(500):  # bounded (~5 s)
        answers, handed = worker.decide_inline(items, inbox)  # type: ignore[arg-type]
        if answers or handed:
            break
        threading.Event().wait(0.01)
    return answers, handed


def _trace_inserts(conn: sqlite3.Connection, into: list[tuple[str, str]], *,
                   gate: threading.Event | None = None, writing: threading.Event | None = None) -> None:
    """Record (thread, statement verb) of each INSERT on ``conn``; with ``gate``, an INSERT waits for it."""
    def trace(sql: str) -> None:
        verb = sql.split(" ", 1)[0].upper()
        if verb != "INSERT":
            return
        into.append((threading.current_thread().name, sql))
        if writing is not None:
            writing.set()
        if gate is not None:
            gate.wait(LOCK_S)

    conn.set_trace_callback(trace)


def _rows(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute("SELECT call_id, side FROM policy_reservations").fetchall())


def test_with_the_thread_idle_a_calls_rows_are_written_on_the_loop_without_any_hand_over(tmp_path: Path) -> None:
    """Two calls' checks and 2xx queries at an idle thread: all four answered by the caller (the loop) at once, the
    two 2xx's rows written there in one statement each, no job for the thread and no wake-up of it. Before: the
    first 2xx's rows went to the thread as a job (and the queries after it with it)."""
    db = tmp_path / "eu.sqlite3"
    policy = _policy(db)
    ledger = _ledger(policy)
    inserts: list[tuple[str, str]] = []
    _trace_inserts(ledger.connection, inserts)
    assert ledger.loop_connection is not None
    _trace_inserts(ledger.loop_connection, inserts)
    worker = PolicyWorker(lambda: policy, clock=lambda: 0.0)
    inbox = CollectedInbox()
    try:
        answers, handed = _decide_when_free(worker, [*_call(0), *_call(1)], inbox)
        rows_then = _rows(db)
    finally:
        assert worker.close_now(5.0)
    assert handed == 0 and len(answers) == 4
    assert [[type(d) for d in a.results] for a in answers] == [[Grant], [Grant, Grant]] * 2
    assert len(rows_then) == 4  # in the database before the answers were returned
    assert worker.batches == 0 and worker.written_inline == 2 and worker.decided_inline == 0
    assert not inbox.arrived.is_set()
    assert [name for name, _ in inserts] == ["MainThread", "MainThread"]
    assert ledger.loop_written == 2 and ledger.loop_refused == 0
    assert policy.stats["granted"] == 4


def test_a_locked_database_makes_the_loop_hand_the_rows_over_instead_of_waiting(tmp_path: Path) -> None:
    """Another connection holds the write lock: the loop's write is refused at once (busy timeout 0) and the rows go
    to the thread, which waits and journals as ever (the grant durable in the journal). The caller got its answer
    back while the lock was still held: it never waited for it (with a busy wait on the loop's connection it would
    have written once the lock was let go, after LOCK_S)."""
    db = tmp_path / "eu.sqlite3"
    policy = _policy(db)
    ledger = _ledger(policy)
    worker = PolicyWorker(lambda: policy, clock=lambda: 0.0)
    inbox = CollectedInbox()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write lock on the region database
    let_go = threading.Event()

    def unlock_later() -> None:
        let_go.wait(LOCK_S)
        let_go.set()

    unlocker = threading.Thread(target=unlock_later)
    unlocker.start()
    try:
        answers, handed = _decide_when_free(worker, _call(0), inbox)
        locked_at_return = not let_go.is_set()
        assert inbox.arrived.wait(5.0)  # the thread waited WRITE_BUSY_TIMEOUT_S, then journaled
        locked_at_answer = not let_go.is_set()
    finally:
        let_go.set()
        unlocker.join()
        other.execute("ROLLBACK")
        other.close()
        assert worker.close_now(5.0)
    assert locked_at_return and locked_at_answer
    assert WRITE_BUSY_TIMEOUT_S < LOCK_S
    assert len(answers) == 1 and handed == 1
    assert ledger.loop_refused == 1 and ledger.loop_written == 0
    [(key, answer)] = inbox.items
    assert key == "2xx-0" and [type(d) for d in answer.results] == [Grant, Grant]
    assert policy.stats["journaled"] == 2 and policy.pending_writes == 2  # durable in the journal, retried


def test_the_loop_writes_nothing_while_the_thread_has_work_and_the_order_is_kept(tmp_path: Path) -> None:
    """The loop's write of call 0 is refused (the database locked for a moment) and handed to the thread, whose write
    is slow: call 1's 2xx, arriving with the lock let go, is not written on the loop while the thread still holds
    call 0's rows (nothing decided there at all); once the thread is idle, call 2's rows are written on the loop.
    In the database: call 0, then 1 (both by the thread, in order), then 2."""
    db = tmp_path / "eu.sqlite3"
    policy = _policy(db)
    ledger = _ledger(policy)
    inserts: list[tuple[str, str]] = []
    gate, writing = threading.Event(), threading.Event()
    _trace_inserts(ledger.connection, inserts, gate=gate, writing=writing)
    assert ledger.loop_connection is not None
    _trace_inserts(ledger.loop_connection, inserts)
    worker = PolicyWorker(lambda: policy, clock=lambda: 0.0)
    inbox = CollectedInbox()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        answers0, handed0 = _decide_when_free(worker, _call(0), inbox)
        other.execute("ROLLBACK")
        assert writing.wait(5.0)  # the thread writes call 0's rows (slowly)
        assert worker.decide_inline(_call(1), inbox) == ([], 0)  # type: ignore[arg-type]
        assert worker.submit_many(_call(1), inbox) == 2  # type: ignore[arg-type]  # as the driver does
        gate.set()
        assert worker.wait_idle(5.0)
        answers2, handed2 = _decide_when_free(worker, _call(2), inbox)
    finally:
        gate.set()
        other.close()
        assert worker.close_now(5.0)
    assert (len(answers0), handed0) == (1, 1) and (len(answers2), handed2) == (2, 0)
    assert [key for key, _ in inbox.items] == ["2xx-0", "invite-1", "2xx-1"]
    # The loop's attempt the lock refused (traced as it starts), then the thread's two writes, then the loop's.
    assert [name for name, _ in inserts] == ["MainThread", "gamesdk-policy", "gamesdk-policy", "MainThread"]
    written = [sql.split("'")[1] for _, sql in inserts]  # the expanded statements' first Call-ID
    assert written == [make_request(k).call_id for k in (0, 0, 1, 2)]
    assert ledger.loop_refused == 1 and ledger.loop_written == 1
    assert len(_rows(db)) == 6


def test_wal_checkpoints_run_on_the_thread_and_the_wal_stays_bounded(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's connection never checkpoints (wal_autocheckpoint 0): every LOOP_ROWS_PER_CHECKPOINT rows it wrote,
    a write is left to the thread, which checkpoints first. Over many calls the WAL stays within the pages of the
    writes between two checkpoints; with the loop writing everything and nobody checkpointing it would hold every
    call's pages."""
    every = 8  # rows: four calls (two rows each) on the loop, then one on the thread
    monkeypatch.setattr(ledger_module, "LOOP_ROWS_PER_CHECKPOINT", every)
    db = tmp_path / "eu.sqlite3"
    policy = _policy(db)
    ledger = _ledger(policy)
    assert ledger.loop_connection is not None
    [(autocheckpoint,)] = ledger.loop_connection.execute("PRAGMA wal_autocheckpoint").fetchall()
    assert autocheckpoint == 0
    checkpoints: list[str] = []
    ledger.connection.set_trace_callback(
        lambda sql: checkpoints.append(threading.current_thread().name) if "wal_checkpoint" in sql else None)
    ledger.loop_connection.set_trace_callback(
        lambda sql: checkpoints.append("loop") if "wal_checkpoint" in sql else None)
    page = ledger.connection.execute("PRAGMA page_size").fetchone()[0]
    wal = Path(f"{db}-wal")
    worker = PolicyWorker(lambda: policy, clock=lambda: 0.0)
    calls = 40 * every
    cycle = every // 2 + 1  # calls per checkpoint: written on the loop, then one handed to the thread
    first = 0  # the WAL's size at the first checkpoint: the schema's pages from start-up, the first calls'
    largest = 0
    handed_over = 0
    try:
        for k in range(calls):
            inbox = CollectedInbox()
            answers, handed = _decide_when_free(worker, _call(k), inbox)
            assert len(answers) + handed == 2
            if handed:
                handed_over += 1
                assert inbox.arrived.wait(5.0)
                assert worker.wait_idle(5.0)
            largest = max(largest, wal.stat().st_size)
            first = first or (largest if handed else 0)
    finally:
        assert worker.close_now(5.0)
    assert len(_rows(db)) == 2 * calls
    # A call's two rows are a few pages of the WAL (the table's leaf, its two indexes' leaves, a parent now and
    # then): after the first checkpoint the WAL restarts at each one and its file holds at most the pages of the
    # calls between two, far below all the calls' pages.
    frame = page + 24
    bound = max(first, 32 + (cycle + 1) * 12 * frame)
    assert largest <= bound, (largest, bound)
    assert calls * 3 * frame > 4 * bound  # without the checkpoints the WAL would pass the bound
    assert handed_over == calls // cycle and ledger.checkpoints == handed_over
    assert checkpoints == ["gamesdk-policy"] * handed_over  # never on the loop


def test_a_grant_written_on_the_loop_arms_the_threads_timer(tmp_path: Path) -> None:
    """The thread runs the policy's timers but no job tells it of a grant the loop made and wrote: the loop wakes it
    when the new confirm deadline comes before the one it waits for (here: it waits for none), and the deadline
    fires on the thread (released, billed not-established). Before the wake-up the thread slept on, its timer
    unread, and the reservation stayed held."""
    db = tmp_path / "eu.sqlite3"
    policy = _policy(db)
    worker = PolicyWorker(lambda: policy, clock=lambda: 1_000.0)  # the calls' deadlines (2xx + 32 s) have passed
    inbox = CollectedInbox()
    try:
        assert worker.wait_idle(5.0)
        answers, handed = _decide_when_free(worker, _call(0), inbox)
        assert (len(answers), handed) == (2, 0) and worker.batches == 1  # (wait_idle's job only)
        released = threading.Event()
        for _ in range(500):  # bounded (~5 s)
            if policy.stats["released"] == 2:
                released.set()
                break
            threading.Event().wait(0.01)
    finally:
        assert worker.close_now(5.0)
    assert released.is_set(), policy.stats
    assert worker.batches == 1  # woken for its timer, no job
    assert _rows(db) == []
