"""``gamesdk-server ctl``: look inside and steer a running region over a local UNIX socket (like kamcmd).

The socket (``[control] socket``, default ``<database>.ctl`` beside the database) is created mode 0600: only the
account the server runs as (and root) may connect, so the file permissions are the authentication. One JSON
object per line each way: ``{"command": "stats", "args": []}`` -> ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``.

Commands: ``stats``, ``registrations``, ``reservations``, ``blocked``, ``unblock KEY``, ``flush``, ``drain``,
``log-level LEVEL``, ``reload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.config import ConfigError

if TYPE_CHECKING:
    from server.io import EmbeddedServer

__all__ = ["COMMANDS", "ControlError", "ControlServer", "ControlUnreachable", "call"]

log = logging.getLogger(__name__)

#: Command -> (arguments, what it does): the CLI's help and the server's dispatch read the same table.
COMMANDS: dict[str, tuple[str, str]] = {
    "stats": ("", "counters of the running server (messages, calls, registrations, transactions, policy)"),
    "registrations": ("", "every registered contact: AOR, contact, source, access network, seconds left"),
    "reservations": ("", "reservations held by the embedded policy server and free capacity per network"),
    "blocked": ("", "sources and users blocked or slowed after failed logins"),
    "unblock": ("KEY", "lift a block (a key from `blocked`: addr:IP or user:NAME)"),
    "flush": ("", "drop cached account lookups and access network matches (after editing the database)"),
    "drain": ("", "answer new requests 503, finish the transactions under way, then exit (as SIGTERM)"),
    "log-level": ("LEVEL", "set the log level now: DEBUG, INFO, WARNING or ERROR"),
    "reload": ("", "read the region file again (as SIGHUP); a bad file is refused with the reason"),
}

_MAX_LINE = 64 * 1024


class ControlError(Exception):
    """The server refused the command (the message says why)."""


class ControlUnreachable(ControlError):
    """No server answers on the control socket (not running, wrong path, no permission)."""


class ControlServer:
    """Serves the control socket of one :class:`EmbeddedServer` on its event loop."""

    def __init__(self, server: EmbeddedServer, path: Path, *, on_drain: Callable[[], None]) -> None:
        self.server = server
        self.path = path
        self._on_drain = on_drain
        self._unix: asyncio.AbstractServer | None = None
        self._started = time.monotonic()

    async def start(self) -> None:
        path = self.path
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ConfigError("control.socket", f"{path} exists and is not a socket")
            if _is_live(path):
                raise ConfigError("control.socket", f"{path} is in use: is this region already running?")
            path.unlink()  # left by a server that did not stop cleanly
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others could connect
        try:
            self._unix = await asyncio.start_unix_server(self._client, path=str(path), limit=_MAX_LINE)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        log.info("control: listening on %s", path)

    async def close(self) -> None:
        if self._unix is not None:
            self._unix.close()
            await self._unix.wait_closed()
            self._unix = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _reply(writer, {"ok": False, "error": "request line too long"})
                    return
                if not line:
                    return
                try:
                    request = json.loads(line)
                    command = str(request["command"])
                    args = [str(a) for a in request.get("args", [])]
                except (ValueError, KeyError, TypeError, AttributeError):
                    await _reply(writer, {"ok": False, "error": "bad request: send {\"command\": ..., \"args\": []}"})
                    continue
                try:
                    result = self.run(command, args)
                except ControlError as exc:
                    await _reply(writer, {"ok": False, "error": str(exc)})
                    continue
                except Exception as exc:
                    log.exception("control: %s failed", command)
                    await _reply(writer, {"ok": False, "error": f"{command} failed: {exc}"})
                    continue
                await _reply(writer, {"ok": True, "result": result})
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    # -- commands ------------------------------------------------------------------------------------------------

    def run(self, command: str, args: list[str]) -> Any:
        """Run one command on the loop thread; raises :class:`ControlError` with a message for the operator."""
        if command not in COMMANDS:
            raise ControlError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
        wanted = COMMANDS[command][0].split()
        if len(args) != len(wanted):
            raise ControlError(f"{command} takes {len(wanted)} argument(s): {' '.join(wanted) or 'none'}")
        node = self.server.node
        if node is None:
            raise ControlError("the server is not running yet")
        loop_now = asyncio.get_running_loop().time()
        if command == "stats":
            hooks_stats = getattr(getattr(node.hooks, "backend", None), "stats", None)
            return {
                "region": node.config.name,
                "domain": node.config.domain,
                "uptime_s": round(time.monotonic() - self._started, 1),
                "draining": node.draining,
                "registrations": len(node.location),
                "transactions_pending": node.pending_transactions(),
                "server_transactions": node.proxy.transaction_count(),
                "client_transactions": (len(node.proxy.client_txs) + len(node.proxy.ended_client)
                                        + len(node.proxy.cancels)),
                "node": dataclasses.asdict(node.stats),
                "proxy": dataclasses.asdict(node.proxy.stats),
                "policy": dict(hooks_stats) if isinstance(hooks_stats, dict) else None,
                "peers": [{"domain": p.domain, "address": f"{p.address[0]}:{p.address[1]}",
                           "reachable": p.reachable, "min_rtt_ms": p.min_rtt_ms}
                          for p in node.federation.peers()],
            }
        if command == "registrations":
            return [{"aor": b.aor, "contact": b.contact, "source": f"{b.source[0]}:{b.source[1]}",
                     "next_hop": f"{b.next_hop[0]}:{b.next_hop[1]}", "access_network": b.access_network,
                     "expires_in_s": b.expires_in(loop_now)} for b in node.location.bindings()]
        if command == "reservations":
            return self._reservations()
        if command == "blocked":
            return [{"key": key, "blocked_for_s": round(left, 1), "recent_failures": failures}
                    for key, left, failures in node.throttle.blocked(loop_now)]
        if command == "unblock":
            if not node.throttle.unblock(args[0]):
                raise ControlError(f"{args[0]!r} is not blocked (see `ctl blocked`)")
            log.info("control: unblocked %s", args[0])
            return f"unblocked {args[0]}"
        if command == "flush":
            forget = getattr(node.accounts, "forget_cached", None)
            if forget is not None:
                forget()
            node.location.set_networks(node.config.access_networks)  # a fresh prefix-match cache
            log.info("control: caches flushed")
            return "flushed account and access network caches"
        if command == "drain":
            self._on_drain()
            return f"draining: {node.pending_transactions()} transaction(s) under way, then exit"
        if command == "log-level":
            level = args[0].upper()
            if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
                raise ControlError(f"{args[0]!r} is not one of DEBUG, INFO, WARNING, ERROR")
            logging.getLogger().setLevel(level)
            self.server.refresh_tracing()
            log.warning("control: log level set to %s", level)
            return f"log level {level}"
        try:
            new = self.server.reload()
        except ConfigError as exc:
            log.error("server: reload refused, keeping the running configuration: %s", exc)
            raise ControlError(f"reload refused, the running configuration is kept: {exc}") from None
        return f"reloaded {new.source}"

    def _reservations(self) -> dict[str, Any]:
        node = self.server.node
        backend = getattr(node.hooks, "backend", None) if node is not None else None
        reservations = getattr(backend, "reservations", None)
        capacity = getattr(backend, "capacity", None)
        if reservations is None or capacity is None:
            raise ControlError("no embedded policy server in this process (see the policy process, or run "
                               "without --no-policy)")
        from server.policy.codec import capacity_to_json, reservation_to_json

        return {"reservations": [reservation_to_json(r) for r in reservations()],
                "capacity": [capacity_to_json(c) for c in capacity()]}


async def _reply(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n")
    await writer.drain()


def _is_live(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def call(path: Path, command: str, args: list[str], *, timeout_s: float = 10.0) -> Any:
    """Send one command to the server at ``path``; returns its result or raises :class:`ControlError`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlUnreachable(f"no control socket at {path}: is the region running?") from None
        except PermissionError:
            raise ControlUnreachable(f"permission denied on {path}: run as the server's user") from None
        except OSError as exc:
            raise ControlUnreachable(f"cannot connect to {path}: {exc.strerror or exc}") from None
        sock.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ControlUnreachable(f"the server at {path} closed the connection without an answer")
            data += chunk
    answer = json.loads(data)
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error")))
    return answer.get("result")
