"""server/weblisten: serve an aiohttp application with a cap on open connections.

aiohttp's own sites accept every connection until the process runs out of file descriptors; a client that opens
a thousand idle connections would then make the service unreachable. :func:`serve_app` keeps at most
``max_connections`` open: when a new one arrives at the cap, the oldest *idle* connection (no request in
progress) is closed to make room, or the oldest connection of all when none is idle. Connections that send
nothing are closed after ``idle_timeout_s`` anyway (aiohttp's keep-alive timer also runs before the first
request).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["DEFAULT_IDLE_TIMEOUT_S", "DEFAULT_MAX_CONNECTIONS", "Listener", "serve_app"]

log = logging.getLogger(__name__)

#: Far below the usual 1024 file descriptors of a process, far above what a region's own callers need.
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_IDLE_TIMEOUT_S = 30.0


class _QuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp logs every malformed request with a traceback; from the network that is routine, not a bug."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        self.logger.info("%s (%s)", msg, sys.exc_info()[1])


_http_log = _QuietLogger(logging.getLogger("server.http"), {})


class _CappedFactory:
    """The protocol factory handed to ``loop.create_server``: aiohttp's, plus the connection cap."""

    def __init__(self, server: web.Server, max_connections: int) -> None:
        self._server = server
        self._max = max_connections
        self.evicted = 0

    def __call__(self) -> RequestHandler:
        open_now = self._server.connections  # insertion order: oldest first
        if len(open_now) >= self._max:
            # `_request_in_progress` is aiohttp's own idle flag; there is no public one.
            idle = [h for h in open_now if not getattr(h, "_request_in_progress", False) and not h._force_close]
            victims = idle or [h for h in open_now if not h._force_close]
            if victims:
                victims[0].force_close()
                self.evicted += 1
                if self.evicted in (1, 10, 100) or self.evicted % 1000 == 0:
                    log.warning("connection cap %d reached: %d connections closed to make room so far",
                                self._max, self.evicted)
        return self._server()


@dataclass(slots=True)
class Listener:
    """A running application: where it listens, and how to stop it."""

    runner: web.AppRunner
    server: asyncio.Server
    factory: _CappedFactory
    host: str
    port: int

    @property
    def connections(self) -> int:
        """Connections open now."""
        server = self.runner.server
        return 0 if server is None else len(server.connections)

    @property
    def evicted(self) -> int:
        """Connections closed so far to stay under the cap."""
        return self.factory.evicted

    async def close(self) -> None:
        self.server.close()
        await self.runner.cleanup()  # closes the open connections, then the app's cleanup hooks
        await self.server.wait_closed()


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ssl_context: ssl.SSLContext | None = None,
) -> Listener:
    """Listen on ``host:port`` (0 = any free port) and serve ``app``. Raises OSError if the port is busy."""
    if max_connections < 1:
        raise ValueError("max_connections must be >= 1")
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=idle_timeout_s, handle_signals=False,
                           logger=_http_log)
    await runner.setup()
    assert runner.server is not None  # set by setup()
    factory = _CappedFactory(runner.server, max_connections)
    try:
        server = await asyncio.get_running_loop().create_server(
            factory, host, port, ssl=ssl_context, backlog=max(128, min(max_connections, 4096)),
            reuse_address=True,
        )
    except BaseException:
        await runner.cleanup()
        raise
    bound = server.sockets[0].getsockname()
    return Listener(runner=runner, server=server, factory=factory, host=bound[0], port=bound[1])
