"""server/policy/worker: the embedded policy on its own thread, so the signalling loop never waits for a reservation
or billing write (it writes a 2xx's new rows itself only when the database takes them at once).

The embedded :class:`~server.policy.core.PolicyServer` commits every change to SQLite (waiting up to
``runner.WRITE_BUSY_TIMEOUT_S`` for another process's lock) and, when the database refuses, appends it to the
fsync'd journal. On a busy disk an fsync alone can take hundreds of milliseconds; on the signalling loop that
stalled OPTIONS, REGISTER and relaying for every player of the region. With a :class:`PolicyWorker` the hooks
emit :class:`~server.hooks.PolicyQuery` for the embedded policy too (the same deferred verdicts as for a separate
policy process): the driver hands each query to :meth:`PolicyWorker.submit`, the thread answers it with
:func:`~server.policy.queries.answer_now` and the answer goes back to the loop, which resumes the parked INVITE,
2xx or PUBLISH. Only the sessions waiting for the policy wait.

Rules:

- **durable first**: the core is unchanged; a FINAL is granted only once its change is in the database or the
  journal, a PUBLISH acknowledged only once its change is (else 503 + Retry-After, the SDK retries), and a FINAL
  that cannot be recorded is refused with its capacity free at once;
- **one user at a time**: only this thread changes the policy's state (queries, its timers, reloads); the loop reads
  views (``reservations()``, ``capacity()``) as snapshots, and answers a query of checks only (the INVITE's
  PRELIMINARY, which reads and never writes) itself with :meth:`PolicyWorker.answer_inline` when the thread is idle:
  under the lock the thread holds for each batch of jobs and its timers, only tried, never waited for, and only when
  none of the driver's queries is with the thread (their order kept); in the same way :meth:`PolicyWorker.decide_inline`
  decides the 2xx queries' plain new grants on the loop too and writes their rows there, in one statement on the
  ledger's loop connection (``busy_timeout`` 0, no WAL checkpoints), when the database takes them at once: answered
  at once, no hand-over. When it does not (locked, busy, a checkpoint due), only their rows' write goes to the
  thread, which waits and journals as ever, and their answers come back once the rows are in the database; the loop
  writes nothing while the thread has work (the order of the writes kept). A grant due before the timer the thread
  waits for wakes the thread to read it;
- **times of the events**: each query carries the loop time and wall time at which its message arrived, so a query
  that waited behind a slow write is recorded at the time the event happened, not when it was processed;
- **cheap hand-over**: the loop hands all the queries of one loop iteration over in one job
  (:meth:`PolicyWorker.submit_many`); while its previous job is with the thread, the driver keeps new queries (at
  most ``server.io.POLICY_HOLD_MAX``, none when :attr:`PolicyWorker.room` is 0) until that job's answers come back
  and hands them over together, so the thread wakes once per round trip, not once per query; every query of a job
  is answered, also when the job fails. The thread takes every job queued when it wakes up, and the answers go back
  through an :class:`AnswerInbox`: one wake-up of the loop (``call_soon_threadsafe``) per batch of answers, none
  while the loop has not yet taken the previous ones; no future or closure per query. Each wake-up of a thread
  costs a futex call and a GIL hand-off, which cost more than the answer itself;
- **bounded**: at most ``MAX_QUEUED`` queries wait; beyond that :meth:`submit` refuses at once and the hooks answer
  "policy service busy" (INVITE 503 + ``Retry-After: 1``, PUBLISH 503 + Retry-After, 2xx forwarded with
  ``Warning: 370`` and no token): back-pressure, never an unbounded queue.

The thread runs the policy's timers itself (confirm deadlines, leases, journal retries) on the monotonic clock, the
clock of the server's loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from server.hooks import QueryAnswer

from .queries import PolicyCall, SyncBackend, answer_now, policy_fault

__all__ = ["MAX_QUEUED", "AnswerInbox", "PolicyWorker", "TimedBackend"]

log = logging.getLogger(__name__)

#: Queries waiting for the policy thread, at most (then back-pressure: see the module docstring).
MAX_QUEUED = 1024
#: Jobs the thread takes from the queue per wake-up, at most (its answers then go back to the loop together).
TAKE_BATCH = 256
#: After a failing ``handle_timer`` (a bug: the core journals write faults itself), the next try is this much later.
TIMER_FAULT_BACKOFF_S = 1.0


class TimedBackend(SyncBackend, Protocol):
    """The policy with its timers (:class:`~server.policy.core.PolicyServer`)."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> Any: ...


class AnswerInbox:
    """Answers handed from the policy thread to the loop in batches: the thread appends them with :meth:`put_many`;
    the first append after the loop took the previous ones schedules one ``handle(items)`` on the loop
    (``call_soon_threadsafe``), later appends join that batch. ``handle`` gets ``(key, answer)`` pairs in order.

    The list and the flag are shared by the two threads under a lock; ``handle`` runs on the loop only.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 handle: Callable[[list[tuple[Any, QueryAnswer]]], None]) -> None:
        self._loop = loop
        self._handle = handle
        self._lock = threading.Lock()
        self._items: list[tuple[Any, QueryAnswer]] = []
        self._wake_pending = False
        #: Wake-ups of the loop asked for, and answers delivered (their ratio is the batching at work).
        self.wakeups = 0
        self.delivered = 0

    def put_many(self, items: list[tuple[Any, QueryAnswer]]) -> None:
        """Called on the policy thread. Raises RuntimeError when the loop is closed."""
        if not items:
            return
        with self._lock:
            self._items.extend(items)
            if self._wake_pending:
                return  # the loop has not taken the previous answers yet: these go with them
            self._wake_pending = True
            self.wakeups += 1
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            with self._lock:
                self._wake_pending = False
            raise

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._wake_pending = False
        self.delivered += len(items)
        self._handle(items)


@dataclass(slots=True)
class _Job:
    calls: tuple[PolicyCall, ...] = ()
    now: float = 0.0
    wall: float = 0.0
    done: Callable[[QueryAnswer], None] | None = None
    task: Callable[[Any], None] | None = None
    #: Several queries handed over at once (:meth:`PolicyWorker.submit_many`): (key, calls, now, wall) each, the
    #: answers go to ``inbox`` as (key, answer).
    many: list[tuple[Any, tuple[PolicyCall, ...], float, float]] | None = None
    inbox: AnswerInbox | None = None
    size: int = 1
    #: FINALs decided on the loop (:meth:`PolicyWorker.decide_inline`): their rows to write
    #: (:class:`~server.policy.core.FinalBatch`), then (key, index in the batch) of each query to answer.
    batch: Any = None
    staged: list[tuple[Any, int]] | None = None


class PolicyWorker:
    """Runs the embedded policy's queries, timers and reloads on one thread (see the module docstring).

    Args:
        backend: returns the policy to use (read at each job: the web site may wrap it to time decisions).
        clock: the monotonic clock of the server's loop (for the policy's own timers).
        max_queued: bound of the queue.
    """

    def __init__(self, backend: Callable[[], TimedBackend], *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, max_queued: int = MAX_QUEUED) -> None:
        self._backend = backend
        self._clock = clock
        self._wall_clock = wall_clock
        self.max_queued = max_queued
        # A C queue (its get() waits without a Python-level condition) and a count under a plain lock for the
        # bound: a hand-over costs a few microseconds, not a Condition's lock allocation and notify.
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0  # jobs waiting (not the one being run)
        self._busy = False
        # Held by whoever uses the policy: the thread for its jobs and timers, the loop for a check it answers
        # itself (answer_inline, which never waits for it).
        self._owner = threading.Lock()
        #: Checks answered on the loop (answer_inline, decide_inline), and 2xx queries decided on the loop whose
        #: rows only the thread writes (decide_inline).
        self.answered_inline = 0
        self.decided_inline = 0
        #: 2xx queries decided AND written on the loop (decide_inline, the database took the rows at once): no
        #: hand-over at all.
        self.written_inline = 0
        #: Batches of jobs the thread ran (its wake-ups for work).
        self.batches = 0
        # When the thread's next timer is due, as it last read it (under the owner lock): the loop wakes it only
        # for a grant of its own due earlier.
        self._timer_at: float | None = None
        self._closing = False
        #: Queries answered, queries refused because the queue was full, failures of the policy's timers.
        self.answered = 0
        self.refused = 0
        self.timer_faults = 0
        self._thread = threading.Thread(target=self._run, name="gamesdk-policy", daemon=True)
        self._thread.start()

    # -- the loop's side ---------------------------------------------------------------------------------------

    def submit(self, calls: tuple[object, ...], now: float, wall: float,
               done: Callable[[QueryAnswer], None]) -> bool:
        """Queue a query (``now``: loop time of its message, ``wall``: epoch seconds then). ``done(answer)`` is
        called on the policy thread. False (nothing queued, ``done`` never called) when the queue is full or the
        worker is closing: answer the query as "policy service busy"."""
        return self._put(_Job(calls=_policy_calls(calls), now=now, wall=wall, done=done), bounded=True)

    def submit_many(self, queries: list[tuple[Any, tuple[object, ...], float, float]], inbox: AnswerInbox) -> int:
        """Queue several queries in one job: ``(key, calls, now, wall)`` each; their answers go to
        ``inbox.put_many`` as ``(key, answer)``, in order, together with the other answers of the thread's batch.
        Returns how many were queued: the first ones, as many as the bound leaves room for (none when closing);
        answer the others as "policy service busy"."""
        for _, calls, _, _ in queries:
            _policy_calls(calls)
        if not queries:
            return 0
        with self._lock:
            room = 0 if self._closing else max(0, self.max_queued - self._queued)
            taken = min(room, len(queries))
            self.refused += len(queries) - taken
            if not taken:
                return 0
            self._queued += taken
        many = queries if taken == len(queries) else queries[:taken]
        self._queue.put(_Job(many=many, inbox=inbox, size=taken))  # type: ignore[arg-type]  # checked above
        return taken

    def answer_inline(self, calls: tuple[object, ...], now: float, wall: float) -> QueryAnswer | None:
        """On the loop: answer a query of checks only (the INVITE's PRELIMINARY: it reads the policy's state, never
        writes) at once, when the thread is idle (nothing queued, no job or timer running); None otherwise (hand it
        over). Never waits: the thread's lock is only tried. The caller keeps the order of its queries (none of its
        earlier ones may be with the thread)."""
        if not all(isinstance(call, PolicyCall) for call in calls) or _only_kind(
                cast("tuple[PolicyCall, ...]", calls)) != "preliminary":
            return None
        if not self._owner.acquire(blocking=False):
            return None
        try:
            with self._lock:
                if self._closing or self._queued or self._busy or self.max_queued <= 0:
                    return None  # (no room at all: handed over, and refused "busy" as before)
            backend = self._backend_or_none()
            if backend is None:
                return None
            answer = self._answer(backend, _policy_calls(calls), now, wall)
            self.answered_inline += 1
            return answer
        finally:
            self._owner.release()

    def decide_inline(self, many: list[tuple[Any, tuple[object, ...], float, float]],
                      inbox: AnswerInbox) -> tuple[list[QueryAnswer], int]:
        """On the loop, while the thread is idle (as :meth:`answer_inline`: its lock only tried, nothing queued or
        running): the leading queries of ``many`` (``(key, calls, now, wall)`` each, in order) decided here. Checks
        are answered at once; the 2xx queries whose FINALs are all plain new grants are decided and held in memory
        (``FinalBatch.stage``) and their rows written here too, in one statement on the ledger's loop connection,
        when the database takes them at once (``FinalBatch.commit_now``: never waits for a lock, never journals):
        their answers are returned with the checks'. When it does not (locked, busy, a WAL checkpoint due, no loop
        connection), only their rows' write is handed to the thread in one job (``FinalBatch.commit``, which waits
        and journals as ever), their answers come through ``inbox`` once the rows are in the database, and nothing
        after them is decided here. Returns the answers (of the leading queries, in order) and how many queries
        after them were handed over that way; the caller hands the rest over as before (:meth:`submit_many`),
        after them, so the order is kept."""
        answers: list[QueryAnswer] = []
        if not many or not self._owner.acquire(blocking=False):
            return answers, 0
        try:
            with self._lock:
                if self._closing or self._queued or self._busy or self.max_queued <= 0:
                    return answers, 0
            backend = self._backend_or_none()
            if backend is None:
                return answers, 0
            final_batch = getattr(backend, "final_batch", None)
            batch: Any = None
            staged: list[tuple[Any, int]] = []
            written = self.written_inline
            refused = False  # the database did not take the rows at once: the rest goes to the thread
            for key, calls, now, wall in many:
                if not all(isinstance(call, PolicyCall) for call in calls):
                    break
                policy_calls = cast("tuple[PolicyCall, ...]", calls)
                kind = _only_kind(policy_calls)
                if kind == "preliminary":
                    if staged:  # the FINALs before it written first (it sees them held either way)
                        if not self._write_now(batch, staged, answers):
                            refused = True
                            break
                        batch, staged = None, []
                    answers.append(self._answer(backend, policy_calls, now, wall))
                    self.answered_inline += 1
                    continue
                if kind != "final" or final_batch is None or len(staged) >= self.max_queued:
                    break
                if batch is None:
                    batch = final_batch()
                requests = [call.request for call in policy_calls]
                index = batch.stage(requests, now, wall=wall, on_fault=_final_failed)
                if index is None and staged:  # the statement is full (or the query is not plain): write, go on
                    if not self._write_now(batch, staged, answers):
                        refused = True
                        break
                    batch, staged = final_batch(), []
                    index = batch.stage(requests, now, wall=wall, on_fault=_final_failed)
                if index is None:
                    break
                staged.append((key, index))
            if staged and not refused and self._write_now(batch, staged, answers):
                staged = []
            if self.written_inline != written:
                self._wake_for_timer(backend)
            if not staged:
                return answers, 0
            with self._lock:
                if self._closing:  # closed meanwhile: nothing staged stays held; the caller's submit says "busy"
                    batch.abandon()
                    return answers, 0
                self._queued += len(staged)
                self._queue.put(_Job(batch=batch, staged=staged, inbox=inbox, size=len(staged)))
            self.decided_inline += len(staged)
            return answers, len(staged)
        finally:
            self._owner.release()

    def _write_now(self, batch: Any, staged: list[tuple[Any, int]], answers: list[QueryAnswer]) -> bool:
        """The staged FINALs' rows written on the loop (``FinalBatch.commit_now``) and their answers appended to
        ``answers``; False, with nothing written and everything still staged, when the database did not take them
        at once (the caller hands the batch to the thread)."""
        try:
            decisions: list[list[Any]] | None = batch.commit_now()
        except Exception:  # a bug: left to the thread's path, which answers faults by its rules
            log.exception("policy: FINAL rows on the loop failed")
            return False
        if decisions is None:
            return False
        answers.extend(QueryAnswer(tuple(decisions[index])) for _, index in staged)
        self.written_inline += len(staged)
        self.answered += len(staged)
        return True

    def _wake_for_timer(self, backend: TimedBackend) -> None:
        """After grants made on the loop (their confirm deadlines armed without the thread knowing): wake the thread
        to re-read its next timer, only when it is due before the one the thread waits for (when nothing else is
        held, say; a new grant's deadline is otherwise later than those held before it). Under the owner lock."""
        try:
            when = backend.get_timer()
        except Exception:  # noqa: BLE001 - a bug: the thread's own reading logs it
            when = None
        known = self._timer_at
        if when is not None and (known is None or when < known):
            self._timer_at = when
            self._queue.put(_IDLE)  # the thread runs its due timers and reads the next one

    @staticmethod
    def inbox(loop: asyncio.AbstractEventLoop, handle: Callable[[list[tuple[Any, QueryAnswer]]], None]) -> AnswerInbox:
        """An :class:`AnswerInbox` for :meth:`submit_many` (the driver needs no import of this module)."""
        return AnswerInbox(loop, handle)

    def post(self, task: Callable[[Any], None], *, bounded: bool = True) -> bool:
        """Run ``task(policy)`` on the policy thread (a reload, a release nobody waits for). With ``bounded``, refused
        (False) when the queue is full; a reload passes ``bounded=False`` (it must not be lost)."""
        return self._put(_Job(task=task), bounded=bounded)

    def _put(self, job: _Job, *, bounded: bool) -> bool:
        with self._lock:
            if self._closing or (bounded and self._queued >= self.max_queued):
                self.refused += 1
                return False
            self._queued += 1
        self._queue.put(job)
        return True

    async def run(self, calls: tuple[object, ...]) -> QueryAnswer:
        """The same as :meth:`submit` for asyncio code (``HttpQueryRunner``'s interface), timed now."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[QueryAnswer] = loop.create_future()

        def done(answer: QueryAnswer) -> None:
            loop.call_soon_threadsafe(_set_result, future, answer)

        if not self.submit(calls, loop.time(), self._wall_clock(), done):
            return QueryAnswer(error=f"policy service busy ({self.max_queued} queries waiting)")
        return await future

    @property
    def room(self) -> int:
        """Queries the queue takes now before it refuses (read without the lock: a hint for the driver, which
        hands over at once when it is 0; :meth:`submit_many` decides under the lock)."""
        return 0 if self._closing else max(0, self.max_queued - self._queued)

    @property
    def pending(self) -> int:
        """Queries and tasks queued or being run."""
        with self._lock:
            return self._queued + (1 if self._busy else 0)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait (off the loop) until everything queued before this call has run; False after ``timeout_s``."""
        reached = threading.Event()
        if not self.post(lambda _: reached.set(), bounded=False):
            return self.pending == 0
        return reached.wait(timeout_s)

    def close_now(self, timeout_s: float = 10.0) -> bool:
        """Answer what is queued (at most ``timeout_s``), then stop the thread; False if it is still busy."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._queue.put(None)  # after everything queued: the thread stops there
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("policy thread: %d job(s) still queued at shutdown (the journal keeps what was recorded)",
                      self.pending)
            return False
        return True

    async def close(self) -> None:
        """:meth:`close_now` without blocking the loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.close_now)

    # -- the thread ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        # The timers of reservations restored at start-up are read at once (jobs are not the only wake-up: a grant
        # written on the loop wakes the thread only for a deadline earlier than the one it knows).
        timer_at = self._timers()
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while True:
            wait = None if timer_at is None else max(0.0, timer_at - self._clock())
            try:
                job = get(timeout=wait) if wait is None or wait > 0 else get_nowait()
            except queue.Empty:
                job = _IDLE
            if job is _IDLE:
                timer_at = self._timers()
                continue
            # Everything queued now is taken in this wake-up (up to TAKE_BATCH jobs): one GIL hand-off, and the
            # answers go back to the loop together.
            jobs: list[_Job] = []
            stop = False
            while True:
                if job is None:
                    stop = True  # closing: everything queued before it runs first
                    break
                if job is not _IDLE:  # (a wake-up for the timers: read again after the batch anyway)
                    jobs.append(job)
                if len(jobs) >= TAKE_BATCH:
                    break
                try:
                    job = get_nowait()
                except queue.Empty:
                    break
            with self._lock:
                self._queued -= sum(j.size for j in jobs)
                self._busy = True
            if jobs:
                self.batches += 1
            try:
                with self._owner:
                    self._do_batch(jobs)
            finally:
                with self._lock:
                    self._busy = False
            if stop:
                return
            timer_at = self._timers()

    def _do_batch(self, jobs: list[_Job]) -> None:
        outboxes: dict[int, tuple[AnswerInbox, list[tuple[Any, QueryAnswer]]]] = {}
        for job in jobs:
            if job.many is None and job.staged is None:
                self._do(job)
                continue
            assert job.inbox is not None
            entry = outboxes.get(id(job.inbox))
            if entry is None:
                entry = outboxes[id(job.inbox)] = (job.inbox, [])
            if job.staged is not None:
                entry[1].extend(self._write_decided(job.batch, job.staged))
                continue
            assert job.many is not None
            backend = self._backend_or_none()  # None: every query still gets its answer (the driver waits for them)
            answers = self._answer_many(backend, job.many)
            entry[1].extend(zip([key for key, _, _, _ in job.many], answers, strict=True))
        for inbox, items in outboxes.values():
            try:
                inbox.put_many(items)
            except RuntimeError:  # the loop closed (shutdown): nobody waits for the answers any more
                log.debug("policy thread: %d answer(s) came after the server's loop closed", len(items))

    def _backend_or_none(self) -> TimedBackend | None:
        """The policy, or None when it cannot be had (a bug, logged): the jobs are still answered, with an error."""
        try:
            return self._backend()
        except Exception:
            log.exception("policy thread: no backend")
            return None

    def _answer_many(self, backend: TimedBackend | None,
                     many: list[tuple[Any, tuple[PolicyCall, ...], float, float]]) -> list[QueryAnswer]:
        """The answers of a job's queries, in order. The FINALs of its 2xx queries go through one
        ``backend.final_batch()`` (their rows in one statement, not one each); a check (INVITE) in between is
        answered in its turn and sees the FINALs before it held; any other query (a PUBLISH, a release: a write)
        first has the FINALs before it written."""
        final_batch = getattr(backend, "final_batch", None)
        if backend is None or final_batch is None or len(many) < 2:
            return [self._answer(backend, calls, now, wall) for _, calls, now, wall in many]
        answers: list[QueryAnswer | None] = [None] * len(many)
        batch: Any = None
        finals: list[tuple[int, int]] = []  # (position in the job, index in the batch)
        for position, (_, calls, now, wall) in enumerate(many):
            kind = _only_kind(calls)
            if kind == "final":
                if batch is None:
                    batch = final_batch()
                try:
                    finals.append((position, batch.add([c.request for c in calls], now, wall=wall,
                                                       on_fault=_final_failed)))
                except Exception:  # a bug: refused as answer_now refuses it, the other queries go on
                    log.exception("policy thread: FINAL failed")
                    answers[position] = QueryAnswer((policy_fault(),))
                    self.answered += 1
                continue
            if kind != "preliminary" and batch is not None:
                self._settle(batch, finals, answers)
                batch, finals = None, []
            answers[position] = self._answer(backend, calls, now, wall)
        if batch is not None:
            self._settle(batch, finals, answers)
        return [a if a is not None else QueryAnswer(error="policy query not answered") for a in answers]

    def _write_decided(self, batch: Any, staged: list[tuple[Any, int]]) -> list[tuple[Any, QueryAnswer]]:
        """The rows of FINALs decided on the loop written (one statement); their queries' answers, in order."""
        decisions = _committed(batch, len(staged))
        self.answered += len(staged)
        return [(key, QueryAnswer(tuple(decisions[index]))) for key, index in staged]

    def _settle(self, batch: Any, finals: list[tuple[int, int]], answers: list[QueryAnswer | None]) -> None:
        decisions = _committed(batch, len(finals))
        for position, index in finals:
            answers[position] = QueryAnswer(tuple(decisions[index]))
            self.answered += 1

    def _answer(self, backend: TimedBackend | None, calls: tuple[PolicyCall, ...], now: float,
                wall: float) -> QueryAnswer:
        if backend is None:
            self.answered += 1
            return QueryAnswer(error="policy backend unavailable")
        try:
            answer = answer_now(backend, calls, now, wall)
        except Exception as exc:  # answer_now turns faults into refusals; anything else is a bug, still answered
            log.exception("policy thread: query failed")
            answer = QueryAnswer(error=f"{type(exc).__name__}: {exc}")
        self.answered += 1
        return answer

    def _do(self, job: _Job) -> None:
        backend = self._backend_or_none()
        if job.task is not None:
            try:
                job.task(backend)  # None when the policy cannot be had: a task that needs it fails, logged below
            except Exception:
                log.exception("policy thread: task failed")
            return
        answer = self._answer(backend, job.calls, job.now, job.wall)
        assert job.done is not None
        try:
            job.done(answer)
        except RuntimeError:  # the loop closed (shutdown): nobody waits for the answer any more
            log.debug("policy thread: an answer came after the server's loop closed")

    def _timers(self) -> float | None:
        """Run the policy's due timers; returns when they are next due."""
        with self._owner:
            return self._timers_owned()

    def _timers_owned(self) -> float | None:
        now = self._clock()
        try:
            backend = self._backend()
            when = backend.get_timer()
            if when is not None and when <= now:
                backend.handle_timer(now)
                when = backend.get_timer()
        except Exception:
            # Logged, never fatal: the thread goes on answering; the timers are tried again a little later.
            self.timer_faults += 1
            log.exception("policy thread: timers failed")
            when = now + TIMER_FAULT_BACKOFF_S
        self._timer_at = when
        return when


def _committed(batch: Any, count: int) -> list[list[Any]]:
    """``batch.commit()`` (a :class:`~server.policy.core.FinalBatch` of ``count`` queries): every query's decisions,
    in order; each query refused with a policy fault when it raises (a bug: the batch journals write faults
    itself)."""
    try:
        decisions: list[list[Any]] = batch.commit()
    except Exception:
        log.exception("policy thread: FINAL rows failed")
        decisions = [[policy_fault()] for _ in range(count)]
    return decisions


_IDLE = _Job()


def _only_kind(calls: tuple[PolicyCall, ...]) -> str | None:
    """``"final"`` or ``"preliminary"`` when every call of a query is one (with its request), else None."""
    if not calls:
        return None
    kind = calls[0].kind
    if kind not in ("final", "preliminary"):
        return None
    for call in calls:
        if call.kind != kind or call.request is None:
            return None
    return kind


def _final_failed(request: Any, exc: Exception) -> Any:
    log.error("policy check for %s failed", request.call_id, exc_info=exc)
    return policy_fault()


def _policy_calls(calls: tuple[object, ...]) -> tuple[PolicyCall, ...]:
    """``calls`` as policy calls; TypeError naming the first that is not one."""
    for call in calls:
        if not isinstance(call, PolicyCall):
            raise TypeError(f"not a policy call: {call!r}")
    return cast("tuple[PolicyCall, ...]", tuple(calls))


def _set_result(future: asyncio.Future[QueryAnswer], answer: QueryAnswer) -> None:
    if not future.done():
        future.set_result(answer)
