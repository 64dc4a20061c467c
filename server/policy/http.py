"""server/policy/http: the policy server as its own process, over HTTP/1.1 + JSON (asyncio streams, stdlib only).

For operators who separate the policy server (``gamesdk-server policy --config FILE``; the SIP server then has
``[policy] url = "http://..."``). The API is N5-shaped (research/protocol.md (b) "Internal policy API"):

=======  ============================  ==================================================================
POST     /app-sessions                 app session JSON + ``servInfStatus`` PRELIMINARY|FINAL -> decision
                                       (200 PRELIMINARY grant, 201 FINAL grant, 403 deny: ``cause``/``detail``)
POST     /app-sessions/operations      a PUBLISH-derived activate/refresh/release -> 200 reservation | 404
POST     /app-sessions/release         ``{"key": {...}, "reason": ..., "sipReason": ...}`` -> 200 | 404
POST     /registrations/expired        ``{"player": aor}`` -> ``{"released": n}``
GET      /sessions                     live reservations + capacity per access network
GET      /health                       ``{"ok": true}``
=======  ============================  ==================================================================

The client counts a round-trip longer than ``[policy] timeout_s`` (or any transport error) as a failure:
``preliminary``/``final`` then return a :class:`Deny` with resource ``policy``, so the SIP server answers 580
(INVITE path) or forwards the 2xx with ``Warning: 370`` and no token (2xx path), exactly as for a refusal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gamesdk.errors import GameSdkError, RemoteProtocolError

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
from .lifetime import PolicyOperation
from .model import AppSession, Decision, Deny, EndReason, Grant, Reservation, Resource, SessionKey

__all__ = ["MAX_BODY_BYTES", "PolicyHttpClient", "PolicyHttpService", "PolicyUnavailable"]

log = logging.getLogger(__name__)

#: An app session is a few hundred bytes; 64 KiB bounds what one request can make us buffer.
MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
#: Idle keep-alive connections are closed after this long.
IDLE_TIMEOUT_S = 30.0

_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented"}


class PolicyUnavailable(GameSdkError):
    """The policy process did not answer in time, or answered with something unusable."""


class _HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """One HTTP/1.1 request, or None at a clean end of stream. Raises _HttpError for bad requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _HttpError(400, "incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise _HttpError(431, f"request head exceeds {MAX_HEADER_BYTES} bytes") from None
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise _HttpError(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _HttpError(400, "bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _HttpError(400, f"bad header line {line[:40]!r}")
        headers[name.lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise _HttpError(501, "chunked request bodies are not supported; send Content-Length")
    body = b""
    if parts[0] in ("POST", "PUT", "PATCH"):
        raw_length = headers.get("content-length")
        if raw_length is None:
            raise _HttpError(411, "Content-Length required")
        if not raw_length.isdigit():
            raise _HttpError(400, "bad Content-Length")
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            raise _HttpError(413, f"body exceeds {MAX_BODY_BYTES} bytes")
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise _HttpError(400, "body shorter than Content-Length") from None
    return _Request(parts[0], parts[1], headers, body)


def _response(status: int, payload: object, *, close: bool = False, extra: str = "") -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode() + body


class PolicyHttpService:
    """Serves a :class:`PolicyServer` over HTTP/JSON and drives its timers from the asyncio loop.

    Args:
        policy: the policy server (with its SQLite stores; call ``policy.restore(now)`` before :meth:`start`).
        clock: wall-clock seconds (``time.time``); the policy's ``now``.
    """

    def __init__(self, policy: PolicyServer, *, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._routes: dict[str, tuple[str, Callable[[Any], tuple[int, object, str]]]] = {
            "/app-sessions": ("POST", self._app_sessions),
            "/app-sessions/operations": ("POST", self._operations),
            "/app-sessions/release": ("POST", self._release),
            "/registrations/expired": ("POST", self._registration_expired),
            "/sessions": ("GET", self._sessions),
            "/health": ("GET", lambda _: (200, {"ok": True}, "")),
        }

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0 = any free port). Returns the bound address."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEADER_BYTES)
        self._arm()
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()
            self._server = None

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
        released = self.policy.handle_timer(self._clock())
        for res in released:
            log.info("timer released %s", res.key)
        self._arm()

    # -- connections -------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                try:
                    request = await asyncio.wait_for(_read_request(reader), IDLE_TIMEOUT_S)
                except _HttpError as exc:
                    writer.write(_response(exc.status, {"detail": exc.detail}, close=True))
                    await writer.drain()
                    return
                except (TimeoutError, ConnectionError):
                    return
                if request is None:
                    return
                close = request.headers.get("connection", "").lower() == "close"
                status, payload, extra = self._dispatch(request)
                writer.write(_response(status, payload, close=close, extra=extra))
                await writer.drain()
                if close:
                    return
        except ConnectionError:
            return
        finally:
            self._connections.discard(writer)
            writer.close()

    def _dispatch(self, request: _Request) -> tuple[int, object, str]:
        path = request.path.split("?", 1)[0]
        route = self._routes.get(path)
        if route is None:
            return 404, {"detail": f"no resource {path[:80]}"}, ""
        method, handler = route
        if request.method != method:
            return 405, {"detail": f"use {method}"}, f"Allow: {method}\r\n"
        try:
            data = json.loads(request.body) if request.body else None
        except (ValueError, UnicodeDecodeError):
            return 400, {"detail": "body is not JSON"}, ""
        try:
            result = handler(data)
        except RemoteProtocolError as exc:
            return 400, {"detail": exc.message}, ""
        except Exception:  # A bug must not kill the service or leak a traceback to the client.
            log.exception("policy request %s %s failed", request.method, path)
            return 500, {"detail": "internal error"}, ""
        self._arm()
        return result

    def _app_sessions(self, data: Any) -> tuple[int, object, str]:
        if not isinstance(data, dict):
            raise RemoteProtocolError("body must be a JSON object", 400)
        status = data.get("servInfStatus")
        request = app_session_from_json_untrusted(data)
        now = self._clock()
        if status == "PRELIMINARY":
            decision = self.policy.preliminary(request, now)
            return (200 if isinstance(decision, Grant) else 403), decision_to_json(decision), ""
        if status == "FINAL":
            decision = self.policy.final(request, now)
            return (201 if isinstance(decision, Grant) else 403), decision_to_json(decision), ""
        raise RemoteProtocolError("servInfStatus must be PRELIMINARY or FINAL", 400)

    def _operations(self, data: Any) -> tuple[int, object, str]:
        res = self.policy.apply(operation_from_json_untrusted(data), self._clock())
        if res is None:
            return 404, {"detail": "no reservation of this player for this dialog"}, ""
        return 200, {"reservation": reservation_to_json(res)}, ""

    def _release(self, data: Any) -> tuple[int, object, str]:
        if not isinstance(data, dict):
            raise RemoteProtocolError("body must be a JSON object", 400)
        key = key_from_json_untrusted(data.get("key"))
        reason = end_reason_from_json_untrusted(data.get("reason"))
        sip_reason = data.get("sipReason")
        if sip_reason is not None and not isinstance(sip_reason, str):
            raise RemoteProtocolError("sipReason must be a string", 400)
        res = self.policy.release(key, self._clock(), reason, sip_reason=sip_reason)
        if res is None:
            return 404, {"detail": "no such reservation"}, ""
        return 200, {"reservation": reservation_to_json(res)}, ""

    def _registration_expired(self, data: Any) -> tuple[int, object, str]:
        if not isinstance(data, dict) or not isinstance(data.get("player"), str):
            raise RemoteProtocolError("body must be {\"player\": aor}", 400)
        player_ip = data.get("playerIp")
        if player_ip is not None and not isinstance(player_ip, str):
            raise RemoteProtocolError("playerIp must be a string", 400)
        released = self.policy.release_player(data["player"], self._clock(), player_ip=player_ip)
        return 200, {"released": len(released)}, ""

    def _sessions(self, _: Any) -> tuple[int, object, str]:
        return 200, {
            "reservations": [reservation_to_json(r) for r in self.policy.reservations()],
            "networks": [capacity_to_json(c) for c in self.policy.capacity()],
        }, ""


class _PolicyEndpoint:
    """Where a separate policy process listens, and how long one call to it may take."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"policy url must be http://host:port, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout_s = timeout_s


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


class PolicyHttpClient(_PolicyEndpoint):
    """The SIP server's side of a separate policy process. Every call is bounded by ``timeout_s``.

    ``preliminary``/``final`` never raise: a timeout or transport failure is a :class:`Deny` (resource
    ``policy``). The lifetime calls raise :class:`PolicyUnavailable` so the caller can log it; the policy
    process's own timers still release whatever is not refreshed.
    """

    async def preliminary(self, request: AppSession) -> Decision:
        return await self._decide(request, "PRELIMINARY")

    async def final(self, request: AppSession) -> Decision:
        return await self._decide(request, "FINAL")

    async def apply(self, op: PolicyOperation) -> bool:
        """Carry out a PUBLISH-derived operation; False if the publisher holds no such reservation."""
        status, _ = await self._call("POST", "/app-sessions/operations", operation_to_json(op), ok=(200, 404))
        return status == 200

    async def release(self, key: SessionKey, reason: EndReason, sip_reason: str | None = None) -> bool:
        body = {"key": key_to_json(key), "reason": reason.value, "sipReason": sip_reason}
        status, _ = await self._call("POST", "/app-sessions/release", body, ok=(200, 404))
        return status == 200

    async def release_player(self, player: str) -> int:
        _, data = await self._call("POST", "/registrations/expired", {"player": player}, ok=(200,))
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

    async def _call(self, method: str, path: str, body: object, *, ok: tuple[int, ...]) -> tuple[int, Any]:
        try:
            return await asyncio.wait_for(self._exchange(method, path, body, ok), self.timeout_s)
        except TimeoutError:
            raise PolicyUnavailable(f"no answer within {self.timeout_s:g} s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise PolicyUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def _exchange(self, method: str, path: str, body: object, ok: tuple[int, ...]) -> tuple[int, Any]:
        # One connection per call: calls are rare (a few per session) and this keeps concurrency trivial.
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEADER_BYTES)
        try:
            payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + payload)
            await writer.drain()
            raw_head = await reader.readuntil(b"\r\n\r\n")
            lines = raw_head.decode("latin-1").split("\r\n")
            status_parts = lines[0].split(" ", 2)
            if len(status_parts) < 2 or not status_parts[1].isdigit():
                raise PolicyUnavailable(f"bad status line {lines[0][:60]!r}")
            status = int(status_parts[1])
            length = None
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length" and value.strip().isdigit():
                    length = int(value.strip())
            if length is None or length > MAX_BODY_BYTES:
                raise PolicyUnavailable("response without a usable Content-Length")
            data = json.loads(await reader.readexactly(length)) if length else None
        finally:
            writer.close()
        return _expect(status, data, ok)


class BlockingPolicyClient(_PolicyEndpoint):
    """The synchronous policy API over HTTP, for the sans-IO hooks when ``[policy] url`` is set.

    Same methods as :class:`PolicyServer` (``now`` is ignored: the policy process uses its own clock and runs
    its own timers). Each call blocks the caller for at most about ``timeout_s`` per socket operation; failures
    become a :class:`Deny` (preliminary/final) or ``None``/``[]`` (lifetime calls, logged).
    """

    def _call(self, method: str, path: str, body: object, ok: tuple[int, ...]) -> tuple[int, Any]:
        import http.client  # stdlib; imported here so the asyncio service does not pull it in

        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
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

    def preliminary(self, request: AppSession, now: float) -> Decision:
        return self._decide(request, "PRELIMINARY")

    def final(self, request: AppSession, now: float) -> Decision:
        return self._decide(request, "FINAL")

    def apply(self, op: PolicyOperation, now: float) -> Reservation | None:
        try:
            status, data = self._call("POST", "/app-sessions/operations", operation_to_json(op), (200, 404))
            if status == 404:
                return None
            return reservation_from_json_untrusted(data.get("reservation") if isinstance(data, dict) else None)
        except (PolicyUnavailable, RemoteProtocolError) as exc:
            log.warning("policy %s for %s failed: %s", type(op).__name__, op.ref.call_id, exc)
            return None

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

    def ready(host: str, port: int) -> None:
        print(f"policy server for {server_config.name} listening on http://{host}:{port}", flush=True)

    try:
        asyncio.run(serve_policy(policy_config, server_config.database, region=server_config.name, ready=ready))
    except OSError as exc:
        print(f"gamesdk-server: cannot listen on {policy_config.settings.listen}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
