"""The player's TLS connection to its regional server (RFC 3261 section 26, RFC 5626 outbound).

One non-blocking TCP socket with TLS done in memory (``ssl.MemoryBIO``), so the same object serves the asyncio
client (reader/writer callbacks) and the polling client (``pump`` once per frame). Messages are framed with the
SIP stream parser; everything the server sends, including requests to the player (an INVITE), arrives here, so
the player needs no listening port for signalling. A CRLFCRLF keep-alive goes out after ``keepalive_s`` without
traffic (the server answers CRLF); a dead connection is opened again on the next message to send, and the user
agent's next REGISTER refresh binds the new flow.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.parser import MAX_MESSAGE_BYTES, StreamParser

__all__ = ["SipTlsFlow", "player_tls_context"]

log = logging.getLogger(__name__)


#: Plaintext queued while the connection is not up, at most (a login and an invitation fit many times).
MAX_PENDING_BYTES = 256 * 1024


def player_tls_context(ca: str | Path | None) -> ssl.SSLContext:
    """Verify the server's certificate against ``ca`` (or the system's trust store); TLS 1.2 at least.

    ``create_default_context`` honours ``SSLKEYLOGFILE``, so a capture of the session can be decoded."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class SipTlsFlow:
    """One TLS connection carrying SIP messages both ways; see the module docstring."""

    def __init__(self, server: Address, server_name: str, context: ssl.SSLContext, *, keepalive_s: float = 90.0,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.server = server
        self.server_name = server_name
        self._context = context
        self.keepalive_s = keepalive_s
        self._max_message = max_message_bytes
        self.sock: socket.socket | None = None
        self._tls: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._wire = bytearray()  # TLS records not yet taken by the kernel
        self._pending: list[bytes] = []  # plaintext waiting for the handshake
        self._parser = StreamParser(max_message_bytes)
        self.established = False
        self._last_sent = 0.0
        self._sent = False  # a message went out since the last pump (which stamps the time)
        #: Why the last connection ended (a certificate error, a reset), for logs and errors.
        self.error: str | None = None
        self.connects = 0
        #: Called with the socket's fd just before it is closed (the asyncio client unregisters it there).
        self.before_close: Callable[[int], None] | None = None

    # -- connection --------------------------------------------------------------------------------------

    def open(self) -> None:
        """Start connecting (non-blocking); messages sent meanwhile wait for the handshake."""
        if self.sock is not None:
            return
        family = socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self.server)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self.error = f"cannot connect to {self.server[0]}:{self.server[1]}: {errno.errorcode.get(code, code)}"
            log.info("SIP over TLS: %s", self.error)
            return
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._wire.clear()
        self._parser = StreamParser(self._max_message)
        self._tls = self._context.wrap_bio(self._in, self._out, server_hostname=self.server_name)
        self.established = False
        self.connects += 1
        self._handshake()

    def close(self) -> None:
        sock = self.sock
        self.sock = None
        self._tls = None
        self.established = False
        if sock is not None:
            if self.before_close is not None:
                self.before_close(sock.fileno())  # an event loop must stop watching the fd while it is valid
            sock.close()

    @property
    def wants_write(self) -> bool:
        """True while TLS records wait for the socket (or the connection is still being made)."""
        return self.sock is not None and (bool(self._wire) or not self.established)

    # -- traffic -----------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send one SIP message (opening the connection again if it was lost)."""
        if self.sock is None:
            self.open()
        if not self.established:
            if sum(map(len, self._pending)) + len(data) <= MAX_PENDING_BYTES:
                self._pending.append(data)
            return
        self._write(data)
        self._sent = True

    def keepalive_due(self) -> float | None:
        """When the next keep-alive is due (None while not connected)."""
        return self._last_sent + self.keepalive_s if self.established else None

    def pump(self, now: float) -> list[bytes]:
        """Move bytes both ways without blocking; returns the SIP messages that arrived complete."""
        frames: list[bytes] = []
        sock = self.sock
        if sock is None:
            return frames
        if self._sent or not self._last_sent:
            self._sent = False
            self._last_sent = now
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    self._lost("closed by the server")
                    return frames
                self._in.write(chunk)
                if len(chunk) < 65536:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._lost(str(exc))
            return frames
        if not self.established:
            self._handshake()
        if self.established:
            self._read_plaintext(frames)
            if now >= self._last_sent + self.keepalive_s:
                self._write(b"\r\n\r\n")  # RFC 5626 section 4.4.1 ping; the CRLF pong is skipped by the parser
                self._last_sent = now
        self._flush()
        return frames

    # -- internals ---------------------------------------------------------------------------------------

    def _handshake(self) -> None:
        tls = self._tls
        if tls is None:
            return
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._flush()
            self._lost(f"TLS handshake with {self.server_name} failed: {exc.reason or exc}")
            return
        self.established = True
        log.debug("SIP over TLS: connected to %s:%d (%s)", self.server[0], self.server[1], tls.version())
        pending, self._pending = self._pending, []
        for data in pending:
            self._write(data)
        self._flush()

    def _write(self, data: bytes) -> None:
        if self._tls is None:
            return
        self._tls.write(data)
        self._flush()

    def _flush(self) -> None:
        sock = self.sock
        if sock is None:
            return
        self._wire += self._out.read()
        while self._wire:
            try:
                sent = sock.send(self._wire)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(str(exc))
                return
            del self._wire[:sent]

    def _read_plaintext(self, frames: list[bytes]) -> None:
        tls = self._tls
        if tls is None:
            return
        while True:
            try:
                data = tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._lost("closed by the server")
                break
            except ssl.SSLError as exc:
                self._lost(f"TLS error: {exc.reason or exc}")
                break
            if not data:
                break
            self._parser.feed(data)
        try:
            while (frame := self._parser.next_frame()) is not None:
                frames.append(frame)
            self._parser.pings = 0
        except RemoteProtocolError as exc:
            self._lost(f"unframeable input from the server: {exc.message}")

    def _lost(self, why: str) -> None:
        if self.sock is not None:
            log.info("SIP over TLS to %s:%d lost: %s", self.server[0], self.server[1], why)
        self.error = why
        self.close()
