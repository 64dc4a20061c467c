"""server/policy/worker: the embedded policy on its own thread, so no reservation or billing write runs on the
signalling loop.

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
- **one owner**: only this thread changes the policy's state (queries, its timers, reloads); the loop reads views
  (``reservations()``, ``capacity()``) as snapshots;
- **times of the events**: each query carries the loop time and wall time at which its message arrived, so a query
  that waited behind a slow write is recorded at the time the event happened, not when it was processed;
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
from typing import Any, Protocol

from server.hooks import QueryAnswer

from .queries import PolicyCall, SyncBackend, answer_now

__all__ = ["MAX_QUEUED", "PolicyWorker", "TimedBackend"]

log = logging.getLogger(__name__)

#: Queries waiting for the policy thread, at most (then back-pressure: see the module docstring).
MAX_QUEUED = 1024
#: After a failing ``handle_timer`` (a bug: the core journals write faults itself), the next try is this much later.
TIMER_FAULT_BACKOFF_S = 1.0


class TimedBackend(SyncBackend, Protocol):
    """The policy with its timers (:class:`~server.policy.core.PolicyServer`)."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> Any: ...


@dataclass(slots=True)
class _Job:
    calls: tuple[PolicyCall, ...] = ()
    now: float = 0.0
    wall: float = 0.0
    done: Callable[[QueryAnswer], None] | None = None
    task: Callable[[Any], None] | None = None


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
        checked: list[PolicyCall] = []
        for call in calls:
            if not isinstance(call, PolicyCall):
                raise TypeError(f"not a policy call: {call!r}")
            checked.append(call)
        return self._put(_Job(calls=tuple(checked), now=now, wall=wall, done=done), bounded=True)

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
        timer_at: float | None = None
        get = self._queue.get
        while True:
            wait = None if timer_at is None else max(0.0, timer_at - self._clock())
            try:
                job = get(timeout=wait) if wait is None or wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                job = _IDLE
            if job is None:
                return  # closing: everything queued before ran
            if job is not _IDLE:
                with self._lock:
                    self._queued -= 1
                    self._busy = True
                try:
                    self._do(job)
                finally:
                    with self._lock:
                        self._busy = False
            timer_at = self._timers()

    def _do(self, job: _Job) -> None:
        backend = self._backend()
        if job.task is not None:
            try:
                job.task(backend)
            except Exception:
                log.exception("policy thread: task failed")
            return
        try:
            answer = answer_now(backend, job.calls, job.now, job.wall)
        except Exception as exc:  # answer_now turns faults into refusals; anything else is a bug, still answered
            log.exception("policy thread: query failed")
            answer = QueryAnswer(error=f"{type(exc).__name__}: {exc}")
        self.answered += 1
        assert job.done is not None
        try:
            job.done(answer)
        except RuntimeError:  # the loop closed (shutdown): nobody waits for the answer any more
            log.debug("policy thread: an answer came after the server's loop closed")

    def _timers(self) -> float | None:
        """Run the policy's due timers; returns when they are next due."""
        backend = self._backend()
        now = self._clock()
        try:
            when = backend.get_timer()
            if when is not None and when <= now:
                backend.handle_timer(now)
                when = backend.get_timer()
        except Exception:
            # Logged, never fatal: the thread goes on answering; the timers are tried again a little later.
            self.timer_faults += 1
            log.exception("policy thread: timers failed")
            when = now + TIMER_FAULT_BACKOFF_S
        return when


_IDLE = _Job()


def _set_result(future: asyncio.Future[QueryAnswer], answer: QueryAnswer) -> None:
    if not future.done():
        future.set_result(answer)
