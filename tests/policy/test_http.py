"""The policy service over real loopback HTTP: same decisions as embedded, timeouts count as failures."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from server.billing import SqliteBillingStore
from server.policy import (
    Activate,
    AppSession,
    Deny,
    DialogRef,
    EndReason,
    Grant,
    PolicyConfig,
    PolicyServer,
    Release,
    Resource,
    SqliteReservationStore,
    open_region_db,
)
from server.policy.http import PolicyHttpClient, PolicyHttpService, PolicyUnavailable
from server.policy.runner import EmbeddedPolicy, open_policy, serve_policy

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


def make_policy(config: PolicyConfig, tmp_path: Path) -> PolicyServer:
    conn = open_region_db(tmp_path / "region.sqlite")
    counter = itertools.count(1)
    return PolicyServer(config, token_factory=lambda: f"{next(counter):016x}", region="eu",
                        store=SqliteReservationStore(conn), billing=SqliteBillingStore(conn, config.tariff))


TOKEN = "policy-test-token-0123456789"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


async def with_service(policy: PolicyServer, body: Callable[[PolicyHttpClient, tuple[str, int]], Awaitable[T]]) -> T:
    service = PolicyHttpService(policy, token=TOKEN)
    host, port = await service.start("127.0.0.1", 0)
    try:
        async with PolicyHttpClient(f"http://{host}:{port}", token=TOKEN, timeout_s=5.0) as client:
            return await body(client, (host, port))
    finally:
        await service.close()


def test_operations_over_http(config: PolicyConfig, tmp_path: Path, req: Callable[..., AppSession]) -> None:
    policy = make_policy(config, tmp_path)

    async def body(client: PolicyHttpClient, _: tuple[str, int]) -> None:
        pre = await client.preliminary(req(1, up=300))
        assert isinstance(pre, Grant) and pre.token is None and pre.network == "eu-dsl"
        denied = await client.preliminary(req(2, up=5000))
        assert isinstance(denied, Deny) and denied.resource is Resource.UPLINK
        assert denied.reason == "insufficient uplink in eu-dsl (needs 5000 kbit/s, 1000 free)"
        grant = await client.final(req(1, up=300))
        assert isinstance(grant, Grant) and grant.token == "0000000000000001"
        assert await client.final(req(1, up=300)) == grant  # retransmitted 2xx: identical decision
        ref = DialogRef(call_id="call-1@eu.example", local_tag="from-1", remote_tag="to-1",
                        player="sip:alice@eu.example")
        assert await client.apply(Activate(ref=ref, expires_s=90)) is True
        intruder = DialogRef(call_id="call-1@eu.example", local_tag="from-1", remote_tag="to-1",
                             player="sip:mallory@eu.example")
        assert await client.apply(Release(ref=intruder, reason=EndReason.BYE_LOCAL)) is False
        sessions = await client.sessions()
        assert sessions["networks"][0]["uplinkFreeKbps"] == 700
        assert sessions["reservations"][0]["state"] == "active"
        assert await client.apply(Release(ref=ref, reason=EndReason.BYE_REMOTE, sip_reason="SIP;cause=200"))
        assert await client.release(req(1).key, EndReason.BYE_LOCAL) is False  # already released
        await client.final(req(3, up=10))
        assert await client.release_player("sip:alice@eu.example") == 1

    run(with_service(policy, body))
    assert policy.is_idle()


async def raw(addr: tuple[str, int], data: bytes) -> tuple[int, Any]:
    """One raw request; the answer's status and its JSON body (or its text when the framework answered)."""
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(data)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
    body = await reader.readexactly(length)
    writer.close()
    if b"application/json" in head:
        return status, json.loads(body)
    return status, {"detail": body.decode()}


def post(path: str, body: bytes, extra: str = AUTH) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (post("/app-sessions", b"{not json"), 400, "not JSON"),
        (post("/app-sessions", b'{"servInfStatus": "FINAL"}'), 400, "medComponents"),
        (post("/app-sessions", b'{"servInfStatus": "MAYBE", "medComponents": []}'), 400, "medComponents"),
        (post("/app-sessions", b"[1, 2]"), 400, "JSON object"),
        (post("/app-sessions/operations", b'{"op": "explode", "dialog": {"callId": "c", "localTag": "a",'
              b' "remoteTag": "b", "player": "p"}}'), 400, "op must be"),
        (post("/registrations/expired", b'{"player": 7}'), 400, "player"),
        (post("/nowhere", b"{}"), 404, "no resource"),
        (f"GET /app-sessions HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode(), 405, "use POST"),
        (f"POST /app-sessions HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode(), 400, "JSON object"),
        (f"POST /app-sessions HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: 99999999\r\n\r\n".encode(), 413,
         "exceeds"),
        (f"POST /app-sessions HTTP/1.1\r\nHost: x\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n"
         "3\r\n{no\r\n0\r\n\r\n".encode(), 400, "not JSON"),
        (b"HELLO\r\n\r\n", 400, "Invalid method"),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 400, "more than 8190 bytes"),
        (post("/app-sessions", b"{}", extra=""), 401, "bearer token required"),
        (post("/app-sessions", b"{}", extra="Authorization: Bearer wrong-token-0123456789\r\n"), 401, "bearer"),
        (b"GET /sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YTpi\r\n\r\n", 401, "bearer"),
    ],
)
def test_bad_http_requests_get_clear_errors(
    config: PolicyConfig, tmp_path: Path, data: bytes, status: int, words: str
) -> None:
    policy = make_policy(config, tmp_path)

    async def body(_: PolicyHttpClient, addr: tuple[str, int]) -> tuple[int, Any]:
        return await raw(addr, data)

    got_status, payload = run(with_service(policy, body))
    assert got_status == status
    assert words in payload["detail"]


def test_valid_final_with_raw_json(config: PolicyConfig, tmp_path: Path) -> None:
    policy = make_policy(config, tmp_path)
    doc = {
        "servInfStatus": "FINAL", "callId": "c1", "fromTag": "f", "toTag": "t", "side": "term",
        "player": "sip:bob@eu.example", "ueIpv4": "10.2.0.3",
        "medComponents": [{"medCompN": 1, "marBwUl": 64, "marBwDl": 64, "desMaxLatency": 50,
                           "qosReference": "action"}],
    }

    async def body(_: PolicyHttpClient, addr: tuple[str, int]) -> tuple[int, Any]:
        return await raw(addr, post("/app-sessions", json.dumps(doc).encode()))

    status, payload = run(with_service(policy, body))
    assert status == 201
    assert payload["granted"] is True and payload["network"] == "eu-fibre" and payload["class"] == "action"


def test_slow_policy_counts_as_failure(req: Callable[..., AppSession]) -> None:
    async def body() -> tuple[object, object]:
        hold = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await hold.wait()  # accepts the connection, never answers
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = PolicyHttpClient(f"http://127.0.0.1:{port}", token=TOKEN, timeout_s=0.2)
        try:
            decision = await client.final(req(1))
            try:
                await client.apply(Activate(ref=DialogRef(call_id="c", local_tag="a", remote_tag="b",
                                                          player="p"), expires_s=90))
                error: object = None
            except PolicyUnavailable as exc:
                error = exc
        finally:
            await client.close()
            hold.set()
            server.close()
            await server.wait_closed()
        return decision, error

    decision, error = run(body())
    assert isinstance(decision, Deny) and decision.resource is Resource.POLICY
    assert "no answer within 0.2 s" in decision.reason
    assert decision.status_hint == 580 and decision.warning_code == 370
    assert isinstance(error, PolicyUnavailable)


def test_unreachable_policy_counts_as_failure(req: Callable[..., AppSession]) -> None:
    async def body() -> object:
        # Bind and close a port so nothing listens there.
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        async with PolicyHttpClient(f"http://127.0.0.1:{port}", token=TOKEN, timeout_s=1.0) as client:
            return await client.preliminary(req(1))

    decision = run(body())
    assert isinstance(decision, Deny) and decision.resource is Resource.POLICY
    assert "policy server unavailable" in decision.reason


def test_service_timers_release_unconfirmed(
    region_doc: dict[str, Any], tmp_path: Path, req: Callable[..., AppSession]
) -> None:
    region_doc["policy"]["confirm_timeout_s"] = 0.05
    policy = make_policy(PolicyConfig.from_mapping(region_doc), tmp_path)

    async def body(client: PolicyHttpClient, _addr: tuple[str, int]) -> bool:
        assert isinstance(await client.final(req(1)), Grant)
        for _ in range(200):  # bounded wait for the loop timer (at most ~2 s)
            if policy.is_idle():
                return True
            await asyncio.sleep(0.01)
        return False

    assert run(with_service(policy, body)) is True


def test_standalone_process_and_open_policy(
    region_doc: dict[str, Any], tmp_path: Path, req: Callable[..., AppSession]
) -> None:
    async def body() -> tuple[object, object, int]:
        stop = asyncio.Event()
        bound: list[tuple[str, int]] = []
        task = asyncio.create_task(serve_policy(
            PolicyConfig.from_mapping(region_doc), tmp_path / "policy.sqlite", region="eu", host="127.0.0.1",
            port=0, ready=lambda h, p: bound.append((h, p)), stop=stop,
        ))
        while not bound:
            await asyncio.sleep(0.01)
        region_doc["policy"]["url"] = f"http://127.0.0.1:{bound[0][1]}"
        remote = open_policy(PolicyConfig.from_mapping(region_doc), tmp_path / "unused.sqlite")
        assert isinstance(remote, PolicyHttpClient)
        grant = await remote.final(req(1))
        await remote.close()
        del region_doc["policy"]["url"]
        embedded = open_policy(PolicyConfig.from_mapping(region_doc), tmp_path / "sip.sqlite")
        assert isinstance(embedded, EmbeddedPolicy)
        embedded.start()
        local = await embedded.final(req(1))
        released = await embedded.release_player("sip:alice@eu.example")
        embedded.close()
        stop.set()
        await task
        return grant, local, released

    grant, local, released = run(body())
    assert isinstance(grant, Grant) and isinstance(local, Grant)
    assert len(grant.token or "") == 32 and grant.token != local.token  # os.urandom tokens in production
    assert (grant.network, grant.uplink_kbps) == (local.network, local.uplink_kbps)
    assert released == 1


class ThreadedService:
    """The asyncio policy service on its own loop thread, for the blocking client (as the SIP server uses it)."""

    def __init__(self, make: Callable[[], PolicyServer]) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> tuple[PolicyServer, tuple[str, int]]:
            policy = make()  # SQLite connections belong to the thread that opens them
            self.service = PolicyHttpService(policy, token=TOKEN)
            return policy, await self.service.start("127.0.0.1", 0)

        self.policy, self.address = asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.service.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_blocking_client_for_the_sans_io_hooks(
    config: PolicyConfig, tmp_path: Path, req: Callable[..., AppSession]
) -> None:
    from server.policy.http import BlockingPolicyClient

    threaded = ThreadedService(lambda: make_policy(config, tmp_path))
    policy = threaded.policy
    try:
        client = BlockingPolicyClient(f"http://127.0.0.1:{threaded.address[1]}", token=TOKEN, timeout_s=5.0)
        assert isinstance(client.preliminary(req(1), 0.0), Grant)
        grant = client.final(req(1), 0.0)
        assert isinstance(grant, Grant) and grant.token
        ref = DialogRef(call_id="call-1@eu.example", local_tag="from-1", remote_tag="to-1",
                        player="sip:alice@eu.example")
        res = client.apply(Activate(ref=ref, expires_s=90), 0.0)
        assert res is not None and res.grant == grant
        assert client.apply(Release(ref=ref, reason=EndReason.BYE_LOCAL), 0.0) is not None
        assert client.apply(Release(ref=ref, reason=EndReason.BYE_LOCAL), 0.0) is None
        client.final(req(2), 0.0)
        client.release_player("sip:alice@eu.example", 0.0, player_ip="10.9.9.9")  # another address: kept
        assert len(policy.reservations()) == 1
        client.release_player("sip:alice@eu.example", 0.0, player_ip="10.1.0.7")
        assert client.get_timer() is None and client.handle_timer(0.0) == []
    finally:
        threaded.close()
    assert policy.is_idle()
    # Nothing listens any more: decisions become denials; a lifetime change is not applied, and says so (the
    # hooks then answer the PUBLISH 503 instead of acknowledging what did not happen).
    decision = client.final(req(3), 0.0)
    assert isinstance(decision, Deny) and decision.resource is Resource.POLICY
    with pytest.raises(PolicyUnavailable):
        client.apply(Activate(ref=ref, expires_s=90), 0.0)


def test_policy_process_main_reports_a_busy_port(region_doc: dict[str, Any], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    from types import SimpleNamespace

    from server.policy.http import main

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        region_doc["policy"]["listen"] = f"127.0.0.1:{busy.getsockname()[1]}"
        server_config = SimpleNamespace(name="eu", database=tmp_path / "eu.sqlite3")
        assert main(server_config, PolicyConfig.from_mapping(region_doc)) == 1
    finally:
        busy.close()
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_idle_connections_do_not_make_the_policy_process_unreachable(tmp_path: Path) -> None:
    """1,100 idle connections to a policy process with the usual 1024 file descriptors: it still answers."""
    import resource
    import socket
    import subprocess
    import sys

    examples = Path(__file__).resolve().parents[2] / "examples"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    text = (examples / "eu.toml").read_text(encoding="utf-8")
    text = text.replace('database = "eu.sqlite3"', f'database = "{tmp_path / "eu.sqlite3"}"')
    text += f'\n[policy]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
    region = tmp_path / "eu.toml"
    region.write_text(text, encoding="utf-8")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 3000:
        pytest.skip(f"this test opens 1,100 connections; the hard file limit is {hard}")

    # The policy process gets what a stock system gives: 1024 open files.
    launcher = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, "
                f"{hard})); sys.argv = ['server', 'policy', '--config', sys.argv[1]]; "
                "runpy.run_module('server', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", launcher, str(region)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "policy server for eu listening on ..."
        assert "listening on" in line, line
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft < 1400:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))

        async def attack_then_ask() -> tuple[int, object, int]:
            idle: list[asyncio.StreamWriter] = []
            gate = asyncio.Semaphore(64)

            async def connect() -> None:
                async with gate:  # a bounded number of handshakes at once, each bounded in time
                    try:
                        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 3.0)
                    except (OSError, TimeoutError):
                        return  # the backlog is full: this one did not get in
                    idle.append(writer)

            await asyncio.gather(*(connect() for _ in range(1100)))
            try:
                async with PolicyHttpClient(f"http://127.0.0.1:{port}", token=TOKEN, timeout_s=10.0) as client:
                    sessions = await client.sessions()
                async with PolicyHttpClient(f"http://127.0.0.1:{port}", token="wrong-token-0123456789",
                                            timeout_s=10.0) as intruder:
                    try:
                        await intruder.sessions()
                        refused = 0
                    except PolicyUnavailable as exc:
                        refused = 401 if "HTTP 401" in str(exc) else -1
            finally:
                for writer in idle:
                    writer.close()
            return len(idle), sessions.get("networks"), refused

        connected, networks, refused = asyncio.run(attack_then_ask())
        assert connected == 1100  # every one got in: the oldest idle ones were closed to make room
        assert isinstance(networks, list) and networks and refused == 401
    finally:
        proc.terminate()
        proc.wait(10)


def test_policy_process_refuses_to_run_without_a_token(region_doc: dict[str, Any], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from server.policy.http import main

    del region_doc["policy"]["token"]
    server_config = SimpleNamespace(name="eu", database=tmp_path / "eu.sqlite3")
    assert main(server_config, PolicyConfig.from_mapping(region_doc)) == 2
    assert "[policy] token is required" in capsys.readouterr().err
