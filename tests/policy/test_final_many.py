"""final_many: a call's FINALs decided as final() decides them one after the other, their rows written in one
transaction, durable first as ever (a grant only once its row is in the database or the journal)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.billing.store import read_rows
from server.billing.tariff import Tariff
from server.policy import AppSession, Grant, PolicyConfig, PolicyServer, Side, open_region_db
from server.policy.ledger import Change, FileJournal, Journal, SqliteLedger
from server.policy.model import Reservation
from server.policy.queries import PolicyCall, answer_now

WALL = 1_700_000_000.0


class FlakyLedger:
    """A SqliteLedger whose writes fail while ``failing`` is set (a database locked by another process). (A wrapper,
    not a subclass: a compiled build's SqliteLedger is a native class, which an interpreted class cannot extend.)"""

    def __init__(self, conn: sqlite3.Connection, tariff: Tariff) -> None:
        self.inner = SqliteLedger(conn, tariff)
        self.failing = False
        self.attempts = 0

    @property
    def connection(self) -> sqlite3.Connection:
        return self.inner.connection

    def set_tariff(self, tariff: Tariff) -> None:
        self.inner.set_tariff(tariff)

    def commit(self, change: Change) -> None:
        self.attempts += 1
        if self.failing:
            raise sqlite3.OperationalError("database is locked")
        self.inner.commit(change)

    def commit_many(self, changes: list[Change]) -> None:
        self.attempts += 1
        if self.failing:
            raise sqlite3.OperationalError("database is locked")
        self.inner.commit_many(changes)

    def commit_many_now(self, changes: list[Change]) -> bool:
        return self.inner.commit_many_now(changes)

    def load_all(self) -> list[Reservation]:
        return self.inner.load_all()


class BrokenJournal:
    """A FileJournal whose appends fail (a full disk)."""

    def __init__(self, path: str) -> None:
        self.inner = FileJournal(path)

    def append(self, change: Change) -> None:
        raise OSError(28, "No space left on device")

    def entries(self) -> list[Change]:
        return self.inner.entries()

    def clear(self) -> None:
        self.inner.clear()


def boot(path: Path, config: PolicyConfig, tokens: Callable[[], str], *,
         journal: Journal | None = None) -> tuple[PolicyServer, FlakyLedger]:
    ledger = FlakyLedger(open_region_db(path), config.tariff)
    policy = PolicyServer(config, token_factory=tokens, region="eu", ledger=ledger,
                          journal=journal if journal is not None else FileJournal(f"{path}.journal"))
    return policy, ledger


def pair(req: Callable[..., AppSession], n: int, **kwargs: Any) -> list[AppSession]:
    """The callee's side, then the caller's, of one call (both players in this region)."""
    callee = req(n, side=Side.TERM, player="sip:bob@eu.example", ip="10.2.0.9", **kwargs)
    caller = req(n, side=Side.ORIG, player="sip:alice@eu.example", ip="10.2.0.7", **kwargs)
    return [callee, caller]


def state(policy: PolicyServer) -> tuple[object, ...]:
    return (policy.reservations(), policy.capacity(), dict(policy.stats), policy.pending_writes,
            policy.get_timer())


SCENARIOS: dict[str, Callable[[Callable[..., AppSession]], list[list[AppSession]]]] = {
    "two grants": lambda req: [pair(req, 1)],
    "the caller's network is short": lambda req: [pair(req, 1)[:1] + [req(1, ip="10.2.5.1", up=600)]],
    "the callee is refused: the caller is not asked": lambda req: [[req(1, side=Side.TERM, ip="10.9.0.1"),
                                                                    req(1)]],
    "a retransmitted 2xx": lambda req: [pair(req, 1), pair(req, 1)],
    "a second 2xx of the INVITE": lambda req: [pair(req, 1), pair(req, 1, to_tag="other")],
    "a grant after a used key": lambda req: [pair(req, 1)[:1], pair(req, 1)],
    "three in a row": lambda req: [pair(req, 1) + [req(2, ip="10.2.0.3")]],
    "the player cap": lambda req: [[req(n, ip="10.2.0.7", player="sip:carol@eu.example") for n in range(1, 5)]],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_decisions_and_books_are_finals_one_by_one(
        scenario: str, tmp_path: Path, config: PolicyConfig, req: Callable[..., AppSession]) -> None:
    config = dataclasses.replace(config, settings=dataclasses.replace(config.settings,
                                                                      max_reservations_per_player=3))
    outcomes = []
    for way in ("one by one", "many"):
        counter = iter(range(1, 1000))
        policy, _ = boot(tmp_path / f"{way}.sqlite3", config, lambda c=counter: f"{next(c):032x}")
        decisions = []
        for step, batch in enumerate(SCENARIOS[scenario](req)):
            now = 10.0 * step
            if way == "many":
                decisions.append(policy.final_many(batch, now, wall=WALL + now))
                continue
            made = []
            for request in batch:
                made.append(policy.final(request, now, wall=WALL + now))
                if not isinstance(made[-1], Grant):
                    break
            decisions.append(made)
        rows = [dataclasses.replace(r, id=0) for r in read_rows(open_region_db(tmp_path / f"{way}.sqlite3"))]
        outcomes.append((decisions, state(policy), rows))
    assert outcomes[0] == outcomes[1]


def test_a_calls_two_rows_are_one_statement(tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str],
                                              req: Callable[..., AppSession]) -> None:
    policy, ledger = boot(tmp_path / "region.sqlite3", config, tokens)
    statements: list[str] = []
    ledger.connection.set_trace_callback(lambda sql: statements.append(sql.split(" ", 1)[0].upper()))
    calls = tuple(PolicyCall("final", request=r) for r in pair(req, 1))
    answer = answer_now(policy, calls, 0.0, WALL)
    assert [type(d) for d in answer.results] == [Grant, Grant]
    # One statement (atomic by itself): each statement step releases the GIL, a hand-over to a busy loop.
    assert statements == ["INSERT"]
    assert len(ledger.load_all()) == 2


def test_a_refused_transaction_journals_both_rows_and_grants(
        tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]) -> None:
    path = tmp_path / "region.sqlite3"
    policy, ledger = boot(path, config, tokens)
    ledger.failing = True
    decisions = policy.final_many(pair(req, 1), 0.0, wall=WALL)
    assert [type(d) for d in decisions] == [Grant, Grant]
    assert len(FileJournal(f"{path}.journal").entries()) == 2 and policy.pending_writes == 2
    assert ledger.attempts == 1  # the second row went to the journal without asking the database again
    ledger.failing = False
    retry = policy.get_timer()
    assert retry is not None
    policy.handle_timer(retry)
    assert policy.pending_writes == 0 and len(ledger.load_all()) == 2


def test_a_call_that_cannot_be_recorded_holds_nothing_and_its_caller_is_not_asked(
        tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]) -> None:
    path = tmp_path / "region.sqlite3"
    policy, ledger = boot(path, config, tokens, journal=BrokenJournal(f"{path}.journal"))
    ledger.failing = True
    decisions = policy.final_many(pair(req, 1), 0.0, wall=WALL)
    assert len(decisions) == 1 and not isinstance(decisions[0], Grant)
    assert "could not be recorded" in decisions[0].reason
    assert policy.reservations() == [] and policy.is_idle()
    assert (policy.stats["final"], policy.stats["granted"], policy.stats["denied"]) == (1, 0, 1)
    ledger.failing = False  # the same call again, once the database is back: granted (the keys were not used)
    assert [type(d) for d in policy.final_many(pair(req, 1), 1.0, wall=WALL + 1)] == [Grant, Grant]


def test_a_decision_that_raises_ends_the_list_after_the_grants_before_it_are_recorded(
        tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]) -> None:
    policy, ledger = boot(tmp_path / "region.sqlite3", config, tokens)
    first, second = pair(req, 1)
    broken = dataclasses.replace(second, components=())  # admission refuses it; make the check raise instead
    # The check raises where it looks up the broken request's network (the prefix matcher is plain Python: a
    # compiled PolicyServer refuses a patch of its own methods).
    matcher = policy.config._matcher
    original = matcher.lookup
    assert first.player_ip != broken.player_ip

    def lookup(address: str) -> Any:
        if address == broken.player_ip:
            raise RuntimeError("bug")
        return original(address)

    matcher.lookup = lookup  # type: ignore[method-assign]
    faults: list[str] = []
    decisions = policy.final_many([first, broken], 0.0, wall=WALL,
                                  on_fault=lambda r, exc: faults.append(str(exc)) or policy._key_in_use(r.key))
    assert isinstance(decisions[0], Grant) and not isinstance(decisions[1], Grant) and faults == ["bug"]
    assert [r.key for r in ledger.load_all()] == [first.key]
    with pytest.raises(RuntimeError, match="bug"):
        policy.final_many([broken], 1.0, wall=WALL + 1)


def test_the_one_statement_writes_the_rows_one_by_one_writes(
        tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]) -> None:
    rows = []
    for way in ("one by one", "many"):
        policy, ledger = boot(tmp_path / f"{way}.sqlite3", config, lambda: "0" * 32)
        requests = pair(req, 1) + [req(2, ip="10.2.0.3")]
        if way == "many":
            assert all(isinstance(d, Grant) for d in policy.final_many(requests, 0.0, wall=WALL))
        else:
            assert all(isinstance(policy.final(r, 0.0, wall=WALL), Grant) for r in requests)
        rows.append(ledger.connection.execute("SELECT * FROM policy_reservations ORDER BY rowid").fetchall())
    assert rows[0] == rows[1] and len(rows[0]) == 3


def test_a_locked_database_writes_none_of_the_rows(tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str],
                                                    req: Callable[..., AppSession]) -> None:
    path = tmp_path / "region.sqlite3"
    policy, ledger = boot(path, config, tokens)
    ledger.connection.execute("PRAGMA busy_timeout = 0")
    other = sqlite3.connect(path)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    reservations = [policy._new_reservation(r, policy._decide(r), 0.0, WALL) for r in pair(req, 1)]  # type: ignore[arg-type]
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        ledger.inner.commit_many([Change(key=r.key, save=r) for r in reservations])
    other.rollback()
    assert ledger.load_all() == [] and not ledger.connection.in_transaction


def test_more_rows_than_one_statement_takes_go_in_one_transaction(
        tmp_path: Path, config: PolicyConfig, req: Callable[..., AppSession]) -> None:
    from server.policy.store import WRITE_MANY_MAX, SqliteReservationStore

    policy, ledger = boot(tmp_path / "region.sqlite3", config, lambda: "0" * 32)
    reservations = [policy._new_reservation(r, policy._decide(r), 0.0, WALL)  # type: ignore[arg-type]
                    for r in (req(n, ip="10.2.0.3") for n in range(WRITE_MANY_MAX + 1))]
    statements: list[str] = []
    ledger.connection.set_trace_callback(lambda sql: statements.append(sql.split(" ", 1)[0].upper()))
    ledger.inner.commit_many([Change(key=r.key, save=r) for r in reservations])
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT" and len(statements) == WRITE_MANY_MAX + 3
    assert len(ledger.load_all()) == WRITE_MANY_MAX + 1
    with pytest.raises(ValueError, match="1 to"):
        SqliteReservationStore(ledger.connection).write_many([])


# -- FinalBatch: the FINALs of several queries (the policy thread's wake-up) in one write ----------------------


def _queries(req: Callable[..., AppSession]) -> list[tuple[list[AppSession], float]]:
    """The 2xx queries of one wake-up of the policy's thread: each a call's two sides, each with its own time."""
    return [(pair(req, n), 0.5 * n) for n in range(1, 5)]


def _one_query_at_a_time(policy: PolicyServer, queries: list[tuple[list[AppSession], float]]) -> list[list[Any]]:
    return [policy.final_many(requests, now, wall=WALL + now) for requests, now in queries]


def _batched(policy: PolicyServer, queries: list[tuple[list[AppSession], float]]) -> list[list[Any]]:
    batch = policy.final_batch()
    indexes = [batch.add(requests, now, wall=WALL + now) for requests, now in queries]
    decisions = batch.commit()
    return [decisions[i] for i in indexes]


QUERY_SCENARIOS: dict[str, Callable[[Callable[..., AppSession]], list[tuple[list[AppSession], float]]]] = {
    "four calls": _queries,
    "a retransmission among them": lambda req: [*_queries(req)[:2], (pair(req, 1), 2.0), *_queries(req)[2:]],
    "a refused caller among them": lambda req: [*_queries(req)[:2],
                                                ([req(9, ip="10.2.5.1", up=600)], 2.0), *_queries(req)[2:]],
    "the player cap": lambda req: [([req(n, ip="10.2.0.7", player="sip:carol@eu.example")], 0.1 * n)
                                   for n in range(1, 6)],
}


@pytest.mark.parametrize("scenario", sorted(QUERY_SCENARIOS))
@pytest.mark.parametrize("failing", [False, True], ids=["database up", "database refuses"])
def test_a_batch_of_queries_decides_and_books_as_one_query_at_a_time(
        scenario: str, failing: bool, tmp_path: Path, config: PolicyConfig, req: Callable[..., AppSession]) -> None:
    config = dataclasses.replace(config, settings=dataclasses.replace(config.settings,
                                                                      max_reservations_per_player=3))
    outcomes = []
    for way, run in (("one at a time", _one_query_at_a_time), ("batch", _batched)):
        counter = iter(range(1, 1000))
        # (a batch the database refused decides its queries again, each with a new token: tokens are random)
        tokens = (lambda: "0" * 32) if failing else (lambda c=counter: f"{next(c):032x}")
        policy, ledger = boot(tmp_path / f"{way}.sqlite3", config, tokens)
        ledger.failing = failing
        decisions = run(policy, QUERY_SCENARIOS[scenario](req))
        ledger.failing = False
        rows = [dataclasses.replace(r, id=0) for r in read_rows(open_region_db(tmp_path / f"{way}.sqlite3"))]
        journal = FileJournal(tmp_path / f"{way}.sqlite3.journal").entries()
        # the batch's own refused write is counted too: one more write failure than one query at a time
        failures = policy.stats.pop("write_failures") - (1 if failing and way == "batch" else 0)
        outcomes.append((decisions, state(policy), rows, len(journal), failures))
    assert outcomes[0] == outcomes[1]


def test_the_rows_of_a_batch_of_queries_are_one_statement_at_their_own_times(
        tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]) -> None:
    policy, ledger = boot(tmp_path / "region.sqlite3", config, tokens)
    statements: list[str] = []
    ledger.connection.set_trace_callback(lambda sql: statements.append(sql.split(" ", 1)[0].upper()))
    decisions = _batched(policy, _queries(req))
    assert all(isinstance(d, Grant) for ds in decisions for d in ds) and len(decisions) == 4
    assert statements == ["INSERT"]  # one statement step for the four calls' eight rows
    started = sorted({round(r.t_2xx - WALL, 3) for r in ledger.load_all()})
    assert started == [0.5, 1.0, 1.5, 2.0]  # each query's own time, not the batch's


def test_a_batch_the_journal_refuses_too_holds_nothing_it_did_not_grant(
        tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str], req: Callable[..., AppSession]) -> None:
    path = tmp_path / "region.sqlite3"
    policy, ledger = boot(path, config, tokens, journal=BrokenJournal(f"{path}.journal"))
    ledger.failing = True
    decisions = _batched(policy, _queries(req))
    assert all(len(ds) == 1 and not isinstance(ds[0], Grant) for ds in decisions)
    assert policy.reservations() == [] and policy.is_idle()
