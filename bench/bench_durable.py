"""The durable policy path: CPU per session, and how the SIP loop answers while the database is locked.

Run: ``python bench/bench_durable.py [--sessions N] [--lock-s S] [--fsync-ms MS]`` (from the repository root).
Every loop is bounded in count and time; ratios are measured side by side in this one run.

1. CPU per session (final, activate/START, one refresh/INTERIM, release/STOP) on a WAL SQLite file:
   - ``separate writes``: the reservation store and the billing sink each commit on their own (the earlier path);
   - ``one transaction``: each reservation change and its billing event in one transaction (``SqliteLedger``);
   - ``on the loop`` / ``on the policy thread``: the same four changes as the hooks' queries, answered inline
     (``queries.answer_now``, how the embedded policy ran on the signalling loop) or by the ``PolicyWorker`` thread
     from an asyncio loop (how it runs now); CPU of the whole process, both threads.
2. OPTIONS round trips to a running regional server (policy embedded, its own thread and loop) while another
   connection holds ``BEGIN EXCLUSIVE`` on the region database for ``--lock-s`` seconds and sessions run (every
   50 ms a FINAL, a START and a STOP, each journaled while the database is locked); p50/p99/max against the same
   server unlocked, with the policy's write lock wait at 5 s (SQLite's busy wait, the earliest setting) and at 10 ms
   (journal after), with the policy on the signalling loop (before) or on its own thread (now), and with a disk
   whose fsync takes ``--fsync-ms`` (a loaded machine); plus a registration changing every second, written on the
   loop (the earlier path) or by the writer thread.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import logging
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.billing import SqliteBillingStore
from server.config import load_config
from server.hooks import QueryAnswer
from server.io import EmbeddedServer
from server.location import Binding
from server.policy import AppSession, EndReason, MediaComponent, PolicyConfig, PolicyServer, Side
from server.policy.hooks import RegionPolicyHooks
from server.policy.ledger import FileJournal, MemoryJournal, SqliteLedger
from server.policy.lifetime import Activate, Refresh, Release
from server.policy.model import DialogRef
from server.policy.queries import PolicyCall, answer_now
from server.policy.store import SqliteReservationStore, open_region_db
from server.policy.worker import PolicyWorker
from server.registrations import RegistrationStore

ROOT = Path(__file__).resolve().parent.parent
CONFIG = PolicyConfig.from_mapping({
    "access_networks": [{"name": "net", "prefixes": ["10.0.0.0/8", "127.0.0.0/8"], "uplink_kbps": 10_000_000,
                         "downlink_kbps": 10_000_000, "max_sessions": 1_000_000}],
    "tariff": {"default": {"per_minute": 0.02, "per_kbps_minute": 0.0001}},
    "policy": {"max_reservations_per_player": 1_000_000},
})


def request(n: int, player: str = "sip:alice@eu.example") -> AppSession:
    return AppSession(
        call_id=f"c{n}@bench", from_tag=f"f{n}", to_tag=f"t{n}", side=Side.ORIG, player=player,
        peer="sip:bob@na.example", player_ip="10.1.2.3",
        components=(MediaComponent(uplink_kbps=64, downlink_kbps=64, max_latency_ms=100),),
        game_format="pong/1", qos_text="lat=100",
    )


def cpu_per_session(make: Callable[[sqlite3.Connection], PolicyServer], sessions: int, budget_s: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        policy = make(open_region_db(Path(tmp) / "region.sqlite"))
        start_cpu, deadline, done = time.process_time(), time.monotonic() + budget_s, 0
        for n in range(sessions):
            key = request(n).key
            policy.final(request(n), float(n), wall=1e9 + n)
            policy.activate(key, n + 0.1, 90)
            policy.refresh(key, n + 0.2, 90)
            policy.release(key, n + 0.3, EndReason.BYE_LOCAL)
            done += 1
            if time.monotonic() > deadline:
                break
        return (time.process_time() - start_cpu) / done * 1e6


def separate(conn: sqlite3.Connection) -> PolicyServer:
    return PolicyServer(CONFIG, token_factory=_tokens(), store=SqliteReservationStore(conn),
                        billing=SqliteBillingStore(conn, CONFIG.tariff))


def ledger(conn: sqlite3.Connection) -> PolicyServer:
    return PolicyServer(CONFIG, token_factory=_tokens(), ledger=SqliteLedger(conn, CONFIG.tariff),
                        journal=MemoryJournal())


def session_calls(n: int, player: str = "sip:alice@eu.example") -> list[tuple[PolicyCall, ...]]:
    """One session as the hooks ask for it: FINAL (2xx), activate (confirmed), refresh, release (terminated)."""
    req = request(n, player)
    ref = DialogRef(call_id=req.call_id, local_tag=req.from_tag, remote_tag=req.to_tag, player=player)
    return [(PolicyCall("final", request=req),), (PolicyCall("apply", op=Activate(ref=ref, expires_s=90)),),
            (PolicyCall("apply", op=Refresh(ref=ref, expires_s=90)),),
            (PolicyCall("apply", op=Release(ref=ref, reason=EndReason.BYE_LOCAL)),)]


def cpu_per_session_queries(threaded: bool, sessions: int, budget_s: float) -> float:
    """CPU (whole process) per session of queries answered on the calling loop or by the policy thread."""
    with tempfile.TemporaryDirectory() as tmp:
        policy = PolicyServer(CONFIG, token_factory=_tokens(),
                              ledger=SqliteLedger(open_region_db(Path(tmp) / "r.sqlite", check_same_thread=False),
                                                  CONFIG.tariff), journal=MemoryJournal())
        worker = PolicyWorker(lambda: policy) if threaded else None

        async def drive() -> int:
            loop = asyncio.get_running_loop()
            deadline, done = time.monotonic() + budget_s, 0
            for n in range(sessions):
                for calls in session_calls(n):
                    answer: QueryAnswer
                    if worker is not None:
                        answer = await worker.run(calls)
                    else:
                        answer = answer_now(policy, calls, loop.time(), time.time())
                    assert answer.error is None and answer.results[0] is not None, answer
                done += 1
                if time.monotonic() > deadline:
                    break
            return done

        start_cpu = time.process_time()
        done = asyncio.run(drive())
        cpu = time.process_time() - start_cpu
        if worker is not None:
            worker.close_now()
        return cpu / done * 1e6


def cpu_per_session_batched(sessions: int, in_flight: int, budget_s: float) -> float:
    """CPU (whole process) per session of queries handed to the policy thread as the server's driver hands them
    (``PolicyWorker.submit_many``, answers back through an ``AnswerInbox``): ``in_flight`` sessions at a time,
    each step's queries of all of them handed over together (1: one query per hand-over, the worst case)."""
    with tempfile.TemporaryDirectory() as tmp:
        policy = PolicyServer(CONFIG, token_factory=_tokens(),
                              ledger=SqliteLedger(open_region_db(Path(tmp) / "r.sqlite", check_same_thread=False),
                                                  CONFIG.tariff), journal=MemoryJournal())
        worker = PolicyWorker(lambda: policy)

        async def drive() -> int:
            loop = asyncio.get_running_loop()
            deadline, done = time.monotonic() + budget_s, 0
            waiting: list[asyncio.Future[list[tuple[Any, QueryAnswer]]]] = []

            def handle(items: list[tuple[Any, QueryAnswer]]) -> None:
                waiting.pop(0).set_result(items)

            inbox = worker.inbox(loop, handle)
            got: list[tuple[Any, QueryAnswer]] = []
            for first in range(0, sessions, in_flight):
                steps = [session_calls(n) for n in range(first, min(sessions, first + in_flight))]
                for step in range(4):
                    items = [(i, calls[step], loop.time(), time.time()) for i, calls in enumerate(steps)]
                    assert worker.submit_many(items, inbox) == len(items)  # type: ignore[arg-type]
                    got.clear()
                    while len(got) < len(items):
                        waiting.append(loop.create_future())
                        got.extend(await waiting[-1])
                    for _, answer in got:
                        assert answer.error is None and answer.results[0] is not None, answer
                done += len(steps)
                if time.monotonic() > deadline:
                    break
            return done

        start_cpu = time.process_time()
        done = asyncio.run(drive())
        cpu = time.process_time() - start_cpu
        worker.close_now()
        return cpu / done * 1e6


def _tokens() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"{next(counter):032x}"


def options(port: int, n: int) -> bytes:
    return (f"OPTIONS sip:eu.gamesdk.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbench{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@eu.gamesdk.test>;tag=b\r\nTo: <sip:eu.gamesdk.test>\r\n"
            f"Call-ID: bench-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def options_during_lock(lock_s: float, busy_ms: int, locked: bool, registrations: str = "", *,
                        thread: bool = False, fsync_ms: float = 0.0) -> list[float]:
    """OPTIONS round trips (ms) for ``lock_s`` seconds while sessions run: every 50 ms a FINAL, a START (the session
    before) and a STOP (the one before that), answered on the server's loop (``thread=False``, the earlier path)
    or by the policy thread (``thread=True``, now). ``fsync_ms``: each journal fsync takes that much longer (a
    loaded disk).

    ``registrations``: a binding changes every second (as players log in) and is written ``"loop"``: on the
    server's loop with SQLite's busy wait (how the server wrote them before the writer thread), or ``"thread"``:
    handed to the server's registration writer thread (how it writes them now)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(load_config(ROOT / "examples" / "eu.toml"), database=Path(tmp) / "eu.sqlite3")
        server = EmbeddedServer(config, port=0, policy_thread=thread)
        address = server.start_in_thread()
        assert server.node is not None and server._loop is not None
        hooks = server.node.hooks
        assert isinstance(hooks, RegionPolicyHooks) and isinstance(hooks.backend, PolicyServer)
        policy: PolicyServer = hooks.backend
        loop: asyncio.AbstractEventLoop = server._loop
        conn: sqlite3.Connection = policy._ledger.connection  # type: ignore[attr-defined]
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")  # before any session: nothing else uses it yet
        journal = policy._journal
        if fsync_ms and isinstance(journal, FileJournal):
            slow = fsync_ms / 1000

            def slow_fsync(fd: int, real: Callable[[int], None] = journal._fsync) -> None:
                time.sleep(slow)
                real(fd)

            journal._fsync = slow_fsync
        stop = threading.Event()
        counter = itertools.count()
        worker = hooks.worker

        def ask(calls: tuple[PolicyCall, ...]) -> None:
            if worker is not None:
                worker.submit(calls, loop.time(), time.time(), lambda answer: None)
            else:
                answer_now(policy, calls, loop.time(), time.time())

        def write() -> None:  # on the server's loop, as a 2xx and its players' PUBLISHes would
            if stop.is_set():
                return
            n = next(counter)
            ask(session_calls(n, player=f"sip:p{n}@eu")[0])
            if n >= 1:
                ask(session_calls(n - 1, player=f"sip:p{n - 1}@eu")[1])
            if n >= 2:
                ask(session_calls(n - 2, player=f"sip:p{n - 2}@eu")[3])
            if server.protocol is not None:
                server.protocol._rearm()
            loop.call_later(0.05, write)

        regs = itertools.count()
        inline: list[RegistrationStore] = []

        def register() -> None:  # on the server's loop, once a second
            if stop.is_set():
                return
            n = next(regs)
            now = loop.time()
            binding = Binding(aor=f"sip:r{n}@eu.gamesdk.test", contact=f"sip:r{n}@127.0.0.1:{5000 + n}",
                              expires_at=now + 3600, source=("127.0.0.1", 5000 + n), access_network=None,
                              call_id=f"reg-{n}", cseq=1, registered_at=now)
            change = {(binding.aor, binding.contact): binding}
            offset = time.time() - now
            if registrations == "loop":
                if not inline:
                    inline.append(RegistrationStore(open_region_db(config.database)))
                try:
                    inline[0].apply(change, offset)
                except sqlite3.Error:
                    pass  # the earlier path logged and dropped them
            elif server.registration_writer is not None:
                server.registration_writer.submit(change, [], offset, now + offset)
            loop.call_later(1.0, register)

        if registrations:
            loop.call_soon_threadsafe(register)
        locker = sqlite3.connect(config.database, isolation_level=None)
        if locked:
            locker.execute("BEGIN EXCLUSIVE")
        loop.call_soon_threadsafe(write)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(15.0)
        port = probe.getsockname()[1]
        rtts: list[float] = []
        end = time.monotonic() + lock_s
        for n in itertools.count():
            if time.monotonic() >= end or n >= 5000:
                break
            sent = time.perf_counter()
            probe.sendto(options(port, n), address)
            try:
                while True:  # the answer to this probe (one that timed out may still answer late)
                    if f"bench-{n}\r\n".encode() in probe.recv(4096):
                        break
            except TimeoutError:
                rtts.append(15000.0)
                continue
            rtts.append((time.perf_counter() - sent) * 1000)
            time.sleep(0.01)
        stop.set()
        if locked:
            locker.execute("ROLLBACK")
        if inline:
            loop.call_soon_threadsafe(inline[0].close)
        locker.close()
        probe.close()
        server.stop_thread()
        return rtts


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--lock-s", type=float, default=10.0)
    parser.add_argument("--fsync-ms", type=float, default=50.0, help="extra time of each journal fsync (a loaded disk)")
    parser.add_argument("--only", nargs="*", default=[], help="run only the OPTIONS rows whose name has one of these")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the journaling and retry lines are expected here by the thousand

    before = cpu_per_session(separate, args.sessions, 30.0)
    after = cpu_per_session(ledger, args.sessions, 30.0)
    inline = cpu_per_session_queries(False, args.sessions, 30.0)
    threaded = cpu_per_session_queries(True, args.sessions, 30.0)
    handed_1 = cpu_per_session_batched(args.sessions, 1, 30.0)
    handed_16 = cpu_per_session_batched(args.sessions, 16, 30.0)
    print(f"durable path, CPU per session (final+START+INTERIM+STOP, {args.sessions} sessions):")
    print(f"  separate writes           {before:8.0f} us")
    print(f"  one transaction           {after:8.0f} us   ({after / before:.2f}x)")
    print(f"  queries, on the loop      {inline:8.0f} us")
    print(f"  queries, policy thread    {threaded:8.0f} us   ({threaded / inline:.2f}x)  (PolicyWorker.run, a future each)")
    print(f"  the driver's hand-over    {handed_1:8.0f} us   ({handed_1 / inline:.2f}x)  (submit_many + AnswerInbox, "
          "one query at a time)")
    print(f"  ... 16 sessions at once   {handed_16:8.0f} us   ({handed_16 / inline:.2f}x)  (16 queries per hand-over)")

    lock = f"locked {args.lock_s:g} s"
    slow = f"fsync +{args.fsync_ms:g} ms"
    runs: list[tuple[str, Callable[[], list[float]]]] = [
        ("unlocked, policy on the loop", lambda: options_during_lock(args.lock_s / 2, 10, locked=False)),
        ("unlocked, policy thread", lambda: options_during_lock(args.lock_s / 2, 10, locked=False, thread=True)),
        (f"{lock}, wait 5 s, on the loop", lambda: options_during_lock(args.lock_s, 5000, locked=True)),
        (f"{lock}, wait 10 ms, on the loop", lambda: options_during_lock(args.lock_s, 10, locked=True)),
        (f"{lock}, wait 10 ms, policy thread",
         lambda: options_during_lock(args.lock_s, 10, locked=True, thread=True)),
        (f"{lock}, {slow}, on the loop",
         lambda: options_during_lock(args.lock_s, 10, locked=True, fsync_ms=args.fsync_ms)),
        (f"{lock}, {slow}, policy thread",
         lambda: options_during_lock(args.lock_s, 10, locked=True, thread=True, fsync_ms=args.fsync_ms)),
        ("+ registrations on the loop",
         lambda: options_during_lock(args.lock_s, 10, locked=True, registrations="loop", thread=True)),
        ("+ registrations, writer thread",
         lambda: options_during_lock(args.lock_s, 10, locked=True, registrations="thread", thread=True)),
    ]
    print("OPTIONS round trip while sessions run (a FINAL, a START and a STOP every 50 ms):")
    for name, measure in runs:
        if args.only and not any(word in name for word in args.only):
            continue
        rtts = measure()
        print(f"  {name:40s} n={len(rtts):5d}  p50 {statistics.median(rtts):8.2f} ms  p99 {pct(rtts, 0.99):8.2f}"
              f" ms  max {max(rtts):8.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
