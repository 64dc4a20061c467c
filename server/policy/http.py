"""server/policy/http: the policy server as its own process, over HTTP + JSON (aiohttp, server and client).

For operators who separate the policy server (``gamesdk-server policy --config FILE``; the SIP server then has
``[policy] url = "http://..."`` and the same ``[policy] token``). The API is N5-shaped (research/protocol.md (b)
"Internal policy API"):

=======  ============================  ==================================================================
POST     /app-sessions                 app session JSON + ``servInfStatus`` PRELIMINARY|FINAL -> decision
                                       (200 PRELIMINARY grant, 201 FINAL grant, 403 deny: ``cause``/``detail``)
POST     /app-sessions/operations      a PUBLISH-derived activate/refresh/release -> 200 reservation | 404
POST     /app-sessions/release         ``{"key": {...}, "reason": ..., "sipReason": ...}`` -> 200 | 404
POST     /registrations/expired        ``{"player": aor}`` -> ``{"released": n}``
GET      /sessions                     live reservations + capacity per access network
GET      /health                       ``{"ok": true}`` (the only resource open without the token)
=======  ============================  ==================================================================

Every other request needs ``Authorization: Bearer <[policy] token>`` (RFC 6750); without it the answer is 401.
The service keeps at most ``max_connections`` connections open (:mod:`server.weblisten`), so idle connections
cannot make it unreachable. Errors are JSON ``{"detail": ...}``.

The client counts a request that does not complete within ``[policy] timeout_s`` (connect, send, answer, body:
one deadline for the whole request) or any transport error as a failure: ``preliminary``/``final`` then return a
:class:`Deny` with resource ``policy``, so the SIP server answers 580 (INVITE path) or forwards the 2xx with
``Warning: 370`` and no token (2xx path), exactly as for a refusal.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gamesdk.errors import GameSdkError, RemoteProtocolError
from server.weblisten import DEFAULT_MAX_CONNECTIONS, Listener, serve_app

from .codec import (
    app_session_from_json_untrusted,
    app_session_to_json,
    capacity_to_json,
    decision_from_json_untrusted,
    decision_to_json,
    end_reason_from_json_untrusted,
    key_from_json_untrusted,
    key_to_json,
    operation_from_json_untrusted,
    operation_to_json,
    reservation_from_json_untrusted,
    reservation_to_json,
)
from .core import PolicyServer
from .ledger import LedgerUnavailable
from .lifetime import PolicyOperation
from .model import AppSession, Decision, Deny, EndReason, Grant, Reservation, Resource, SessionKey

__all__ = ["MAX_BODY_BYTES", "BlockingPolicyClient", "PolicyHttpClient", "PolicyHttpService", "PolicyUnavailable"]

log = logging.getLogger(__name__)

#: An app session is a few hundred bytes; 64 KiB bounds what one request or answer can make us buffer.
MAX_BODY_BYTES = 64 * 1024
#: Idle keep-alive connections (and connections that never send a request) are closed after this long.
IDLE_TIMEOUT_S = 30.0
_REALM = 'Bearer realm="gamesdk-policy"'

_Handler = Callable[[Any], tuple[int, object]]


class PolicyUnavailable(GameSdkError):
    """The policy process did not answer in time, or answered with something unusable."""


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers,
                             dumps=lambda o: json.dumps(o, separators=(",", ":")))


def _bearer_ok(header: str | None, token: bytes) -> bool:
    if header is None:
        return False
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token)


class PolicyHttpService:
    """Serves a :class:`PolicyServer` over HTTP/JSON and drives its timers from the asyncio loop.

    Args:
        policy: the policy server (with its SQLite stores; call ``policy.restore(now)`` before :meth:`start`).
        token: the bearer token callers must present (``[policy] token``); required.
        clock: monotonic seconds (``time.monotonic``); the policy's ``now``.
        wall_clock: epoch seconds (``time.time``), for the records' start times.
        max_connections: connections kept open at most (the oldest idle one is closed to admit a new one).
    """

    def __init__(self, policy: PolicyServer, *, token: str, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if not token:
            raise ValueError("the policy service needs a bearer token ([policy] token)")
        self.policy = policy
        self._token = token.encode()
        self._clock = clock
        self._wall_clock = wall_clock
        self._max_connections = max_connections
        self._listener: Listener | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._routes: dict[str, tuple[str, _Handler]] = {
            "/app-sessions": ("POST", self._app_sessions),
            "/app-sessions/operations": ("POST", self._operations),
            "/app-sessions/release": ("POST", self._release),
            "/registrations/expired": ("POST", self._registration_expired),
            "/sessions": ("GET", self._sessions),
        }

    def app(self) -> web.Application:
        """The aiohttp application (for embedding in another aiohttp server)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._errors, self._auth])
        app.router.add_get("/health", self._health)
        for path, (method, _) in self._routes.items():
            app.router.add_route(method, path, self._handle)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0, *,
                    ssl_context: ssl.SSLContext | None = None) -> tuple[str, int]:
        """Listen on ``host:port`` (0 = any free port). Returns the bound address."""
        self._listener = await serve_app(self.app(), host, port, max_connections=self._max_connections,
                                         idle_timeout_s=IDLE_TIMEOUT_S, ssl_context=ssl_context)
        self._arm()
        return self._listener.host, self._listener.port

    @property
    def listener(self) -> Listener | None:
        return self._listener

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    # -- timers ------------------------------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.policy.get_timer()
        if when is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, when - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            for res in self.policy.handle_timer(self._clock()):
                log.info("timer released %s", res.key)
        except Exception:
            log.exception("policy timers failed")
        finally:
            self._arm()  # one failing run must not stop every later deadline

    # -- requests ----------------------------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """aiohttp's own refusals (404, 405, 413) as the JSON ``{"detail": ...}`` every answer here uses."""
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            return _json(405, {"detail": f"use {allowed}"}, {"Allow": allowed})
        except web.HTTPNotFound:
            return _json(404, {"detail": f"no resource {request.path[:80]}"})
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _json(exc.status, {"detail": exc.text or exc.reason})

    @web.middleware
    async def _auth(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path == "/health" or _bearer_ok(request.headers.get("Authorization"), self._token):
            return await handler(request)
        error = ', error="invalid_token"' if "Authorization" in request.headers else ""
        return _json(401, {"detail": "bearer token required ([policy] token)"},
                     {"WWW-Authenticate": _REALM + error})

    async def _health(self, _: web.Request) -> web.Response:
        return _json(200, {"ok": True})

    async def _handle(self, request: web.Request) -> web.Response:
        _, handler = self._routes[request.path]
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _json(413, {"detail": f"body exceeds {MAX_BODY_BYTES} bytes"}, {"Connection": "close"})
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json(413, {"detail": f"body exceeds {MAX_BODY_BYTES} bytes"})
        try:
            data = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            return _json(400, {"detail": "body is not JSON"})
        try:
            status, payload = handler(data)
        except RemoteProtocolError as exc:
            return _json(400, {"detail": exc.message})
        except LedgerUnavailable as exc:
            self._arm()  # what was queued has a retry timer
            return _json(503, {"detail": f"not recorded: {exc}"}, {"Retry-After": "1"})
        except Exception:  # A bug must not kill the service or leak a traceback to the client.
            log.exception("policy request %s %s failed", request.method, request.path)
            return _json(500, {"detail": "internal error"})
        self._arm()
        return _json(status, payload)

    def _app_sessions(self, data: Any) -> tuple[int, object]:
        if not isinstance(data, dict):
            raise RemoteProtocolError("body must be a JSON object", 400)
        status = data.get("servInfStatus")
        request = app_session_from_json_untrusted(data)
        now, wall = self._clock(), self._wall_clock()
        if status == "PRELIMINARY":
            decision = self.policy.preliminary(request, now, wall=wall)
            return (200 if isinstance(decision, Grant) else 403), decision_to_json(decision)
        if status == "FINAL":
            decision = self.policy.final(request, now, wall=wall)
            return (201 if isinstance(decision, Grant) else 403), decision_to_json(decision)
        raise RemoteProtocolError("servInfStatus must be PRELIMINARY or FINAL", 400)

    def _operations(self, data: Any) -> tuple[int, object]:
        res = self.policy.apply(operation_from_json_untrusted(data), self._clock())
        if res is None:
            return 404, {"detail": "no reservation of this player for this dialog"}
        return 200, {"reservation": reservation_to_json(res)}

    def _release(self, data: Any) -> tuple[int, object]:
        if not isinstance(data, dict):
            raise RemoteProtocolError("body must be a JSON object", 400)
        key = key_from_json_untrusted(data.get("key"))
        reason = end_reason_from_json_untrusted(data.get("reason"))
        sip_reason = data.get("sipReason")
        if sip_reason is not None and not isinstance(sip_reason, str):
            raise RemoteProtocolError("sipReason must be a string", 400)
        res = self.policy.release(key, self._clock(), reason, sip_reason=sip_reason)
        if res is None:
            return 404, {"detail": "no such reservation"}
        return 200, {"reservation": reservation_to_json(res)}

    def _registration_expired(self, data: Any) -> tuple[int, object]:
        if not isinstance(data, dict) or not isinstance(data.get("player"), str):
            raise RemoteProtocolError("body must be {\"player\": aor}", 400)
        player_ip = data.get("playerIp")
        if player_ip is not None and not isinstance(player_ip, str):
            raise RemoteProtocolError("playerIp must be a string", 400)
        released = self.policy.release_player(data["player"], self._clock(), player_ip=player_ip)
        return 200, {"released": len(released)}

    def _sessions(self, _: Any) -> tuple[int, object]:
        return 200, {
            "reservations": [reservation_to_json(r) for r in self.policy.reservations()],
            "networks": [capacity_to_json(c) for c in self.policy.capacity()],
        }


# -- clients -----------------------------------------------------------------------------------------------------


class _PolicyEndpoint:
    """Where a separate policy process listens, its token, and how long one request to it may take."""

    def __init__(self, url: str, *, token: str, timeout_s: float = 2.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"policy url must be http(s)://host:port, not {url!r}")
        if not token:
            raise ValueError("the policy process needs a bearer token ([policy] token)")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {token}"}


def _expect(status: int, data: Any, ok: tuple[int, ...]) -> tuple[int, Any]:
    """The answer of a policy call whose status is one of ``ok``; any other status is :class:`PolicyUnavailable`."""
    if status not in ok:
        detail = data.get("detail") if isinstance(data, dict) else None
        raise PolicyUnavailable(f"HTTP {status}: {detail or 'unexpected status'}")
    return status, data


def _unavailable(request: AppSession, status: str, exc: Exception) -> Deny:
    """The decision when the policy process could not be asked: a logged :class:`Deny` (resource ``policy``)."""
    log.warning("policy %s for %s failed: %s", status, request.call_id, exc)
    return Deny(network=None, resource=Resource.POLICY, reason=f"policy server unavailable ({exc})")


def _reservation(data: Any) -> Reservation:
    return reservation_from_json_untrusted(data.get("reservation") if isinstance(data, dict) else None)


class PolicyHttpClient(_PolicyEndpoint):
    """The asyncio client of a separate policy process. Each request has ONE deadline, ``timeout_s``, covering
    connect, send, the answer and its body.

    ``preliminary``/``final`` never raise: a timeout or transport failure is a :class:`Deny` (resource
    ``policy``). The lifetime calls raise :class:`PolicyUnavailable` so the caller can log it; the policy
    process's own timers still release whatever is not refreshed.

    Connections are pooled (keep-alive, at most ``max_connections`` at once) in one ``aiohttp.ClientSession``
    made on first use inside the running loop; :meth:`close` it (or use ``async with``) when done.
    ``ssl_context`` is used for ``https://`` URLs (None = the system's default verification).
    """

    def __init__(self, url: str, *, token: str, timeout_s: float = 2.0, max_connections: int = 16,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(url, token=token, timeout_s=timeout_s)
        self._max_connections = max_connections
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def preliminary(self, request: AppSession) -> Decision:
        return await self._decide(request, "PRELIMINARY")

    async def final(self, request: AppSession) -> Decision:
        return await self._decide(request, "FINAL")

    async def apply(self, op: PolicyOperation) -> bool:
        """Carry out a PUBLISH-derived operation; False if the publisher holds no such reservation."""
        return await self.apply_reservation(op) is not None

    async def apply_reservation(self, op: PolicyOperation) -> Reservation | None:
        """Like :meth:`apply`, returning the reservation as it now stands (None: no such reservation)."""
        status, data = await self._call("POST", "/app-sessions/operations", operation_to_json(op), ok=(200, 404))
        if status == 404:
            return None
        try:
            return _reservation(data)
        except RemoteProtocolError as exc:
            raise PolicyUnavailable(f"bad reservation in the answer: {exc.message}") from None

    async def release(self, key: SessionKey, reason: EndReason, sip_reason: str | None = None) -> bool:
        body = {"key": key_to_json(key), "reason": reason.value, "sipReason": sip_reason}
        status, _ = await self._call("POST", "/app-sessions/release", body, ok=(200, 404))
        return status == 200

    async def release_player(self, player: str, *, player_ip: str | None = None) -> int:
        body = {"player": player, "playerIp": player_ip}
        _, data = await self._call("POST", "/registrations/expired", body, ok=(200,))
        released = data.get("released") if isinstance(data, dict) else None
        return released if isinstance(released, int) else 0

    async def sessions(self) -> dict[str, Any]:
        _, data = await self._call("GET", "/sessions", None, ok=(200,))
        return data if isinstance(data, dict) else {}

    async def _decide(self, request: AppSession, status: str) -> Decision:
        body = {**app_session_to_json(request), "servInfStatus": status}
        try:
            _, data = await self._call("POST", "/app-sessions", body, ok=(200, 201, 403))
            return decision_from_json_untrusted(data)
        except (PolicyUnavailable, RemoteProtocolError) as exc:
            return _unavailable(request, status, exc)

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A session belongs to one loop; a client reused from another loop (tests, a CLI) starts afresh.
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                raise_for_status=False,
            )
            self._loop = loop
        return self._session

    async def _call(self, method: str, path: str, body: object, *, ok: tuple[int, ...]) -> tuple[int, Any]:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._exchange(method, path, body, ok)
        except TimeoutError:
            raise PolicyUnavailable(f"no answer within {self.timeout_s:g} s") from None
        except (OSError, aiohttp.ClientError, ValueError) as exc:
            raise PolicyUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def _exchange(self, method: str, path: str, body: object, ok: tuple[int, ...]) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else None
        async with self._client().request(method, self.url + path, data=payload, headers=headers) as resp:
            if resp.content_length is not None and resp.content_length > MAX_BODY_BYTES:
                raise PolicyUnavailable(f"answer of {resp.content_length} bytes exceeds {MAX_BODY_BYTES}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise PolicyUnavailable(f"answer exceeds {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
            raw = b"".join(chunks)
            data = json.loads(raw) if raw else None
            return _expect(resp.status, data, ok)


class BlockingPolicyClient(_PolicyEndpoint):
    """The synchronous policy API over HTTP, for the sans-IO hooks when ``[policy] url`` is set.

    Same methods as :class:`PolicyServer` (``now`` is ignored: the policy process uses its own clock and runs
    its own timers). Each call blocks the caller for at most about ``timeout_s`` per socket operation; failures
    become a :class:`Deny` (preliminary/final) or ``None``/``[]`` (lifetime calls, logged). Asyncio code uses
    :class:`PolicyHttpClient` instead.
    """

    #: For ``https://`` URLs: the CA to check the policy process against and the region's client certificate
    #: (server.policy_tls); None = the system's default verification.
    ssl_context: ssl.SSLContext | None = None

    def _call(self, method: str, path: str, body: object, ok: tuple[int, ...]) -> tuple[int, Any]:
        import http.client  # stdlib; imported here so the asyncio side does not pull it in

        conn: http.client.HTTPConnection
        if self.url.startswith("https:"):
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                               context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
            headers = dict(self._headers)
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(MAX_BODY_BYTES + 1)
            if len(raw) > MAX_BODY_BYTES:
                raise PolicyUnavailable("response too large")
            data = json.loads(raw) if raw else None
            status = resp.status
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise PolicyUnavailable(f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        return _expect(status, data, ok)

    def _decide(self, request: AppSession, status: str) -> Decision:
        try:
            _, data = self._call("POST", "/app-sessions", {**app_session_to_json(request), "servInfStatus": status},
                                 (200, 201, 403))
            return decision_from_json_untrusted(data)
        except (PolicyUnavailable, RemoteProtocolError) as exc:
            return _unavailable(request, status, exc)

    def preliminary(self, request: AppSession, now: float, *, wall: float | None = None) -> Decision:
        return self._decide(request, "PRELIMINARY")

    def final(self, request: AppSession, now: float, *, wall: float | None = None) -> Decision:
        return self._decide(request, "FINAL")

    def apply(self, op: PolicyOperation, now: float) -> Reservation | None:
        """Raises :class:`PolicyUnavailable` when the policy process did not apply it (the PUBLISH is then not
        acknowledged: 503, and the player retries)."""
        try:
            status, data = self._call("POST", "/app-sessions/operations", operation_to_json(op), (200, 404))
            if status == 404:
                return None
            return _reservation(data)
        except RemoteProtocolError as exc:
            raise PolicyUnavailable(f"unusable answer: {exc.message}") from None

    def release_player(
        self, player: str, now: float, reason: EndReason = EndReason.REG_EXPIRED, *, player_ip: str | None = None
    ) -> list[Reservation]:
        try:
            self._call("POST", "/registrations/expired", {"player": player, "playerIp": player_ip}, (200,))
        except PolicyUnavailable as exc:
            log.warning("policy release of %s failed: %s", player, exc)
        return []  # the count is known only remotely; callers only log it

    def get_timer(self) -> float | None:
        return None  # the policy process runs its own timers

    def handle_timer(self, now: float) -> list[Reservation]:
        return []


def main(server_config: Any, policy_config: Any) -> int:
    """``gamesdk-server policy --config FILE``: serve the region's policy over HTTP until interrupted.

    ``server_config`` is the SIP server's ``ServerConfig`` (database path, region name); returns an exit code.
    """
    import sys

    from .runner import serve_policy

    if not policy_config.settings.token:
        print("gamesdk-server: [policy] token is required to run the policy process: its callers present it "
              "as a bearer token (generate one with: python3 -c \"import secrets; "
              "print(secrets.token_urlsafe(32))\")", file=sys.stderr)
        return 2

    from server.policy_tls import policy_server_context

    try:
        ssl_context = policy_server_context(server_config)
    except (ValueError, OSError) as exc:
        print(f"gamesdk-server: cannot serve the policy over HTTPS: {exc}", file=sys.stderr)
        return 2
    scheme = "https" if ssl_context is not None else "http"

    def ready(host: str, port: int) -> None:
        print(f"policy server for {server_config.name} listening on {scheme}://{host}:{port}", flush=True)
        log.info("policy server for %s listening on %s://%s:%d", server_config.name, scheme, host, port)

    try:
        asyncio.run(serve_policy(policy_config, server_config.database, region=server_config.name, ready=ready,
                                 ssl_context=ssl_context))
    except OSError as exc:
        print(f"gamesdk-server: cannot listen on {policy_config.settings.listen}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
