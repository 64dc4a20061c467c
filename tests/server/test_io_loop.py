"""The UDP driver reads several datagrams per wake-up and re-arms its timer once per batch, on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from server_kit import EXAMPLES

from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from server.config import load_config
from server.io import READ_BATCH, EmbeddedServer, _arrival, _enable_arrival_times

PINGS = 40


def _options(i: int, port: int) -> bytes:
    return (f"OPTIONS sip:eu.gamesdk.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-batch-{i};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@eu.gamesdk.test>;tag=p{i}\r\nTo: <sip:eu.gamesdk.test>\r\n"
            f"Call-ID: batch-{i}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


async def _burst(config_path: Path, tmp_path: Path) -> tuple[int, int, int]:
    config = dataclasses.replace(load_config(config_path), database=tmp_path / "eu.sqlite3")
    server = EmbeddedServer(config, port=0, policy=False)
    await server.start()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    probe.setblocking(False)
    rearms = 0
    try:
        protocol = server.protocol
        assert protocol is not None
        original = protocol._rearm

        def counting() -> None:
            nonlocal rearms
            rearms += 1
            original()

        protocol._rearm = counting  # type: ignore[method-assign]
        # Every datagram is in the socket's queue before the loop wakes up once.
        for i in range(PINGS):
            probe.sendto(_options(i, probe.getsockname()[1]), server.address)
        answers = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while answers < PINGS and loop.time() < deadline:
            try:
                data = probe.recv(65535)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            response = parse_message_untrusted(data)
            assert response.status == 200  # type: ignore[union-attr]
            answers += 1
        return answers, protocol.batched_reads, rearms
    finally:
        probe.close()
        await server.stop()


def test_a_burst_is_read_in_batches_on_the_selector_loop(tmp_path: Path) -> None:
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        answers, batched, rearms = runner.run(_burst(EXAMPLES / "eu.toml", tmp_path))
    assert answers == PINGS
    # The first datagram comes through the transport; the driver reads the rest of the burst itself.
    assert batched >= min(PINGS, READ_BATCH) - 1
    # One timer re-arm per batch, not per datagram.
    assert rearms < PINGS // 4


async def _pings_one_at_a_time(config_path: Path, tmp_path: Path, count: int) -> list[float | None]:
    """``count`` OPTIONS from a client thread, each sent once the last is answered (every one wakes the idle
    loop); returns the timeouts the loop polled its selector with meanwhile."""
    config = dataclasses.replace(load_config(config_path), database=tmp_path / "eu.sqlite3")
    server = EmbeddedServer(config, port=0, policy=False)
    await server.start()
    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]  # the selector loop's own (what epoll_wait is)
    polls: list[float | None] = []
    original = selector.select

    def counting(timeout: float | None = None) -> Any:
        polls.append(timeout)
        return original(timeout)

    def client() -> int:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(10)
        try:
            for i in range(count):
                # The loop back to its idle poll first: this thread shares the GIL with it, and a ping sent while
                # the loop is still in its batch would be read in that batch.
                time.sleep(0.003)
                probe.sendto(_options(i, probe.getsockname()[1]), server.address)
                while True:  # the answer to this one (the server's own pings go elsewhere)
                    answer = parse_message_untrusted(probe.recv(65535))
                    if isinstance(answer, Response) and answer.call_id == f"batch-{i}@127.0.0.1":
                        break
            return count
        finally:
            probe.close()

    try:
        await asyncio.sleep(0.2)  # the start-up's own work done
        selector.select = counting
        assert await loop.run_in_executor(None, client) == count
    finally:
        selector.select = original
        await server.stop()
    return polls


def test_a_datagram_that_wakes_the_selector_loop_takes_one_poll(tmp_path: Path) -> None:
    """Handled, answered, its policy queries handed over and the timer re-armed in the pass of the loop that read
    it: not a second pass with a zero-timeout poll (an epoll_wait system call and a callback) per wake-up."""
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        polls = runner.run(_pings_one_at_a_time(EXAMPLES / "eu.toml", tmp_path, PINGS))
    assert len(polls) >= PINGS, polls
    assert sum(1 for timeout in polls if timeout == 0) < PINGS // 4, polls


class _Socket:
    """A socket whose sends fail with ``failures`` (an exception per call, in turn) before they succeed."""

    def __init__(self, failures: list[OSError | None]) -> None:
        self.failures = failures
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, dest: object) -> int:
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        self.sent.append(data)
        return len(data)


class _Transport:
    """The selector transport's send side: it queues while ``queued`` (the kernel's buffer full)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.queued = 0

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.queued

    def sendto(self, data: bytes, dest: object) -> None:
        self.sent.append(data)
        self.queued += len(data)


def test_sends_go_to_the_socket_and_through_the_transport_while_it_queues() -> None:
    """On the selector loop a datagram goes straight to the socket; once the kernel's buffer is full (EAGAIN) it and
    the ones after it go through the transport, which queues them, until its queue is empty: the order holds. A
    send's error goes to error_received, as the transport reports it."""
    from server.io import ServerProtocol

    async def main() -> tuple[list[bytes], list[bytes], list[str]]:
        loop = asyncio.get_running_loop()
        sock = _Socket([None, BlockingIOError(), None, ConnectionRefusedError("refused"), None])
        errors: list[str] = []

        class _Reporting(ServerProtocol):
            def error_received(self, exc: Exception) -> None:
                errors.append(str(exc))

        protocol = _Reporting(_Node(), loop, sock)  # type: ignore[arg-type]  # stand-ins
        transport = _Transport()
        protocol.transport = transport  # type: ignore[assignment]
        dest = ("127.0.0.1", 5070)
        protocol._send([(b"1", dest), (b"2", dest), (b"3", dest)])  # 2 meets EAGAIN: 2 and 3 queue behind it
        protocol._send([(b"4", dest)])  # the transport still holds 2 and 3
        transport.queued = 0  # the transport sent its queue (the socket was writable)
        protocol._send([(b"5", dest), (b"6", dest)])  # 6 meets an ICMP error
        protocol._send([(b"7", dest)])
        return sock.sent, transport.sent, errors

    direct, queued, errors = asyncio.run(main())
    assert direct == [b"1", b"5", b"7"]
    assert queued == [b"2", b"3", b"4"]
    assert errors == ["refused"]


def _loop_factories() -> list[Callable[[], asyncio.AbstractEventLoop]]:
    factories: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.SelectorEventLoop]
    try:
        import uvloop
    except ImportError:  # the fast extra is not installed: the selector loop alone
        return factories
    return [*factories, uvloop.new_event_loop]


async def _receive(sock: socket.socket, bound_s: float = 20.0) -> bytes:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while loop.time() < deadline:
        try:
            return sock.recv(65535)
        except BlockingIOError:
            await asyncio.sleep(0.005)
    raise AssertionError("nothing arrived")


#: How long the tests keep the server's loop off its socket (a busy server), against a round trip of about 1 ms.
BUSY_S = 1.5


async def _kernel_stamps_arrivals(bound_s: float = 5.0) -> None:
    """Return once the kernel stamps datagrams as they arrive, machine-wide.

    The server asks for arrival stamps when it starts. If no socket on the machine had them on before, Linux turns
    them on later, from a work queue (``net_enable_timestamp``). A datagram that arrives before then carries no
    stamp, and ``SIOCGSTAMPNS`` gives the time it was read. On a busy CI machine the first ping's answer came in
    that window, so the test must wait for stamps first."""
    recv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    send = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        recv.bind(("127.0.0.1", 0))
        fd = _enable_arrival_times(recv.fileno())  # the server's own way of asking, and of reading, below
        assert fd is not None, "this kernel gives no arrival stamps (SIOCGSTAMPNS)"
        deadline = time.monotonic() + bound_s
        age = 0.0
        while time.monotonic() < deadline:
            send.sendto(b"stamp?", recv.getsockname())
            await asyncio.sleep(0.05)
            recv.recv(64)
            now = time.monotonic()
            arrival = _arrival(fd, now)
            age = 0.0 if arrival is None else now - arrival
            if age >= 0.03:  # stamped when it arrived, not when it was read
                return
        raise AssertionError(f"the kernel did not stamp arrivals within {bound_s} s (last age {age * 1000:.2f} ms)")
    finally:
        recv.close()
        send.close()


@contextlib.asynccontextmanager
async def _eu_and_a_peer_socket(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedServer, socket.socket]]:
    """eu running, and a plain non-blocking UDP socket on loopback playing the peer."""
    config = dataclasses.replace(load_config(EXAMPLES / "eu.toml"), database=tmp_path / "eu.sqlite3")
    server = EmbeddedServer(config, port=0, policy=False)
    await server.start()
    na = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    na.bind(("127.0.0.1", 0))
    na.setblocking(False)
    try:
        yield server, na
    finally:
        na.close()
        await server.stop()


async def _ping_answered_while_busy(tmp_path: Path) -> float | None:
    """na is a plain socket: it answers eu's ping at once, then eu's loop stays busy BUSY_S before it reads."""
    async with _eu_and_a_peer_socket(tmp_path) as (server, na):
        await _kernel_stamps_arrivals()
        server.set_peer("na.gamesdk.test", na.getsockname())
        ping = parse_message_untrusted(await _receive(na))
        assert isinstance(ping, Request) and ping.method == "OPTIONS"
        na.sendto(response_for(ping, 200, to_tag="na").to_bytes(), server.address)
        time.sleep(BUSY_S)  # noqa: ASYNC251 - on purpose: the answer waits in eu's socket (the loop is busy)
        assert server.node is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while server.node.federation.rtt_ms("na.gamesdk.test") is None and loop.time() < deadline:
            await asyncio.sleep(0.005)
        return server.node.federation.rtt_ms("na.gamesdk.test")


@pytest.mark.parametrize("factory", _loop_factories())
def test_a_ping_answer_is_timed_at_its_arrival_not_after_the_busy_loop_read_it(
        tmp_path: Path, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    with asyncio.Runner(loop_factory=factory) as runner:
        transit = runner.run(_ping_answered_while_busy(tmp_path))
    # the kernel's receive time of the answer, not the moment the loop read it: the transit the policy adds to
    # the latency budget is the path's, not the BUSY_S the answer waited in the socket
    assert transit is not None and transit < BUSY_S * 1000 / 2


async def _ping_the_busy_server(tmp_path: Path) -> Response:
    """A peer pings eu with a Timestamp while eu's loop is busy BUSY_S: eu's answer says how long it held it."""
    async with _eu_and_a_peer_socket(tmp_path) as (server, na):
        await asyncio.sleep(0.05)  # the server's own start-up pings go out first
        await _kernel_stamps_arrivals()
        ping = _options(1, na.getsockname()[1]).replace(b"Content-Length: 0", b"Timestamp: 54.25\r\nContent-Length: 0")
        na.sendto(ping, server.address)
        time.sleep(BUSY_S)  # noqa: ASYNC251 - on purpose: eu's loop is busy, the ping waits in its socket
        while True:
            answer = parse_message_untrusted(await _receive(na))
            if isinstance(answer, Response):
                return answer
    raise AssertionError("unreachable")


@pytest.mark.parametrize("factory", _loop_factories())
def test_a_ping_s_answer_reports_the_time_it_waited_in_the_busy_server(
        tmp_path: Path, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    with asyncio.Runner(loop_factory=factory) as runner:
        answer = runner.run(_ping_the_busy_server(tmp_path))
    assert answer.status == 200
    echo = answer.headers.get("Timestamp")
    # RFC 3261 section 8.2.6.1: the value as sent, and the delay since the ping arrived (at least the busy time)
    assert echo is not None and echo.split()[0] == "54.25", echo
    assert float(echo.split()[1]) >= BUSY_S * 0.9


class _Query:
    def __init__(self, n: int) -> None:
        self.calls = ()
        self.now = float(n)
        self.wall = 1_700_000_000.0 + n
        self.purpose = "invite"


class _Thread:
    """The policy thread's interface the driver uses (PolicyWorker.submit_many / inbox), recording hand-overs."""

    def __init__(self, room: int = 1024) -> None:
        self.handed: list[list[tuple[object, ...]]] = []
        self.room = room

    def inbox(self, loop: asyncio.AbstractEventLoop, handle: Callable[..., None]) -> object:
        return object()

    def submit_many(self, items: list[tuple[object, ...]], inbox: object) -> int:
        self.handed.append(items)
        return min(len(items), self.room)


class _Node:
    """A node whose every datagram emits one policy query (an INVITE the policy must check)."""

    max_message_bytes = 65_535

    def __init__(self) -> None:
        self.queries: list[_Query] = []
        self.answered: list[tuple[_Query, object]] = []
        self.hooks = type("Hooks", (), {})()
        self.hooks.runner = _Thread()  # type: ignore[attr-defined]

    def handle_datagram(self, data: bytes, source: object, now: float, **_: object) -> list[object]:
        self.made = getattr(self, "made", 0) + 1
        self.queries.append(_Query(self.made - 1))
        return []

    def answer_query(self, query: _Query, answer: object, now: float) -> list[object]:
        self.answered.append((query, answer))
        return []

    def take_queries(self) -> list[_Query]:
        taken, self.queries = self.queries, []
        return taken

    def get_timer(self) -> float | None:
        return None


def test_the_queries_of_one_loop_iteration_go_to_the_policy_thread_in_one_hand_over() -> None:
    """uvloop calls datagram_received once per datagram of a wake-up (the driver reads no more itself): their
    queries are handed over together after the iteration's I/O, not one hand-over (a wake-up of the thread and a
    GIL hand-off) per datagram."""
    from server.io import ServerProtocol

    async def main() -> list[list[tuple[object, ...]]]:
        node = _Node()
        protocol = ServerProtocol(node, asyncio.get_running_loop())  # type: ignore[arg-type]  # a stand-in node
        for i in range(3):
            protocol.datagram_received(_options(i, 5060), ("127.0.0.1", 5060))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return node.hooks.runner.handed  # type: ignore[attr-defined, no-any-return]

    handed = asyncio.run(main())
    assert [[item[2:] for item in items] for items in handed] == [
        [(0.0, 1_700_000_000.0), (1.0, 1_700_000_001.0), (2.0, 1_700_000_002.0)]]  # in order, their own times


def _hand_overs_while_a_job_is_with_the_thread(room: int, later: int) -> tuple[list[list[float]], list[str]]:
    """One datagram's query handed over; ``later`` datagrams in later loop iterations while it is with the thread;
    then its answer comes back. Returns the hand-overs (the queries' times) and the answers' errors."""
    from server.hooks import QueryAnswer
    from server.io import ServerProtocol

    async def main() -> tuple[list[list[float]], list[str]]:
        node = _Node()
        runner = node.hooks.runner  # type: ignore[attr-defined]
        protocol = ServerProtocol(node, asyncio.get_running_loop())  # type: ignore[arg-type]  # a stand-in node
        protocol.datagram_received(_options(0, 5060), ("127.0.0.1", 5060))
        await asyncio.sleep(0)
        runner.room = room
        for i in range(later):
            protocol.datagram_received(_options(i + 1, 5060), ("127.0.0.1", 5060))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        first = runner.handed[0][0][0]
        protocol._answered_from_thread([(first, QueryAnswer())])
        await asyncio.sleep(0)
        return ([[item[2] for item in items] for items in runner.handed],
                [str(answer.error) for _, answer in node.answered])

    return asyncio.run(main())


def test_queries_that_come_while_a_job_is_with_the_policy_thread_go_with_its_answers() -> None:
    """The thread wakes once per round trip: queries of later iterations wait (in order, with their own times) for
    the answers of the job under way, then go over together."""
    handed, errors = _hand_overs_while_a_job_is_with_the_thread(room=1024, later=3)
    assert handed == [[0.0], [1.0, 2.0, 3.0]] and errors == ["None"]


def test_with_the_policy_queue_full_a_query_is_handed_over_and_refused_at_once() -> None:
    """Back-pressure unchanged: no room in the thread's queue, nothing waits on the loop (refused "busy" at once)."""
    handed, errors = _hand_overs_while_a_job_is_with_the_thread(room=0, later=2)
    assert handed == [[0.0], [1.0], [2.0]]
    assert errors == ["policy service busy", "policy service busy", "None"]


def test_the_queries_kept_on_the_loop_are_bounded() -> None:
    """At most POLICY_HOLD_MAX queries wait for the job under way: that many go over at once (the next one then
    waits for their answers)."""
    from server.io import POLICY_HOLD_MAX

    handed, _ = _hand_overs_while_a_job_is_with_the_thread(room=1024, later=POLICY_HOLD_MAX + 1)
    assert [len(items) for items in handed] == [1, POLICY_HOLD_MAX]


def _invite_200(allow: str, cseq: str = "CSeq: 1 INVITE") -> bytes:
    return (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-a\r\n"
            f"From: <sip:a@eu.gamesdk.test>;tag=a\r\nTo: <sip:b@eu.gamesdk.test>;tag=b\r\nCall-ID: c1\r\n"
            f"{cseq}\r\nAllow: {allow}\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize(("data", "timed"), [
    (_invite_200("INVITE, ACK, CANCEL, BYE, OPTIONS"), False),  # SIPp's and most UAs' 200 of an INVITE
    (_invite_200("INVITE, OPTIONS", cseq="CSeq: 7 OPTIONS"), True),
    (_invite_200("INVITE", cseq="cseq:  7 OPTIONS"), True),
    (_options(1, 5060), True),
    (_invite_200("OPTIONS, INVITE"), False),
])
def test_only_options_read_the_kernel_receive_time(data: bytes, timed: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The receive time (an ioctl and two clock reads) is for the OPTIONS pings: a response whose Allow header
    ends with OPTIONS is not one (before: every 200 of an INVITE from SIPp read it, one ioctl per call)."""
    from server import io

    asked: list[int] = []
    monkeypatch.setattr(io, "_arrival", lambda fd, now: asked.append(fd) or now)

    class _Plain(_Node):
        def handle_datagram(self, data: bytes, source: object, now: float, **_: object) -> list[object]:
            return []

    async def main() -> None:
        protocol = io.ServerProtocol(_Plain(), asyncio.get_running_loop())  # type: ignore[arg-type]  # stand-in
        protocol._stamp_fd = 99
        protocol._pump.datagram(data, ("127.0.0.1", 5070))

    asyncio.run(main())
    assert asked == ([99] if timed else [])


class _IdleThread(_Thread):
    """A policy thread that answers checks inline while ``idle`` (PolicyWorker.answer_inline)."""

    def __init__(self) -> None:
        super().__init__()
        self.idle = True
        self.inline: list[float] = []

    def answer_inline(self, calls: tuple[object, ...], now: float, wall: float) -> object:
        if not self.idle:
            return None
        from server.hooks import QueryAnswer

        self.inline.append(now)
        return QueryAnswer()


def test_a_check_is_answered_on_the_loop_while_no_query_is_with_the_policy_thread() -> None:
    """With nothing of the driver's with the thread, the queries the thread would answer idle are answered in the
    loop's iteration (no hand-over); once one is handed over, the later ones follow it to the thread, in order."""
    from server.hooks import QueryAnswer
    from server.io import ServerProtocol

    async def main() -> tuple[list[float], list[list[float]], list[float]]:
        node = _Node()
        runner = _IdleThread()
        node.hooks.runner = runner  # type: ignore[attr-defined]
        protocol = ServerProtocol(node, asyncio.get_running_loop())  # type: ignore[arg-type]  # a stand-in node
        protocol.datagram_received(_options(0, 5060), ("127.0.0.1", 5060))
        await asyncio.sleep(0)
        runner.idle = False  # the next one goes to the thread
        protocol.datagram_received(_options(1, 5060), ("127.0.0.1", 5060))
        await asyncio.sleep(0)
        runner.idle = True  # idle again, but a query of the driver is with the thread: the next one waits for it
        protocol.datagram_received(_options(2, 5060), ("127.0.0.1", 5060))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        protocol._answered_from_thread([(runner.handed[0][0][0], QueryAnswer())])
        await asyncio.sleep(0)
        return runner.inline, [[item[2] for item in items] for items in runner.handed], \
            [q.now for q, _ in node.answered]

    inline, handed, answered = asyncio.run(main())
    assert inline == [0.0, 2.0] and handed == [[1.0]] and answered == [0.0, 1.0, 2.0]


class _DecidingThread(_Thread):
    """A policy thread that decides on the loop while idle (PolicyWorker.decide_inline): the first ``checks`` queries
    answered at once, the next ``staged`` decided and handed over for their write only."""

    def __init__(self, checks: int, staged: int) -> None:
        super().__init__()
        self.checks, self.staged = checks, staged
        self.decided: list[list[tuple[object, ...]]] = []

    def decide_inline(self, items: list[tuple[object, ...]], inbox: object) -> tuple[list[object], int]:
        from server.hooks import QueryAnswer

        self.decided.append(items)
        checks = min(self.checks, len(items))
        return [QueryAnswer() for _ in range(checks)], min(self.staged, len(items) - checks)


def test_a_2xx_decided_on_the_loop_is_in_flight_until_its_write_is_answered() -> None:
    """With nothing of the driver's with the thread, decide_inline gets the queries first: the checks it answered
    are answered in this iteration, those it decided (their write handed to the thread) are in flight, the rest
    go over after them in order, and later queries wait for the answers as for any job. Before: only checks were
    answered on the loop (answer_inline); every 2xx's FINAL went to the thread whole."""
    from server.hooks import QueryAnswer
    from server.io import ServerProtocol

    async def main() -> tuple[_DecidingThread, list[float], list[float], int]:
        node = _Node()
        runner = _DecidingThread(checks=1, staged=1)
        node.hooks.runner = runner  # type: ignore[attr-defined]
        protocol = ServerProtocol(node, asyncio.get_running_loop())  # type: ignore[arg-type]  # a stand-in node
        for i in range(3):
            node.handle_datagram(b"", None, float(i))
        protocol._ask_policy()
        in_flight = protocol.policy_in_flight
        protocol.datagram_received(_options(3, 5060), ("127.0.0.1", 5060))  # waits for the answers under way
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        waited = [q.now for q, _ in node.answered]
        protocol._answered_from_thread([(runner.decided[0][1][0], QueryAnswer()),
                                        (runner.handed[0][0][0], QueryAnswer())])
        await asyncio.sleep(0)
        return runner, waited, [q.now for q, _ in node.answered], in_flight

    runner, waited, answered, in_flight = asyncio.run(main())
    assert [[item[2] for item in items] for items in runner.decided] == [[0.0, 1.0, 2.0], [3.0]]
    assert in_flight == 2  # the decided one and the one handed over whole
    assert [[item[2] for item in items] for items in runner.handed] == [[2.0]]
    assert waited == [0.0]  # query 3 waited for the answers under way
    assert answered == [0.0, 1.0, 2.0, 3.0]
