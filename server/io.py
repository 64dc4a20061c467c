"""asyncio UDP driver around :class:`server.node.RegionalServer`, and :class:`EmbeddedServer` for the demo and tests.

The driver is thin (aioquic's ``asyncio/protocol.py`` shape): ``datagram_received`` feeds the node with the loop's
clock, sends what comes out, and re-arms one timer. Measured fixes from DESIGN section 9: the transport's
``max_size`` is lowered (CPython 3.11 reads each datagram into a 256 KiB buffer otherwise, 6x slower), and
datagrams are handled in the callback, not with an ``await`` per packet. ``max_size`` is the message limit + 1, so
an oversize datagram arrives one byte too long and gets its 513 instead of being silently cut.

Policy queries (``[policy] url``: a separate policy process): after each datagram and timer the driver takes the
node's queries and answers each in a task with the hooks' runner (asynchronous HTTP), then sends what the answer
releases. At most ``MAX_POLICY_QUERIES`` are under way; beyond that a query is answered at once as "policy service
busy" (the INVITE and the PUBLISH get 503 + Retry-After), so a slow policy service cannot pile up memory.

The embedded policy's thread (server/policy/worker.py): the queries of one loop iteration go over in one job
(``submit_many``), and while this driver's previous job is still with the thread, new queries wait for its answers
(at most :data:`POLICY_HOLD_MAX` of them, and never when the thread's queue is full: those are handed over, and
refused "busy", at once) and then go over together: the thread wakes once per round trip, not once per query
(each wake-up is a futex call and a GIL hand-off each way). A query keeps the times its message arrived. While
none of the driver's queries is with the thread and the thread is idle, a query of checks only (the INVITE's
PRELIMINARY: it reads the policy, never writes) is answered on the loop at once (``PolicyWorker.answer_inline``),
and the 2xx queries after the checks are decided on the loop too, their rows written there when the database takes
them at once, else only their write handed to the thread (``PolicyWorker.decide_inline``: answered once the rows
are written).

Several datagrams per wake-up: on the standard selector loop the callback goes on reading the socket until it is
empty (at most :data:`READ_BATCH` datagrams) and then re-arms the timer, in the same pass of the loop; uvloop
(libuv) reads up to 32 per wake-up on its own, and the timer is re-armed once after the loop's I/O callbacks (one
``call_soon``). Either way once per batch, not after every datagram: asking every layer for its next deadline cost
6% of the CPU per call. The per-datagram lines (read, feed the node, send) are
:class:`server.datagram_pump.DatagramPump`'s, compiled in the fast build.

Every SIP message in and out is logged at DEBUG on the ``server.trace`` logger (start line, peer, Call-ID at
DEBUG; the whole message when ``server.trace.full`` is at DEBUG too).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import signal
import socket
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from gamesdk.address import Address
from gamesdk.identity import IdentitySigner
from server.accounts import AccountStore
from server.config import ConfigError, ServerConfig
from server.control import ControlServer
from server.datagram_pump import DatagramPump
from server.db import open_region_db
from server.hooks import PolicyHooks, PolicyQuery, QueryAnswer
from server.logs import setup_logging  # re-exported: it used to live here
from server.node import AccountLookup, RegionalServer
from server.publish import DialogPublications
from server.random_pool import RandomPool
from server.registrations import RegistrationStore
from server.regwriter import RegistrationWriter
from server.reload import load_for_reload
from server.transport_tls import TlsTransport

__all__ = ["EmbeddedServer", "ServerProtocol", "serve_forever", "setup_logging"]

log = logging.getLogger(__name__)
trace = logging.getLogger("server.trace")
trace_full = logging.getLogger("server.trace.full")


#: How often changed registrations are handed to the writer thread (and always at shutdown): a crash (SIGKILL,
#: power) loses at most this much; a SIGTERM loses nothing the database takes within 5 s.
REGISTRATION_FLUSH_S = 1.0

#: How long a SIGTERM waits for proxied requests under way to get their final response.
DRAIN_TIMEOUT_S = 10.0

#: Policy queries under way at once, at most (see the module docstring).
MAX_POLICY_QUERIES = 1024

#: Kernel receive buffer asked for: bursts of SIPp retransmissions must not overflow it (research/perf.md).
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024

#: At most this many datagrams are read per wake-up of the selector loop (then other callbacks get their turn).
READ_BATCH = 64
#: Queries the driver keeps, at most, while its previous job is with the embedded policy's thread (then they go at
#: once, as when the thread's queue is full): see the module docstring.
POLICY_HOLD_MAX = 64

#: Linux ``SIOCGSTAMPNS``: the kernel's receive time of the last datagram read from a socket (``struct timespec``).
#: Asked for OPTIONS only (1.6 us a call), whose round trips measure the transit between the regions: read after a
#: batch of other datagrams, or after the loop was off the CPU, an answer would be timed late (460 ms seen with two
#: CPU hogs on the 2-core test machine, where the path itself took under a millisecond).
SIOCGSTAMPNS = 0x8907
#: A kernel receive time older than this is not the datagram just read (or the clocks jumped): not used.
MAX_ARRIVAL_AGE_S = 5.0


def _enable_arrival_times(fd: int) -> int | None:
    """Have the kernel stamp this socket's datagrams on arrival (the first ``SIOCGSTAMPNS`` turns it on and
    answers ENOENT: nothing read yet). Returns ``fd``, or None where the call is not available."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fcntl.ioctl(fd, SIOCGSTAMPNS, bytes(16))
    except FileNotFoundError:
        return fd
    except OSError:
        return None
    return fd


def _arrival(fd: int, now: float) -> float | None:
    """When the datagram just read from ``fd`` arrived, on the loop's clock (``now`` is when it was read)."""
    try:
        sec, nsec = struct.unpack("qq", fcntl.ioctl(fd, SIOCGSTAMPNS, bytes(16)))
    except (OSError, struct.error):
        return None
    age = time.time() - (int(sec) + int(nsec) / 1e9)
    if not 0.0 <= age <= MAX_ARRIVAL_AGE_S:
        return None
    return now - age


def _first_line(data: bytes) -> str:
    end = data.find(b"\r\n")
    return data[: end if 0 <= end < 200 else 200].decode("utf-8", "replace")


def _call_id(data: bytes) -> str:
    for marker in (b"\r\nCall-ID:", b"\r\ni:", b"\r\ncall-id:", b"\r\nCALL-ID:"):
        start = data.find(marker)
        if start >= 0:
            start += len(marker)
            end = data.find(b"\r\n", start)
            return data[start:end].strip().decode("utf-8", "replace")[:100]
    return "-"


class ServerProtocol(asyncio.DatagramProtocol):
    """Feeds datagrams and timer ticks to the node; sends what it returns."""

    def __init__(self, node: RegionalServer, loop: asyncio.AbstractEventLoop,
                 sock: socket.socket | None = None) -> None:
        self.node = node
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._rearm_soon = False
        # The bound socket, read directly for more datagrams per wake-up on the selector loop (the transport reads
        # one per readiness event there) and sent to directly; uvloop reads batches itself and owns its socket.
        selector = isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
        # The loop's clock: asyncio's loop.time() is time.monotonic() behind a Python call.
        self._pump = DatagramPump(node, sock if selector else None, time.monotonic if selector else loop.time,
                                  READ_BATCH, self.error_received, self._trace, _arrival)
        self.closed = loop.create_future()
        # Read once: asking the logger per datagram cost 3% of the CPU per call. Set levels before starting.
        self.tracing = trace.isEnabledFor(logging.DEBUG)
        #: Policy queries being answered (strong references: the loop keeps only weak ones to tasks).
        self.policy_tasks: set[asyncio.Task[None]] = set()
        #: Where the embedded policy's thread puts its answers (server/policy/worker.py AnswerInbox), made at the
        #: first query.
        self._inbox: Any = None
        self._inbox_runner: Any = None
        #: Queries handed to the policy's thread whose answers have not come back yet.
        self.policy_in_flight = 0

    # What the pump holds, as the driver's own attributes (the driver's users and tests set them here).
    @property
    def transport(self) -> asyncio.DatagramTransport | None:
        return cast("asyncio.DatagramTransport | None", self._pump.transport)

    @transport.setter
    def transport(self, transport: asyncio.DatagramTransport | None) -> None:
        self._pump.transport = transport

    @property
    def streams(self) -> TlsTransport | None:
        """SIP over TLS (server.transport_tls), when the region listens on tls:."""
        return cast("TlsTransport | None", self._pump.streams)

    @streams.setter
    def streams(self, streams: TlsTransport | None) -> None:
        self._pump.streams = streams

    @property
    def tracing(self) -> bool:
        return self._pump.tracing

    @tracing.setter
    def tracing(self, on: bool) -> None:
        self._pump.tracing = on

    @property
    def _stamp_fd(self) -> int | None:
        """The socket whose kernel receive times time the OPTIONS pings (None: not available here)."""
        return self._pump.stamp_fd

    @_stamp_fd.setter
    def _stamp_fd(self, fd: int | None) -> None:
        self._pump.stamp_fd = fd

    @property
    def batched_reads(self) -> int:
        """Datagrams read by the driver itself (beyond the first of a wake-up): the batching at work."""
        return self._pump.batched_reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # The selector transport reads max_size bytes per datagram (attribute of CPython's implementation).
        if hasattr(transport, "max_size"):
            transport.max_size = self.node.max_message_bytes + 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            except OSError:
                pass
            self._stamp_fd = _enable_arrival_times(sock.fileno())
        self._rearm()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._pump.sock is None:
            self._pump.datagram(data, addr)
            if not self._rearm_soon:
                # uvloop calls this once per datagram (up to 32 per wake-up): the policy queries of all the
                # iteration's datagrams are handed over together, and the timer re-armed once, after its I/O
                # callbacks. Asking here would hand each query to the policy's thread on its own (a wake-up of the
                # thread and a GIL hand-off each).
                self._rearm_soon = True
                self.loop.call_soon(self._rearm_batch)
            return
        self._pump.read(data, addr)
        # The selector loop: this wake-up's datagrams are all handled (the socket read empty, or the batch full and
        # the selector calls again), so the queries go over and the timer is re-armed now. Through call_soon it
        # took another pass of the loop per wake-up: a zero-timeout epoll_wait and a callback.
        self._rearm_batch()

    def _rearm_batch(self) -> None:
        self._rearm_soon = False
        if not self.closed.done():
            if self.node.queries:
                self._ask_policy()
            self._rearm()

    def stream_received(self, data: bytes, source: Address, now: float) -> list[tuple[bytes, Address]]:
        """A message framed on a TLS flow: handled as a datagram from the flow's address."""
        if self.tracing:
            self._trace("in", data, source)
        out = self.node.handle_datagram(data, source, now)
        if self.node.queries:
            self._ask_policy()
        self._rearm()
        return out

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable when a player went away) are normal on UDP.
        log.debug("udp error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self.closed.done():
            self.closed.set_result(None)

    def _send(self, out: list[tuple[bytes, Address]], udp_source: Address | None = None) -> None:
        """Send over UDP, or over the TLS flow at the destination (see DatagramPump.send)."""
        self._pump.send(out, udp_source)

    def _trace(self, direction: str, data: bytes, addr: Address) -> None:
        trace.debug('%s peer=%s:%d len=%d call-id=%s "%s"', direction, addr[0], addr[1], len(data), _call_id(data),
                    _first_line(data))
        if trace_full.isEnabledFor(logging.DEBUG):
            trace_full.debug("%s %s:%d\n%s", direction, addr[0], addr[1], data.decode("utf-8", "replace"))

    def _rearm(self) -> None:
        when = self.node.get_timer()
        if when is None:
            return
        # Only move the timer earlier; a timer that fires early finds nothing due and re-arms (cheap).
        if self._timer_at is None or when < self._timer_at - 0.0005:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        out = self.node.handle_timer(self.loop.time())
        if out:
            self._send(out)
        if self.node.queries:
            self._ask_policy()
        self._rearm()

    # -- policy queries ------------------------------------------------------------------------------------

    def _ask_policy(self) -> None:
        runner = getattr(self.node.hooks, "runner", None)
        submit_many = getattr(runner, "submit_many", None)  # the embedded policy's thread (server/policy/worker.py)
        if submit_many is not None:
            # All the queries of this batch handed to the policy thread in one job, with the times their messages
            # arrived; the answers come back in batches (one wake-up of the loop per batch). What the bounded queue
            # refuses is answered at once: back-pressure.
            waiting = len(self.node.queries)
            if not waiting:
                return
            if self.policy_in_flight and waiting < min(POLICY_HOLD_MAX, getattr(runner, "room", 0)):
                return  # with the answers of the job under way (_answered_from_thread): one wake-up of the thread
            queries = self.node.take_queries()
            if not self.policy_in_flight:
                queries = self._answer_checks_inline(runner, queries)
                if not queries:
                    return
            inbox = self._policy_inbox(runner)
            now_wall = time.time()
            items = [(query, query.calls, query.now, query.wall if query.wall is not None else now_wall)
                     for query in queries]
            taken = submit_many(items, inbox)
            self.policy_in_flight += taken
            for query in queries[taken:]:
                self._answered(query, QueryAnswer(error="policy service busy"))
            return
        for query in self.node.take_queries():
            if runner is None or len(self.policy_tasks) >= MAX_POLICY_QUERIES:
                why = "no policy service configured" if runner is None else "policy service busy"
                self._answered(query, QueryAnswer(error=why))
                continue
            task = self.loop.create_task(self._ask_one(runner, query))
            self.policy_tasks.add(task)
            task.add_done_callback(self.policy_tasks.discard)

    def _answer_checks_inline(self, runner: Any, queries: list[PolicyQuery[Any]]) -> list[PolicyQuery[Any]]:
        """The leading queries that only check (an INVITE's PRELIMINARY reads the policy, never writes) answered on
        the loop while the policy's thread is idle (``answer_inline``): no hand-over, no wake-up of the thread, the
        INVITE relayed in this iteration. Returns the rest, in order, for the thread. Called with none of this
        driver's queries with the thread, so the order of the answers is the order of the queries."""
        decide_inline = getattr(runner, "decide_inline", None)
        if decide_inline is not None:
            return self._decide_inline(runner, decide_inline, queries)
        answer_inline = getattr(runner, "answer_inline", None)
        if answer_inline is None:
            return queries
        now_wall = time.time()
        done = 0
        for query in queries:
            answer = answer_inline(query.calls, query.now, query.wall if query.wall is not None else now_wall)
            if answer is None:
                break
            done += 1
            self._resume(query, answer)
        if done and self.node.queries:  # emitted by a finished query (rare): asked on the next turn
            self.loop.call_soon(self._ask_policy)
        return queries[done:]

    def _decide_inline(self, runner: Any, decide_inline: Any,
                       queries: list[PolicyQuery[Any]]) -> list[PolicyQuery[Any]]:
        """As :meth:`_answer_checks_inline`, with the 2xx queries after the leading checks decided on the loop too
        (``PolicyWorker.decide_inline``): only their rows' write goes to the thread, their answers come back through
        the inbox once the rows are written. Returns the rest, in order, for the thread."""
        now_wall = time.time()
        items = [(query, query.calls, query.now, query.wall if query.wall is not None else now_wall)
                 for query in queries]
        answers, handed = decide_inline(items, self._policy_inbox(runner))
        self.policy_in_flight += handed
        done = len(answers)
        for query, answer in zip(queries, answers):
            self._resume(query, answer)
        if done and self.node.queries:  # emitted by a finished query (rare): asked on the next turn
            self.loop.call_soon(self._ask_policy)
        return queries[done + handed:]

    def _policy_inbox(self, runner: Any) -> Any:
        inbox = self._inbox
        if inbox is None or self._inbox_runner is not runner:
            inbox = self._inbox = runner.inbox(self.loop, self._answered_from_thread)
            self._inbox_runner = runner
        return inbox

    async def _ask_one(self, runner: Any, query: PolicyQuery[Any]) -> None:
        try:
            answer: QueryAnswer = await runner.run(query.calls)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("policy query failed")
            answer = QueryAnswer(error=f"{type(exc).__name__}: {exc}")
        self._answered(query, answer)

    def _answered_from_thread(self, answers: list[tuple[PolicyQuery[Any], QueryAnswer]]) -> None:
        """A batch of the policy thread's answers, on the loop: one send per answer, the queries kept meanwhile
        handed over, one timer re-arm."""
        self.policy_in_flight = max(0, self.policy_in_flight - len(answers))
        if self.closed.done():
            return
        for query, answer in answers:
            self._resume(query, answer)
        if self.node.queries:  # kept while these were with the thread (or emitted by a finished query)
            self._ask_policy()
        self._rearm()

    def _resume(self, query: PolicyQuery[Any], answer: QueryAnswer) -> None:
        """One answer of a batch handed to the node and what it sends sent; a bug in one resumption is logged and
        must not strand the other answers of the batch."""
        try:
            out = self.node.answer_query(query, answer, self.loop.time())
        except Exception:
            log.exception("policy answer failed (%s)", query.purpose)
            return
        if out:
            self._send(out)

    def _answered(self, query: PolicyQuery[Any], answer: QueryAnswer) -> None:
        out = self.node.answer_query(query, answer, self.loop.time())
        if out:
            self._send(out)
        if self.node.queries:  # a finished query may emit more (rare): asked on the next turn
            self.loop.call_soon(self._ask_policy)
        self._rearm()


def _open_accounts(config: ServerConfig) -> AccountStore:
    return AccountStore(config.database, config.auth.realm, config.auth.digest_algorithms)


class EmbeddedServer:
    """A regional server inside an existing event loop (:meth:`start`) or in a background thread
    (:meth:`start_in_thread`), for the demo, the SDK tests and the server tests.

    ``port=0`` (the default) binds a free loopback port; the bound address is :attr:`address`. Two embedded
    regions federate once each knows the other's address: ``eu.set_peer("na.gamesdk.test", na.address)``.

    The policy component (admission, reservations, lifetime, billing on the region database) is wired in by
    default, as in ``gamesdk-server run``; ``policy=False`` runs the bare SIP server, and ``hooks`` or
    ``hooks_factory`` put other hooks in its place.
    """

    def __init__(self, config: ServerConfig, *, port: int | None = 0, host: str | None = None,
                 accounts: AccountLookup | None = None, hooks: PolicyHooks | None = None,
                 hooks_factory: Callable[[RegionalServer], PolicyHooks] | None = None,
                 policy: bool = True, random_bytes: Callable[[int], bytes] | None = None,
                 persist_registrations: bool | None = None, web: bool = True,
                 web_port: int | None = None, policy_thread: bool = True) -> None:
        self.config = config
        #: The region's web site (server.web.site.WebSite) once started, when the region file has [web].
        self.web: Any = None
        self._web_enabled = web
        self._web_port = web_port
        #: The config as read from the file (``config`` gets the bound port): what a reload compares with.
        self.file_config = config
        # Registrations are kept in the region database when the server keeps its accounts there too.
        self._persist = accounts is None if persist_registrations is None else persist_registrations
        self._registrations: RegistrationStore | None = None
        #: Writes registration changes on its own thread (never on the signalling loop).
        self.registration_writer: RegistrationWriter | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._port = config.listen.port if port is None else port
        self._host = host or config.listen.host
        self._accounts = accounts
        self._own_accounts: AccountStore | None = None
        self._hooks = hooks
        #: Run an embedded policy on its own thread (server/policy/worker.py), never on the signalling loop;
        #: ``policy_thread=False`` keeps it on the loop (benchmarks compare the two).
        self._policy_thread = policy_thread
        if hooks is None and hooks_factory is None and policy:
            hooks_factory = _embedded_policy
        self._hooks_factory = hooks_factory
        self._random_bytes = random_bytes if random_bytes is not None else RandomPool()
        self.node: RegionalServer | None = None
        self.protocol: ServerProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.address: Address = (self._host, self._port)
        #: True when ``run --log-level`` set the level: a reload then leaves it alone.
        self.log_level_fixed = False
        #: The TLS listener's address once started (None without a tls: listen address).
        self.tls_address: Address | None = None
        # A region on port 0 (tests, the demo) takes a free TLS port too.
        self._tls_port: int | None = None if port is None else 0

    # -- accounts ------------------------------------------------------------------------------------------

    @property
    def accounts(self) -> AccountLookup:
        if self._accounts is None:
            self._own_accounts = _open_accounts(self.config)
            self._accounts = self._own_accounts
        return self._accounts

    def add_user(self, name: str, password: str, *, admin: bool = False) -> None:
        """Create an account in this region's database (needs the default SQLite account store)."""
        accounts = self.accounts
        if not isinstance(accounts, AccountStore):
            raise TypeError("add_user needs the SQLite account store")
        accounts.add(name, password, now=_wall_time(), admin=admin)

    # -- in a running loop ---------------------------------------------------------------------------------

    async def start(self) -> Address:
        """Bind and start serving in the running loop; returns the bound (host, port)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        host, port = sock.getsockname()[:2]
        self.address = (host, port)
        config = self.config.with_listen(host, port)
        self.config = config
        secrets: Callable[[str], bytes] | None = None
        if self._persist:
            store = RegistrationStore(open_region_db(self.config.database))
            self._registrations = store
            self.registration_writer = RegistrationWriter(self.config.database)
            secrets = lambda name: store.secret(name, lambda: self._random_bytes(32))
        node = RegionalServer(config, self.accounts, random_bytes=self._random_bytes, hooks=self._hooks,
                              secrets=secrets)
        node.wall_clock_offset = time.time() - loop.time()
        if self._hooks_factory is not None:
            node.set_hooks(self._hooks_factory(node))
        if self._policy_thread:
            _run_policy_on_thread(node.hooks)
        node.set_identity(identity_signer(config))
        self.node = node
        if self._persist:
            self._restore_registrations(node, loop)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        except OSError:
            pass
        _, protocol = await loop.create_datagram_endpoint(lambda: ServerProtocol(node, loop, sock), sock=sock)
        self.protocol = protocol
        if self._registrations is not None:
            self._flush_handle = loop.call_later(REGISTRATION_FLUSH_S, self._flush_tick)
        tls_listen = config.tls_listen
        if tls_listen is not None:
            streams = TlsTransport(config, loop, protocol.stream_received, protocol._send)
            try:
                tls_port = tls_listen.port if self._tls_port is None else self._tls_port
                self.tls_address = await streams.listen(tls_listen.host if self._tls_port is None else host,
                                                        tls_port)
            except BaseException:
                if protocol.transport is not None:
                    protocol.transport.close()
                raise
            protocol.streams = streams
            node.flows = streams
            node.federation.flows = streams
            self.config = config = config.with_tls_listen(*self.tls_address)
            node.config = config
        log.info("server: region %s (%s) listening on %s, %d peer(s)", config.name, config.domain,
                 ", ".join(str(a) for a in config.listens), len(config.peers))
        if config.web is not None and self._web_enabled:
            from server.web.site import WebSite

            site = WebSite(self, config.web)
            try:
                # A region on port 0 (tests) takes a free web port too, unless told otherwise.
                await site.start(port=self._web_port if self._web_port is not None
                                 else (0 if self._tls_port == 0 else None))
            except BaseException:
                if protocol.transport is not None:
                    protocol.transport.close()
                raise
            self.web = site
        return self.address

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """Send datagrams the node produced outside a datagram or timer callback (the web site's REFERs)."""
        protocol = self.protocol
        if protocol is None:
            raise RuntimeError("the server is not running")
        protocol._send(datagrams)
        protocol._rearm()

    def set_peer(self, domain: str, address: Address) -> None:
        """Point the federation entry of ``domain`` at ``address`` (thread-safe when running in a thread)."""
        node = self.node
        if node is None:
            raise RuntimeError("start the server first")
        if self._thread is not None and self._loop is not None and threading.current_thread() is not self._thread:
            done = threading.Event()

            def apply() -> None:
                node.federation.set_peer(domain, address)
                if self.protocol is not None and self.protocol.streams is not None:
                    self.protocol.streams.set_peer_address(domain, address)
                if self.protocol is not None:
                    self.protocol._rearm()  # the next ping is due now
                done.set()

            self._loop.call_soon_threadsafe(apply)
            done.wait(5.0)
        else:
            node.federation.set_peer(domain, address)
            if self.protocol is not None:
                if self.protocol.streams is not None:
                    self.protocol.streams.set_peer_address(domain, address)
                self.protocol._rearm()

    def ping_peers(self) -> None:
        """Send an OPTIONS ping to every federated peer now (thread-safe when running in a thread)."""
        node = self.node
        if node is None:
            raise RuntimeError("start the server first")

        def apply() -> None:
            node.federation.ping_now()
            if self.protocol is not None:
                self.protocol._rearm()

        if self._thread is not None and self._loop is not None and threading.current_thread() is not self._thread:
            self._loop.call_soon_threadsafe(apply)
        else:
            apply()

    # -- registrations kept across restarts -----------------------------------------------------------------

    def _restore_registrations(self, node: RegionalServer, loop: asyncio.AbstractEventLoop) -> None:
        assert self._registrations is not None
        wall = _wall_time()
        offset = wall - loop.time()
        restored = node.location.restore(self._registrations.load(wall, offset))
        dialogs = self._registrations.load_dialogs(wall, offset)
        node.proxy.restore_dialogs(dialogs, loop.time())
        publications = getattr(node.hooks, "publications", None)
        if isinstance(publications, DialogPublications):
            kept = publications.restore(self._registrations.load_publications(wall, offset), loop.time())
            if kept:
                log.info("server: restored %d dialog publication(s)", kept)
        nonces = self._registrations.take_nonces(offset)
        node.login.core.nonces.restore(nonces, loop.time())
        if nonces is None:
            log.info("server: no nonce counts from a clean shutdown: nonces issued before now get stale=true")
        # The peers' round trips measured before the restart: the first ping after it waits behind the backlog of
        # the restart, and alone it would set the transit latency every call is admitted against.
        for domain, host, port, samples in self._registrations.take_peer_rtts(offset):
            peer = node.federation.by_domain(domain)
            if peer is not None and peer.address == (host, port):
                for when, sample in samples:
                    peer.add_sample(sample, when)
        if restored or dialogs:
            log.info("server: restored %d registration(s) and %d call(s) from %s", restored, len(dialogs),
                     self.config.database)

    def flush_registrations(self) -> int:
        """Hand the registrations and relayed calls that changed since the last flush to the writer thread;
        returns how many rows it took (written shortly after, retried while the database refuses them)."""
        node, writer, loop = self.node, self.registration_writer, self._loop
        if node is None or writer is None or loop is None:
            return 0
        changes = node.location.take_changes()
        dialogs, node.proxy.opened_dialogs = node.proxy.opened_dialogs, []
        publications = getattr(node.hooks, "publications", None)
        published = publications.take_changes() if isinstance(publications, DialogPublications) else None
        wall = _wall_time()
        return writer.submit(changes, dialogs, wall - loop.time(), wall, publications=published)

    def _save_handover(self) -> None:
        """At a clean stop (no request is read any more): the nonce counts and the peers' round-trip samples,
        for the next start."""
        node, store, loop = self.node, self._registrations, self._loop
        if node is None or store is None or loop is None:
            return
        wall = _wall_time()
        try:
            store.save_nonces(node.login.core.nonces.snapshot(), wall - loop.time(), wall)
            store.save_peer_rtts([(p.domain, p.address[0], p.address[1], list(p.samples))
                                  for p in node.federation.peers()], wall - loop.time(), wall)
        except sqlite3.Error as exc:
            log.error("server: cannot save the nonce counts and round trips (the next start treats older nonces "
                      "as stale and measures again): %s", exc)

    def _flush_tick(self) -> None:
        self.flush_registrations()
        if self._loop is not None and self._registrations is not None:
            self._flush_handle = self._loop.call_later(REGISTRATION_FLUSH_S, self._flush_tick)

    # -- drain and reload -------------------------------------------------------------------------------------

    async def drain(self, timeout_s: float = 10.0, retry_after_s: int = 5) -> int:
        """Answer new requests 503 + Retry-After and wait (at most ``timeout_s``) until no proxied INVITE or
        out-of-dialog request waits for its final response (:meth:`RegionalServer.drain_pending`); returns how
        many still did at the end (0 when drained)."""
        node = self.node
        if node is None:
            return 0
        node.drain(retry_after_s, quiet_udp=node.config.drain_quiet_udp)
        log.info("server: draining (%d transaction(s) under way%s)", node.pending_transactions(),
                 _by_method(node.pending_by_method()))
        deadline = asyncio.get_running_loop().time() + timeout_s
        while node.drain_pending() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        left = node.drain_pending()
        if left:
            log.warning("server: drain timed out with %d transaction(s) under way%s", left,
                        _by_method(node.pending_by_method()))
        return left

    def reload(self, path: Path | None = None) -> ServerConfig:
        """Read the region file again and apply it without dropping sessions or registrations.

        Raises :class:`ConfigError` with the reason when the file cannot be applied; the old one stays in force.
        """
        node = self.node
        source = path or self.config.source
        if node is None or source is None:
            raise ConfigError("file", "nothing to reload: the server was not started from a file")
        new = load_for_reload(source, self.config, listen_as_configured=self.file_config)
        from server.policy.config import PolicyConfig
        from server.policy.runner import policy_document

        policy_config = PolicyConfig.from_mapping(policy_document(new))
        node.reload(new)
        reconfigure = getattr(node.hooks, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(policy_config)
        self.file_config = new
        self.config = node.config
        if not self.log_level_fixed:
            logging.getLogger().setLevel(getattr(logging, new.log_level.upper(), logging.INFO))
        if self.protocol is not None:
            self.protocol._rearm()
        self.refresh_tracing()
        log.warning("server: reloaded %s: %d access network(s), %d peer(s), log level %s", source,
                 len(new.access_networks), len(new.peers), logging.getLevelName(logging.getLogger().level))
        return new

    def refresh_tracing(self) -> None:
        """Re-read whether SIP messages are traced (the driver caches it: asking per datagram costs CPU)."""
        if self.protocol is not None:
            self.protocol.tracing = trace.isEnabledFor(logging.DEBUG)

    async def stop(self) -> None:
        """Stop serving, save the registrations and close the database."""
        protocol = self.protocol
        if self.web is not None:
            await self.web.close()
            self.web = None
        if protocol is not None and protocol.streams is not None:
            await protocol.streams.close()
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            await protocol.closed
        if protocol is not None:
            for task in list(protocol.policy_tasks):
                task.cancel()
        runner = getattr(self.node.hooks, "runner", None) if self.node is not None else None
        if runner is not None:
            await runner.close()
        self.protocol = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._registrations is not None:
            self.flush_registrations()
            writer = self.registration_writer
            if writer is not None:
                await asyncio.get_running_loop().run_in_executor(None, writer.close, 5.0)
                self.registration_writer = None
            self._save_handover()
            self._registrations.close()
            self._registrations = None
        if self._own_accounts is not None:
            self._own_accounts.close()
            self._own_accounts = None
            self._accounts = None
        log.info("server: region %s stopped", self.config.name)

    async def __aenter__(self) -> EmbeddedServer:  # noqa: PYI034 - final in practice
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- in a background thread ----------------------------------------------------------------------------

    def start_in_thread(self, timeout_s: float = 10.0) -> Address:
        """Run the server on its own event loop in a daemon thread; returns the bound address when ready."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"gamesdk-server-{self.config.name}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError("embedded server did not start")
        if failure:
            raise failure[0]
        return self.address

    def stop_thread(self, timeout_s: float = 10.0) -> None:
        """Stop a server started with :meth:`start_in_thread` and wait for its thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        self._thread = None


def identity_signer(config: ServerConfig) -> IdentitySigner | None:
    """The region signs identities (RFC 8224) with its TLS certificate's key, when it has one."""
    tls = config.tls
    if tls.certificate is None or tls.key is None:
        return None
    return IdentitySigner.from_pem(config.domain, tls.certificate.read_bytes(), tls.key.read_bytes(), time.time)


def _run_policy_on_thread(hooks: PolicyHooks) -> None:
    """Give an embedded policy (hooks with a ``backend``) its own thread: its writes leave the signalling loop."""
    use_worker = getattr(hooks, "use_worker", None)
    if use_worker is None or getattr(hooks, "backend", None) is None or getattr(hooks, "worker", None) is not None:
        return
    from server.policy.worker import PolicyWorker

    use_worker(PolicyWorker(lambda: hooks.backend))  # type: ignore[attr-defined]  # checked above


def _embedded_policy(node: RegionalServer) -> PolicyHooks:
    from server.policy.runner import make_policy_hooks

    return make_policy_hooks(node.config, node)


def _by_method(counts: dict[str, int]) -> str:
    return "".join(f", {n} {method}" for method, n in sorted(counts.items()))


def _wall_time() -> float:
    return time.time()


async def serve_forever(config: ServerConfig, *, hooks_factory: Callable[[RegionalServer], PolicyHooks] | None = None,
                        policy: bool = True, stop: asyncio.Event | None = None,
                        log_level_fixed: bool = False, drain_timeout_s: float = DRAIN_TIMEOUT_S,
                        with_control: bool = True) -> RegionalServer:
    """Run one region until SIGINT/SIGTERM (or ``stop`` is set); returns the node for its final figures.

    SIGTERM/SIGINT drain first (new requests 503 + Retry-After until the transactions under way finish), a second
    one stops at once. ``gamesdk-server ctl`` reaches it over ``config.control_path`` (:mod:`server.control`).
    SIGHUP reloads the region file (:meth:`EmbeddedServer.reload`); a bad file is refused with
    the reason in the log and the old one stays in force.
    """
    server = EmbeddedServer(config, port=None, hooks_factory=hooks_factory, policy=policy)
    server.log_level_fixed = log_level_fixed
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []

    def on_hup() -> None:
        try:
            server.reload()
        except ConfigError as exc:
            log.error("server: reload refused, keeping the running configuration: %s", exc)

    # Handlers first: a SIGTERM that arrives once the socket answers must already mean "shut down cleanly".
    for sig, handler in ((signal.SIGINT, stop.set), (signal.SIGTERM, stop.set), (signal.SIGHUP, on_hup)):
        try:
            loop.add_signal_handler(sig, handler)
            signals.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller stops us through `stop`
    control: ControlServer | None = None
    try:
        if with_control:
            # The control socket before the SIP sockets: once the region answers, `ctl` works (an init script may
            # run it right after the start); a command that comes in meanwhile is told the server is not running yet.
            control = ControlServer(server, server.config.control_path, on_drain=stop.set)
            await control.start()
        await server.start()
        await stop.wait()
        stop.clear()
        drain = asyncio.ensure_future(server.drain(drain_timeout_s))
        second = asyncio.ensure_future(stop.wait())  # a second SIGTERM stops at once
        await asyncio.wait({drain, second}, return_when=asyncio.FIRST_COMPLETED)
        for task in (drain, second):
            task.cancel()
    finally:
        log.info("server: shutting down")
        if control is not None:
            await control.close()
        for sig in signals:
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        await server.stop()
    assert server.node is not None
    stats = server.node.stats
    log.info("server: stopped after %d datagrams in, %d out, %d requests, %d responses, %d malformed",
             stats.datagrams_in, stats.datagrams_out, stats.requests, stats.responses, stats.malformed)
    return server.node
