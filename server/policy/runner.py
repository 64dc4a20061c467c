"""server/policy/runner: how the policy is wired into a region, one async face for both deployments, and the
standalone policy process.

The SIP server calls the policy through the sans-IO hooks :func:`make_policy_hooks` builds: a
:class:`PolicyServer` in-process (the default), or, when ``[policy] url`` is set, queries the hooks emit and the
server's driver answers with :class:`HttpQueryRunner` (the asynchronous HTTP client: the signalling loop never
waits for the policy process). For asyncio code, :class:`AsyncPolicy` is the same choice as coroutines:
:class:`EmbeddedPolicy` (timers on the running loop) or :class:`~server.policy.http.PolicyHttpClient`;
:func:`open_policy` picks one from the config. :func:`serve_policy` is what ``gamesdk-server policy --config FILE``
runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from server.hooks import QueryAnswer
from server.publish import DialogPublications
from server.random_pool import HexTokens

from .config import PolicyConfig
from .core import PolicyServer
from .hooks import PolicyBackend, RegionPolicyHooks
from .http import PolicyHttpClient, PolicyHttpService, PolicyUnavailable
from .ledger import FileJournal, Journal, MemoryJournal, SqliteLedger, open_loop_connection
from .lifetime import PolicyOperation
from .model import AppSession, Decision, Deny, EndReason, SessionKey
from .queries import PolicyCall
from .store import open_region_db

__all__ = [
    "AsyncPolicy",
    "EmbeddedPolicy",
    "HttpQueryRunner",
    "build_policy_server",
    "make_policy_hooks",
    "open_policy",
    "policy_document",
    "serve_policy",
]

log = logging.getLogger(__name__)

#: How long a policy write waits for a database lock held by another process before it is journaled instead.
WRITE_BUSY_TIMEOUT_S = 0.01
#: How long start-up waits for a locked database to take the journal's changes.
RESTORE_PATIENCE_S = 30.0


class AsyncPolicy(Protocol):
    """The policy as coroutines for asyncio code; implemented by :class:`EmbeddedPolicy` and ``PolicyHttpClient``."""

    async def preliminary(self, request: AppSession) -> Decision: ...

    async def final(self, request: AppSession) -> Decision: ...

    async def apply(self, op: PolicyOperation) -> bool: ...

    async def release(self, key: SessionKey, reason: EndReason, sip_reason: str | None = None) -> bool: ...

    async def release_player(self, player: str) -> int: ...


class EmbeddedPolicy:
    """A :class:`PolicyServer` in the SIP server's process, its timers armed on the running asyncio loop.

    Call :meth:`start` once inside the loop (it restores persisted reservations), :meth:`close` at shutdown.
    The wrapped ``policy`` stays available for direct (synchronous) use by sans-IO code.
    """

    def __init__(self, policy: PolicyServer, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self._clock = clock
        self._wall_clock = wall_clock
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        _restore(self.policy, self._clock(), self._wall_clock(), "server")
        self.rearm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def rearm(self) -> None:
        """Re-arm the single loop timer; call after using ``self.policy`` directly."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.policy.get_timer()
        if when is not None:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, when - self._clock()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        try:
            self.policy.handle_timer(self._clock())
        finally:
            self.rearm()

    async def preliminary(self, request: AppSession) -> Decision:
        return self.policy.preliminary(request, self._clock(), wall=self._wall_clock())

    async def final(self, request: AppSession) -> Decision:
        decision = self.policy.final(request, self._clock(), wall=self._wall_clock())
        self.rearm()
        return decision

    async def apply(self, op: PolicyOperation) -> bool:
        res = self.policy.apply(op, self._clock())
        self.rearm()
        return res is not None

    async def release(self, key: SessionKey, reason: EndReason, sip_reason: str | None = None) -> bool:
        res = self.policy.release(key, self._clock(), reason, sip_reason=sip_reason)
        self.rearm()
        return res is not None

    async def release_player(self, player: str) -> int:
        released = self.policy.release_player(player, self._clock())
        self.rearm()
        return len(released)


class HttpQueryRunner:
    """Answers the hooks' :class:`~server.hooks.PolicyQuery` calls over HTTP (by the rules of
    :mod:`server.policy.queries`); the server's driver runs it as a task per query."""

    def __init__(self, client: PolicyHttpClient) -> None:
        self.client = client

    async def run(self, calls: tuple[object, ...]) -> QueryAnswer:
        client = self.client
        results: list[object] = []
        for call in calls:
            if not isinstance(call, PolicyCall):
                raise TypeError(f"not a policy call: {call!r}")
            if call.kind in ("preliminary", "final"):
                assert call.request is not None
                ask = client.preliminary if call.kind == "preliminary" else client.final
                decision = await ask(call.request)  # never raises: unreachable = Deny(resource=policy)
                results.append(decision)
                if isinstance(decision, Deny):
                    break
            elif call.kind == "apply":
                assert call.op is not None
                try:
                    results.append(await client.apply_reservation(call.op))
                except PolicyUnavailable as exc:
                    return QueryAnswer(tuple(results), str(exc))
            else:
                try:
                    results.append(await client.release_player(call.player, player_ip=call.player_ip))
                except PolicyUnavailable as exc:
                    log.warning("policy service: releasing the sessions of %s failed: %s", call.player, exc)
                    results.append(None)
        return QueryAnswer(tuple(results))

    async def close(self) -> None:
        await self.client.close()


def build_policy_server(
    config: PolicyConfig,
    db: str | Path | sqlite3.Connection,
    *,
    region: str = "",
    token_factory: Callable[[], str] | None = None,
    loop_writes: bool = False,
) -> PolicyServer:
    """A PolicyServer persisting into the region database (path or an open connection).

    With a path, changes the database refuses wait in ``<path>.journal`` (:class:`FileJournal`) until it takes
    them; with an open connection they wait in memory. ``loop_writes`` (the SIP server's embedded policy, whose
    thread is server/policy/worker.py): a second connection to the file for the signalling loop, which writes a
    2xx's FINAL rows itself when the database takes them at once (:func:`~server.policy.ledger.open_loop_connection`:
    no busy wait, no checkpoint on the loop).
    """
    # A write waits at most WRITE_BUSY_TIMEOUT_S for another process's lock, then the change goes to the
    # journal: the policy's thread answers every session of the region in turn, so one write must not hold the
    # others for seconds on SQLite's busy handler.
    # Opened here, used afterwards by the policy's thread (server/policy/worker.py): one user at a time.
    conn = db if isinstance(db, sqlite3.Connection) else open_region_db(db, check_same_thread=False)
    if not isinstance(db, sqlite3.Connection):
        conn.execute(f"PRAGMA busy_timeout = {int(WRITE_BUSY_TIMEOUT_S * 1000)}")
    journal: Journal = MemoryJournal() if isinstance(db, sqlite3.Connection) else FileJournal(journal_path(db))
    loop_conn = (open_loop_connection(db) if loop_writes and not isinstance(db, sqlite3.Connection)
                 and str(db) != ":memory:" else None)
    return PolicyServer(
        config,
        # (The bound method: a call of the instance looks its ``__call__`` up each time, ~440 instructions of a
        # token's ~1,800; four tokens per call's 2xx.)
        token_factory=token_factory or HexTokens().__call__,
        region=region,
        ledger=SqliteLedger(conn, config.tariff, loop_conn=loop_conn),
        journal=journal,
    )


def journal_path(db: str | Path) -> Path:
    """Where the region database's write journal lives: next to it."""
    return Path(f"{db}.journal")


def _restore(policy: PolicyServer, now: float, wall: float, who: str) -> None:
    """Replay the journal, load the persisted reservations; those whose lease ran out while ``who`` was down are
    released (and billed ``server-restart``) by :meth:`PolicyServer.restore`."""
    deadline = time.monotonic() + RESTORE_PATIENCE_S
    while True:
        try:
            released = policy.restore(now, wall=wall)
            break
        except sqlite3.OperationalError as exc:
            # Another process holds the database (a backup, an operator's query): wait for it, in bounded time.
            if time.monotonic() >= deadline:
                raise RuntimeError(f"the region database stayed locked at start-up: {exc}") from None
            time.sleep(0.1)
    if released:
        log.info("start-up released %d reservations that ran out while the %s was down", len(released), who)


def open_policy(
    config: PolicyConfig,
    db: str | Path | sqlite3.Connection,
    *,
    region: str = "",
    clock: Callable[[], float] = time.monotonic,
) -> AsyncPolicy:
    """The policy the SIP server should use: the HTTP client if ``[policy] url`` is set, else embedded.

    For the embedded one, call ``.start()`` inside the running loop.
    """
    if config.settings.url:
        return PolicyHttpClient(config.settings.url, token=config.settings.token or "",
                                timeout_s=config.settings.timeout_s)
    return EmbeddedPolicy(build_policy_server(config, db, region=region), clock=clock)


async def serve_policy(
    config: PolicyConfig,
    db: str | Path | sqlite3.Connection,
    *,
    region: str = "",
    host: str | None = None,
    port: int | None = None,
    ready: Callable[[str, int], Any] | None = None,
    stop: asyncio.Event | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Run the standalone policy process until ``stop`` is set (or the task is cancelled).

    Listens on ``[policy] listen`` unless ``host``/``port`` are given; ``ready(host, port)`` is called once
    listening (the CLI prints it). With ``ssl_context`` it serves HTTPS (server.policy_tls).
    """
    if not config.settings.token:
        raise ValueError("the policy process needs [policy] token (its callers' bearer token)")
    policy = build_policy_server(config, db, region=region)
    _restore(policy, time.monotonic(), time.time(), "policy server")
    service = PolicyHttpService(policy, token=config.settings.token)
    default_host, default_port = config.settings.listen_host_port
    bound = await service.start(host or default_host, default_port if port is None else port,
                                ssl_context=ssl_context)
    if ready is not None:
        ready(*bound)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await service.close()


def policy_document(server_config: Any) -> dict[str, Any]:
    """The policy tables of a ``ServerConfig`` as the mapping :meth:`PolicyConfig.from_mapping` reads."""
    doc: dict[str, Any] = {"access_networks": [dict(n) for n in server_config.access_networks_raw]}
    if server_config.classes_raw:
        doc["classes"] = [dict(c) for c in server_config.classes_raw]
    if server_config.tariff_raw:
        doc["tariff"] = dict(server_config.tariff_raw)
    if server_config.policy_raw:
        doc["policy"] = dict(server_config.policy_raw)
    return doc


def make_policy_hooks(server_config: Any, node: Any, *, policy_config: PolicyConfig | None = None,
                      token_factory: Callable[[], str] | None = None) -> RegionPolicyHooks:
    """The policy hooks for a ``RegionalServer`` (``server.io`` calls this with the node it built).

    Embedded by default: a :class:`PolicyServer` on the region database, restored at once (leases that ran
    out while the server was down are released and billed ``server-restart``). With ``[policy] url`` the hooks
    emit queries for the separate policy process and ``hooks.runner`` (:class:`HttpQueryRunner`) is what the
    driver answers them with (each call bounded by ``timeout_s``, a whole-request deadline). Must run inside the
    server's event loop (its clock is the node's ``now``).
    """
    config = policy_config or PolicyConfig.from_mapping(policy_document(server_config))
    settings = config.settings
    backend: PolicyBackend | None = None
    runner: HttpQueryRunner | None = None
    if settings.url:
        from server.policy_tls import policy_client_context

        runner = HttpQueryRunner(PolicyHttpClient(settings.url, token=settings.token or "",
                                                  timeout_s=settings.timeout_s,
                                                  ssl_context=policy_client_context(server_config)))
    else:
        server = build_policy_server(config, server_config.database, region=server_config.name,
                                     token_factory=token_factory, loop_writes=True)
        try:
            loop_now = asyncio.get_running_loop().time()
        except RuntimeError:  # no loop (a sans-IO test): the node runs on the monotonic clock
            loop_now = time.monotonic()
        _restore(server, loop_now, time.time(), "server")
        backend = server
    hooks = RegionPolicyHooks(
        backend=backend,
        config=config,
        domain=server_config.domain,
        publications=DialogPublications(
            etag_factory=lambda: os.urandom(12).hex(),
            min_expires_s=settings.min_expires_s,
            max_expires_s=settings.max_expires_s,
            default_expires_s=settings.default_expires_s,
        ),
        wall_clock=time.time,
        clock=time.monotonic,
        tag_factory=node.ids.tag,
        transit_rtt_ms=node.federation.rtt_ms,
        player_vanished=getattr(node, "player_vanished", None),
    )
    hooks.runner = runner
    return hooks
