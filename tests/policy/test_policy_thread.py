"""The embedded policy's writes never run on the signalling loop (server/policy/worker.py).

The region database is locked by another process and the disk stalls the policy's journal fsync while a session
is being set up: the region must go on answering OPTIONS and a third player's login meanwhile, and the session
completes and is billed once the disk is back. The test fails on order, not on time: a region that wrote on its
loop could answer only after the stalled fsync returned.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from gamesdk import ClientConfig, GameClient, GameSession, SessionError
from server.hooks import QueryAnswer
from server.policy import PolicyServer
from server.policy.cli_support import billing_rows
from server.policy.ledger import FileJournal, SqliteLedger
from server.policy.model import Grant, ReservationState, Side
from server.policy.queries import PolicyCall
from server.policy.store import open_region_db
from server.policy.worker import PolicyWorker

from .conftest import REGION, CollectedInbox, make_request
from .test_deferred_verdict import _options
from .test_region_hooks import DOMAINS, Region, run

#: Longest the disk stalls: a region that waited for it still answers afterwards, so the test fails on the order
#: of events (answered while stalled, or not), not on a timeout.
STALL_S = 6.0


class _StalledDisk:
    """An fsync that blocks the first time it is called until ``release`` (at most ``STALL_S``)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()

    def __call__(self, fd: int) -> None:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(STALL_S)
            self.returned.set()
        os.fsync(fd)


def test_a_locked_database_and_a_stalled_disk_delay_only_the_session_that_writes(tmp_path: Path) -> None:
    disk = _StalledDisk()
    seen_while_stalled: list[str] = []

    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        policy = eu.policy
        journal = policy._journal
        assert isinstance(journal, FileJournal)
        journal._fsync = disk
        eu.server.add_user("carol", "carol-pw")
        locker = sqlite3.connect(eu.server.config.database, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the region database
        try:
            async def answer() -> GameSession:
                return await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            invite = asyncio.create_task(alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64))
            loop = asyncio.get_running_loop()
            # alice's FINAL (the 2xx at eu) finds the database locked and journals: its fsync stalls.
            assert await loop.run_in_executor(None, disk.entered.wait, 10.0), "the FINAL never reached the disk"
            try:
                reply = await _options(eu.server.address)
                if not disk.returned.is_set() and reply.startswith(b"SIP/2.0 200"):
                    seen_while_stalled.append("OPTIONS")
                carol = GameClient(ClientConfig(username="carol", password="carol-pw", domain=DOMAINS["eu"],
                                                server=eu.server.address))
                await carol.login()  # REGISTER, 401, REGISTER with digest, 200
                if not disk.returned.is_set():
                    seen_while_stalled.append("REGISTER")
                await carol.close()
            finally:
                disk.release.set()
            session = await invite
            await callee
            assert {r.region for r in session.agreement.reservations} == {"eu.gamesdk.test", "na.gamesdk.test"}
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        await eu.until(lambda p: any(r.state is ReservationState.ACTIVE for r in p.reservations()), "START at eu")
        await session.end("game over")
        for _ in range(1000):  # bounded (~10 s): the journaled changes reach the database on the retry backoff
            if policy.is_idle():
                break
            await asyncio.sleep(0.01)
        assert policy.is_idle()
        assert policy.stats["journaled"] >= 1  # the FINAL really went through the stalled journal
        # eu's loop tried the FINAL's rows on its own connection first: refused at once by the lock, never waited.
        assert getattr(policy._ledger, "loop_refused", 0) >= 1

    run(tmp_path, scenario)
    assert seen_while_stalled == ["OPTIONS", "REGISTER"]
    [row] = billing_rows(tmp_path / "eu.sqlite3")
    assert row.t_start is not None and row.end_reason == "bye-local"
    journal_file = Path(f"{tmp_path / 'eu.sqlite3'}.journal")
    assert not journal_file.exists() or journal_file.stat().st_size == 0


def test_a_full_policy_queue_answers_the_invite_503_with_retry_after(tmp_path: Path) -> None:
    """Back-pressure: with no room in the policy thread's queue an INVITE is answered at once 503 (+ Retry-After),
    nothing is reserved, and the region stays usable."""
    refused: list[SessionError] = []

    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        worker = eu.hooks.worker
        assert worker is not None
        worker.max_queued = 0
        with pytest.raises(SessionError) as caught:
            await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
        refused.append(caught.value)
        assert worker.refused >= 1 and eu.policy.is_idle()
        reply = await _options(eu.server.address)
        assert reply.startswith(b"SIP/2.0 200")

    run(tmp_path, scenario)
    [error] = refused
    assert error.status == 503
    assert billing_rows(tmp_path / "eu.sqlite3") == []


def _policy(path: Path) -> PolicyServer:
    from server.policy import PolicyConfig

    config = PolicyConfig.from_mapping(REGION)
    counter = iter(range(1, 1000))
    return PolicyServer(config, token_factory=lambda: f"{next(counter):032x}", region="eu",
                        ledger=SqliteLedger(open_region_db(path, check_same_thread=False), config.tariff))


def test_a_query_that_waited_is_recorded_at_its_own_time_and_timers_run_on_the_thread(tmp_path: Path) -> None:
    """A FINAL queued behind a slow job is recorded at the time its 2xx arrived, not when the thread got to it; the
    confirm deadline then fires on the policy thread (no loop drives it) and the capacity comes back."""
    policy = _policy(tmp_path / "eu.sqlite3")
    clock = [100.0]
    worker = PolicyWorker(lambda: policy, clock=lambda: clock[0])
    gate = threading.Event()
    answers: list[QueryAnswer] = []
    answered = threading.Event()
    try:
        assert worker.post(lambda _: gate.wait(5.0))  # a slow write ahead of it
        request = make_request(1, ip="10.2.0.9")

        def done(answer: QueryAnswer) -> None:
            answers.append(answer)
            answered.set()

        assert worker.submit((PolicyCall("final", request=request),), 100.0, 1_000_000.0, done)
        clock[0] = 140.0  # the thread is 40 s late (past the 32 s confirm deadline of an event at 100)
        gate.set()
        assert answered.wait(5.0)
        [grant] = answers[0].results
        assert isinstance(grant, Grant)
        assert worker.wait_idle(5.0)
        # The deadline (2xx + 32 s) had passed by the thread's clock: released there, capacity back.
        worker.post(lambda _: None)
        assert worker.wait_idle(5.0)
        assert policy.is_idle()
    finally:
        assert worker.close_now(5.0)
    [row] = billing_rows(tmp_path / "eu.sqlite3")
    assert row.t_2xx == 1_000_000.0  # the 2xx's own time
    assert row.end_reason == "not-established"
    assert row.duration_s == pytest.approx(32.0)  # held from the 2xx to its deadline, not to when it was processed


def test_the_worker_refuses_beyond_its_bound_and_answers_in_order(tmp_path: Path) -> None:
    policy = _policy(tmp_path / "eu.sqlite3")
    worker = PolicyWorker(lambda: policy, max_queued=2)
    gate, running = threading.Event(), threading.Event()
    order: list[Any] = []
    try:
        assert worker.post(lambda _: (running.set(), gate.wait(5.0)))
        assert running.wait(5.0)  # the thread is busy: what follows waits in the queue
        for n in (1, 2):
            assert worker.submit((PolicyCall("preliminary", request=make_request(n, ip="10.2.0.9")),), 1.0, 1.0,
                                 lambda a, n=n: order.append(n))
        # The queue holds two: the next is refused at once (the driver answers "policy service busy").
        assert not worker.submit((PolicyCall("preliminary", request=make_request(3)),), 1.0, 1.0, order.append)
        assert not worker.post(lambda _: None)
        assert worker.refused == 2
        gate.set()
        assert worker.wait_idle(5.0)
        assert order == [1, 2]
    finally:
        assert worker.close_now(5.0)
    assert not worker.submit((), 1.0, 1.0, order.append)  # closed: refused, never left waiting


def test_queries_handed_over_together_come_back_in_one_wake_up_of_the_loop(tmp_path: Path) -> None:
    """Three batches of queries queued while the thread is busy are taken in one wake-up of the thread; their six
    answers reach the loop in order through one call_soon_threadsafe, not one per answer."""
    policy = _policy(tmp_path / "eu.sqlite3")
    worker = PolicyWorker(lambda: policy)

    async def scenario() -> tuple[list[list[tuple[Any, QueryAnswer]]], int]:
        loop = asyncio.get_running_loop()
        batches: list[list[tuple[Any, QueryAnswer]]] = []
        got = asyncio.Event()

        def handle(items: list[tuple[Any, QueryAnswer]]) -> None:
            batches.append(items)
            got.set()

        inbox = worker.inbox(loop, handle)
        gate, running = threading.Event(), threading.Event()
        assert worker.post(lambda _: (running.set(), gate.wait(5.0)))
        assert await loop.run_in_executor(None, running.wait, 5.0)
        keys = iter(range(6))
        for _ in range(3):
            items = [(k, (PolicyCall("preliminary", request=make_request(k, ip="10.2.0.9")),), 1.0, 1.0)
                     for k in (next(keys), next(keys))]
            assert worker.submit_many(items, inbox) == 2  # type: ignore[arg-type]
        gate.set()
        await asyncio.wait_for(got.wait(), 5.0)
        assert await loop.run_in_executor(None, worker.wait_idle, 5.0)
        await asyncio.sleep(0)  # a second wake-up, had there been one, would have run by now
        return batches, inbox.wakeups

    try:
        batches, wakeups = asyncio.run(scenario())
    finally:
        assert worker.close_now(5.0)
    assert wakeups == 1
    [items] = batches
    assert [key for key, _ in items] == [0, 1, 2, 3, 4, 5]
    assert all(answer.error is None and len(answer.results) == 1 for _, answer in items)


def test_answers_put_while_the_loop_has_not_taken_the_previous_ones_join_them() -> None:
    async def scenario() -> tuple[list[list[tuple[Any, QueryAnswer]]], int]:
        batches: list[list[tuple[Any, QueryAnswer]]] = []
        inbox = PolicyWorker.inbox(asyncio.get_running_loop(), batches.append)
        inbox.put_many([("a", QueryAnswer())])
        inbox.put_many([("b", QueryAnswer()), ("c", QueryAnswer())])  # the loop has not run yet: no second wake-up
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        inbox.put_many([("d", QueryAnswer())])  # taken already: a new wake-up
        await asyncio.sleep(0)
        return batches, inbox.wakeups

    batches, wakeups = asyncio.run(scenario())
    assert [[key for key, _ in batch] for batch in batches] == [["a", "b", "c"], ["d"]]
    assert wakeups == 2


def test_a_batch_beyond_the_bound_is_queued_up_to_it(tmp_path: Path) -> None:
    """submit_many queues the first queries the bound has room for; the driver answers the rest "busy"."""
    policy = _policy(tmp_path / "eu.sqlite3")
    worker = PolicyWorker(lambda: policy, max_queued=3)
    gate, running = threading.Event(), threading.Event()
    answered: list[Any] = []

    class _Inbox:
        def put_many(self, items: list[tuple[Any, QueryAnswer]]) -> None:
            answered.extend(key for key, _ in items)

    try:
        assert worker.post(lambda _: (running.set(), gate.wait(5.0)))
        assert running.wait(5.0)
        items = [(k, (PolicyCall("preliminary", request=make_request(k, ip="10.2.0.9")),), 1.0, 1.0)
                 for k in range(5)]
        assert worker.submit_many(items, _Inbox()) == 3  # type: ignore[arg-type]
        assert worker.refused == 2
        assert worker.submit_many(items[3:], _Inbox()) == 0  # type: ignore[arg-type]  # still full
        gate.set()
        assert worker.wait_idle(5.0)
        assert answered == [0, 1, 2]
    finally:
        assert worker.close_now(5.0)
    assert worker.submit_many(items, _Inbox()) == 0  # type: ignore[arg-type]  # closed


def test_a_failing_answer_does_not_strand_the_others_of_its_batch() -> None:
    """The driver resumes a batch of the thread's answers in one callback: one that raises is logged and the next
    ones are still handed to the node (one callback per answer gave that for free)."""
    from server.hooks import PolicyQuery
    from server.io import ServerProtocol

    resumed: list[str] = []

    class _Node:
        def __init__(self) -> None:
            self.queries: list[Any] = []

        def answer_query(self, query: PolicyQuery[Any], answer: QueryAnswer, now: float) -> list[Any]:
            if query.purpose == "broken":
                raise ValueError("a bug in a resumption")
            resumed.append(query.purpose)
            return []

        def get_timer(self) -> None:
            return None

    async def scenario() -> None:
        protocol = ServerProtocol(_Node(), asyncio.get_running_loop())  # type: ignore[arg-type]
        batch = [(PolicyQuery(calls=(), finish=lambda a: a, purpose=name), QueryAnswer())
                 for name in ("first", "broken", "last")]
        protocol._answered_from_thread(batch)

    asyncio.run(scenario())
    assert resumed == ["first", "last"]


def test_every_query_of_a_job_is_answered_even_when_the_backend_cannot_be_had() -> None:
    """The driver keeps new queries while a job is with the thread until its answers come back: a job whose
    backend lookup raises (a bug) still answers each of its queries, with the error."""
    def no_backend() -> Any:
        raise RuntimeError("no policy")

    worker = PolicyWorker(no_backend)
    answered: list[tuple[Any, QueryAnswer]] = []
    done = threading.Event()

    class _Inbox:
        def put_many(self, items: list[tuple[Any, QueryAnswer]]) -> None:
            answered.extend(items)
            done.set()

    try:
        items = [(k, (PolicyCall("preliminary", request=make_request(k, ip="10.2.0.9")),), 1.0, 1.0)
                 for k in range(2)]
        assert worker.submit_many(items, _Inbox()) == 2  # type: ignore[arg-type]
        assert done.wait(5.0)
    finally:
        assert worker.close_now(5.0)
    assert [key for key, _ in answered] == [0, 1]
    assert all(answer.error for _, answer in answered)


def _job(n: int) -> list[tuple[Any, tuple[PolicyCall, ...], float, float]]:
    """The queries of ``n`` calls at one server as they reach the thread in one job: each call's INVITE check, then
    its 2xx with both sides' FINALs, each query with the times its message arrived (players of their own, a
    small share of the network each: all granted)."""
    items: list[tuple[Any, tuple[PolicyCall, ...], float, float]] = []
    for k in range(n):
        callee = make_request(k, ip="10.2.0.9", side=Side.TERM, player=f"sip:bob{k}@eu.example", up=10, down=10)
        caller = make_request(k, ip="10.2.0.7", player=f"sip:alice{k}@eu.example", up=10, down=10)
        items.append((f"invite-{k}", (PolicyCall("preliminary", request=caller),), 1.0 + k, 1_000.0 + k))
        items.append((f"2xx-{k}", (PolicyCall("final", request=callee), PolicyCall("final", request=caller)),
                      1.5 + k, 1_000.5 + k))
    return items


def _run_job(tmp_path: Path, items: list[tuple[Any, tuple[PolicyCall, ...], float, float]],
             ) -> tuple[list[tuple[Any, QueryAnswer]], list[str], PolicyServer]:
    policy = _policy(tmp_path / "eu.sqlite3")
    statements: list[str] = []
    policy._ledger.connection.set_trace_callback(  # type: ignore[attr-defined]
        lambda sql: statements.append(sql.split(" ", 1)[0].upper()))
    worker = PolicyWorker(lambda: policy, clock=lambda: 0.0)  # the confirm deadlines not due meanwhile
    answered: list[tuple[Any, QueryAnswer]] = []
    done = threading.Event()

    class _Inbox:
        def put_many(self, got: list[tuple[Any, QueryAnswer]]) -> None:
            answered.extend(got)
            done.set()

    try:
        assert worker.submit_many(items, _Inbox()) == len(items)  # type: ignore[arg-type]
        assert done.wait(5.0)
    finally:
        assert worker.close_now(5.0)
    return answered, statements, policy


def test_the_final_rows_of_a_thread_wake_up_are_one_statement(tmp_path: Path) -> None:
    """Four calls' queries in one job: their eight FINAL rows are one INSERT, not one per 2xx (each statement hands
    the GIL to the busy loop and back, twice: the futex calls and context switches of eu per call). Before: four
    INSERTs."""
    answered, statements, policy = _run_job(tmp_path, _job(4))
    assert [key for key, _ in answered] == [k for k, _, _, _ in _job(4)]  # in order
    assert all(isinstance(d, Grant) for _, answer in answered for d in answer.results)
    assert [len(answer.results) for _, answer in answered] == [1, 2] * 4
    assert statements.count("INSERT") == 1, statements
    assert sorted({r.t_2xx for r in policy._ledger.load_all()}) == [1_000.5, 1_001.5, 1_002.5, 1_003.5]  # type: ignore[attr-defined]


def test_a_write_in_the_job_has_the_final_rows_before_it_written_first(tmp_path: Path) -> None:
    """A release between two 2xx queries: the first call's rows are written before it, the second's after."""
    items = _job(2)
    release = ("bye", (PolicyCall("release_player", player="sip:carol@eu.example"),), 2.2, 1_001.2)
    answered, statements, _ = _run_job(tmp_path, [*items[:2], release, *items[2:]])
    assert [key for key, _ in answered] == ["invite-0", "2xx-0", "bye", "invite-1", "2xx-1"]
    assert statements.count("INSERT") == 2


def test_a_wake_up_with_more_rows_than_one_statement_takes_writes_them_a_statement_at_a_time(tmp_path: Path) -> None:
    """Under load the thread's job holds up to 64 queries: 40 calls' 80 FINAL rows are two statements, each atomic by
    itself, not one transaction with a statement per row (before: BEGIN, 80 INSERTs, COMMIT)."""
    from server.policy.core import FINAL_BATCH_ROWS
    from server.policy.store import WRITE_MANY_MAX

    assert FINAL_BATCH_ROWS <= WRITE_MANY_MAX
    answered, statements, policy = _run_job(tmp_path, _job(40))
    assert len(answered) == 80 and all(isinstance(d, Grant) for _, a in answered for d in a.results)
    assert statements.count("INSERT") == 2 and "BEGIN" not in statements, statements
    assert len(policy._ledger.load_all()) == 80  # type: ignore[attr-defined]


def test_a_check_is_answered_on_the_loop_only_while_the_thread_is_idle(tmp_path: Path) -> None:
    """The INVITE's PRELIMINARY only reads the policy: answered by the caller at once when the thread has nothing
    queued or running (no hand-over, no wake-up of the thread); a FINAL (a write) never; nothing while the thread
    runs a job or one is queued (the caller then hands it over, in order)."""
    policy = _policy(tmp_path / "eu.sqlite3")
    worker = PolicyWorker(lambda: policy, clock=lambda: 0.0)
    check = (PolicyCall("preliminary", request=make_request(1, ip="10.2.0.7")),)
    final = (PolicyCall("final", request=make_request(1, ip="10.2.0.7")),)
    gate, running = threading.Event(), threading.Event()
    try:
        answer = worker.answer_inline(check, 1.0, 1_000.0)
        assert answer is not None and isinstance(answer.results[0], Grant)
        assert worker.answered_inline == 1 and policy.stats["preliminary"] == 1
        assert worker.answer_inline(final, 1.0, 1_000.0) is None
        assert worker.post(lambda _: (running.set(), gate.wait(5.0)))
        assert running.wait(5.0)
        assert worker.answer_inline(check, 2.0, 1_001.0) is None  # a job is running
        assert worker.post(lambda _: None)
        gate.set()
        assert worker.wait_idle(5.0)
        assert worker.answer_inline(check, 3.0, 1_002.0) is not None  # idle again
        assert worker.answer_inline(("not a call",), 3.0, 1_002.0) is None
    finally:
        gate.set()
        assert worker.close_now(5.0)
    assert worker.answer_inline(check, 4.0, 1_003.0) is None  # closed
    assert policy.stats["preliminary"] == 2 and policy.stats["final"] == 0



def _locked_by_another(path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write lock on the region database
    return other


def test_a_2xx_is_decided_on_the_loop_and_only_its_rows_write_goes_to_the_thread(tmp_path: Path) -> None:
    """decide_inline (thread idle): the INVITE's check answered at once, the 2xx's two FINALs decided and held by the
    caller (the loop) without waiting for the slow database; the thread only writes the rows (one statement), and
    the grants are answered once the rows are in the database, never before. Before: the FINAL's whole Python ran
    on the policy thread (the GIL handed back and forth for it)."""
    policy = _policy(tmp_path / "eu.sqlite3")
    writers: list[tuple[str, str]] = []
    writing, gate = threading.Event(), threading.Event()

    def trace(sql: str) -> None:  # a slow database: the thread's write waits for the gate
        verb = sql.split(" ", 1)[0].upper()
        writers.append((threading.current_thread().name, verb))
        if verb == "INSERT":
            writing.set()
            gate.wait(5.0)

    policy._ledger.connection.set_trace_callback(trace)  # type: ignore[attr-defined]
    worker = PolicyWorker(lambda: policy, clock=lambda: 0.0)
    inbox = CollectedInbox()
    try:
        answers, handed = worker.decide_inline(_job(1), inbox)  # type: ignore[arg-type]
        assert len(answers) == 1 and isinstance(answers[0].results[0], Grant) and handed == 1
        # Decided here (both sides held); not answered while the write is under way.
        assert policy.stats["final"] == 2 and len(policy.reservations()) == 2
        assert worker.answered_inline == 1 and worker.decided_inline == 1
        assert writing.wait(5.0) and not inbox.arrived.is_set()
        gate.set()
        assert inbox.arrived.wait(5.0)
    finally:
        gate.set()
        assert worker.close_now(5.0)
    assert [key for key, _ in inbox.items] == ["2xx-0"]
    assert [type(d) for d in inbox.items[0][1].results] == [Grant, Grant]
    assert len(policy._ledger.load_all()) == 2  # type: ignore[attr-defined]
    inserts = [name for name, verb in writers if verb == "INSERT"]
    assert inserts == ["gamesdk-policy"], writers


def test_a_2xx_decided_on_the_loop_whose_write_is_refused_takes_the_journal_path(tmp_path: Path) -> None:
    """The database refuses the rows of FINALs decided on the loop: the thread lets go of their reservations and
    decides the query again through the journal path; with no journal either, refused with the capacity free."""
    db = tmp_path / "eu.sqlite3"
    policy = _policy(db)
    policy._ledger.connection.execute("PRAGMA busy_timeout = 10")  # type: ignore[attr-defined]
    worker = PolicyWorker(lambda: policy, clock=lambda: 0.0)
    inbox = CollectedInbox()
    other = _locked_by_another(db)
    try:
        answers, handed = worker.decide_inline(_job(1)[1:], inbox)  # type: ignore[arg-type]
        assert answers == [] and handed == 1
        assert inbox.arrived.wait(5.0)
    finally:
        other.close()
        assert worker.close_now(5.0)
    [(key, answer)] = inbox.items
    assert key == "2xx-0" and not isinstance(answer.results[0], Grant)
    assert policy.reservations() == [] and policy.stats["write_failures"] >= 1


def test_a_2xx_is_not_decided_on_the_loop_while_the_thread_is_busy_or_closed(tmp_path: Path) -> None:
    """Nothing decided by the caller while a job runs or is queued (the caller hands the queries over, in order),
    nor once the worker is closed; a query the loop cannot decide plainly (a retransmission of a held grant) stops
    the inline part there."""
    policy = _policy(tmp_path / "eu.sqlite3")
    worker = PolicyWorker(lambda: policy, clock=lambda: 0.0)
    inbox = CollectedInbox()
    gate, running = threading.Event(), threading.Event()
    items = _job(2)
    try:
        assert worker.post(lambda _: (running.set(), gate.wait(5.0)))
        assert running.wait(5.0)
        assert worker.decide_inline(items, inbox) == ([], 0)  # type: ignore[arg-type]
        gate.set()
        assert worker.wait_idle(5.0)
        answers, handed = worker.decide_inline([*items[:2], items[1], *items[2:]], inbox)  # type: ignore[arg-type]
        assert len(answers) == 1 and handed == 1  # the repeated 2xx-0 is left to the thread
        assert inbox.arrived.wait(5.0)
    finally:
        gate.set()
        assert worker.close_now(5.0)
    assert worker.decide_inline(items, inbox) == ([], 0)  # type: ignore[arg-type]
    assert policy.stats["final"] == 2
