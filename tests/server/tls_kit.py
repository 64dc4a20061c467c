"""Helpers for the SIP-over-TLS tests: certificates made on the fly, region configs listening on tls:, and a
test UA on one real TLS connection (blocking socket, messages framed by the SDK's StreamParser)."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import time
from pathlib import Path

from server_kit import EXAMPLES, TestUA

from gamesdk.address import Address
from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import StreamParser, parse_message_untrusted
from server.certs import make_test_pki
from server.config import ListenAddress, ServerConfig, load_config
from server.tls_config import TlsConfig

DOMAINS = ("eu.gamesdk.test", "na.gamesdk.test")


def tls_region(name: str, tmp: Path, **tls: object) -> ServerConfig:
    """The example region ``name`` on udp: and tls: (ports chosen at start), certificates from ``tmp/pki``."""
    pki = tmp / "pki"
    if not (pki / "ca.crt").exists():
        make_test_pki(pki, DOMAINS)
    config = load_config(EXAMPLES / f"{name}.toml")
    settings = TlsConfig(certificate=pki / f"{config.domain}.crt", key=pki / f"{config.domain}.key",
                         ca=pki / "ca.crt")
    settings = dataclasses.replace(settings, **tls)  # type: ignore[arg-type]
    return dataclasses.replace(config, database=tmp / f"{name}.sqlite3", tls=settings,
                               listen_more=(ListenAddress("tls", "127.0.0.1", 0),))


def player_context(tmp: Path) -> ssl.SSLContext:
    """What a player trusts: the CA bundle of the regions."""
    return ssl.create_default_context(cafile=str(tmp / "pki" / "ca.crt"))


class TlsUA(TestUA):
    """A TestUA on one TLS connection to its server; requests and responses both travel on it."""

    __test__ = False

    def __init__(self, user: str, domain: str, password: str, server: Address, context: ssl.SSLContext) -> None:
        raw = socket.create_connection(server, timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname=domain)
        self.parser = StreamParser()
        super().__init__(user, domain, password, self.sock.getsockname()[:2])

    def via(self) -> str:
        return f"SIP/2.0/TLS {self.addr[0]}:{self.addr[1]};branch={self.ids.branch()};rport"

    def send(self, message: Request | Response | bytes) -> None:
        self.sock.sendall(message if isinstance(message, bytes) else message.to_bytes())

    def recv_bytes(self, timeout_s: float = 3.0) -> bytes:
        self.sock.settimeout(timeout_s)
        return self.sock.recv(65535)

    def recv(self, timeout_s: float = 3.0) -> Request | Response:
        deadline = time.monotonic() + timeout_s
        while True:
            frame = self.parser.next_frame()
            if frame is not None:
                return parse_message_untrusted(frame)
            data = self.recv_bytes(max(0.05, deadline - time.monotonic()))
            if not data:
                raise ConnectionError("the server closed the connection")
            self.parser.feed(data)

    def final(self, timeout_s: float = 3.0) -> Response:
        deadline = time.monotonic() + timeout_s
        while True:
            message = self.recv(max(0.05, deadline - time.monotonic()))
            if isinstance(message, Response) and message.status >= 200:
                return message

    def login(self, expires: int = 600, contact: str | None = None) -> Response:
        request = self.register(expires, contact=contact)
        self.send(request)
        challenge = self.final()
        assert challenge.status == 401, challenge.status
        self.send(self.authorize(request, challenge))
        return self.final()

    def closed_by_server(self, timeout_s: float = 10.0) -> bool:
        """True once the server closes the connection (EOF or reset) within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if not self.recv_bytes(max(0.05, deadline - time.monotonic())):
                    return True
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError, OSError):
                return True
        return False

    def close(self) -> None:
        self.sock.close()
