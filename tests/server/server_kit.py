"""Test helpers for the regional server: in-memory accounts, a small test UA built on the gamesdk SIP core,
and an in-memory wire that delivers datagrams between server nodes and UAs (h11 ConnectionPair idea).

Imported by the tests in this folder through ``conftest.py`` (pytest runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gamesdk.address import Address
from gamesdk.sdp.codec import format_sdp_bytes
from gamesdk.sdp.examples import example_answer, example_offer
from gamesdk.sip.digest import DigestClient, compute_ha1
from gamesdk.sip.ids import SequentialIdFactory
from gamesdk.sip.message import Headers, Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from server.config import ServerConfig, load_config
from server.node import RegionalServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OFFER = format_sdp_bytes(example_offer())
ANSWER = format_sdp_bytes(example_answer())


class MemoryAccounts:
    """Accounts in a dict: name -> password; HA1 computed like the SQLite store does."""

    def __init__(self, realm: str, users: dict[str, str]) -> None:
        self.realm = realm
        self.users = dict(users)

    def ha1(self, name: str, algorithm: str) -> str | None:
        password = self.users.get(name)
        return None if password is None else compute_ha1(name, self.realm, password, algorithm)

    def exists(self, name: str) -> bool:
        return name in self.users


def counter_bytes() -> Callable[[int], bytes]:
    """A deterministic random-bytes source (tests must not depend on os.urandom for repeatability)."""
    state = itertools.count(1)

    def random_bytes(n: int) -> bytes:
        seed = next(state).to_bytes(8, "big")
        return (seed * (n // 8 + 1))[:n]

    return random_bytes


def example_config(region: str, port: int, peer_port: int, tmp: Path, **replace_auth: object) -> ServerConfig:
    config = load_config(EXAMPLES / f"{region}.toml").with_listen("127.0.0.1", port)
    peer = "na.gamesdk.test" if region == "eu" else "eu.gamesdk.test"
    config = config.with_peer_address(peer, "127.0.0.1", peer_port)
    import dataclasses

    config = dataclasses.replace(config, database=tmp / f"{region}.sqlite3")
    if replace_auth:
        config = dataclasses.replace(config, auth=dataclasses.replace(config.auth, **replace_auth))  # type: ignore[arg-type]
    return config


def make_node(region: str, port: int, peer_port: int, tmp: Path, users: dict[str, str],
              **replace_auth: object) -> RegionalServer:
    config = example_config(region, port, peer_port, tmp, **replace_auth)
    return RegionalServer(config, MemoryAccounts(config.auth.realm, users), random_bytes=counter_bytes(),
                          ids=SequentialIdFactory(region))


@dataclass
class TestUA:
    """A minimal user agent: builds requests and answers with the gamesdk SIP core, keeps what it receives."""

    user: str
    domain: str
    password: str
    addr: Address
    ids: SequentialIdFactory = field(default_factory=lambda: SequentialIdFactory("ua"))
    inbox: list[Request | Response] = field(default_factory=list)
    cseq: int = 0

    __test__ = False  # not a pytest test class

    def __post_init__(self) -> None:
        self.call_id = self.ids.call_id()
        self.tag = self.ids.tag()
        self.digest = DigestClient(self.user, self.password, self.ids.cnonce)

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        return f"sip:{self.user}@{self.addr[0]}:{self.addr[1]}"

    def via(self) -> str:
        return f"SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};branch={self.ids.branch()};rport"

    def register(self, expires: int | None = 3600, *, contact: str | None = None) -> Request:
        self.cseq += 1
        headers = Headers([
            ("Via", self.via()), ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self.tag}"), ("To", f"<{self.aor}>"),
            ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} REGISTER"),
            ("Contact", contact if contact is not None else f"<{self.contact}>"),
        ])
        if expires is not None:
            headers.add("Expires", str(expires))
        return Request("REGISTER", f"sip:{self.domain}", headers)

    def invite(self, target: str, body: bytes = OFFER, *, call_id: str | None = None,
               max_forwards: int = 70) -> Request:
        headers = Headers([
            ("Via", self.via()), ("Max-Forwards", str(max_forwards)),
            ("From", f"<{self.aor}>;tag={self.ids.tag()}"), ("To", f"<{target}>"),
            ("Call-ID", call_id or self.ids.call_id()), ("CSeq", "1 INVITE"),
            ("Contact", f"<{self.contact}>"), ("Content-Type", "application/sdp"),
        ])
        return Request("INVITE", target, headers, body)

    def authorize(self, request: Request, challenge: Response) -> Request:
        """The request again with credentials for the 401/407 ``challenge``: new branch, CSeq + 1."""
        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
        creds = self.digest.authorize(challenge.headers.get_all(header), method=request.method, uri=request.uri)
        again = request.copy()
        again.headers.set("Via", self.via())
        cseq = request.cseq.seq + 1
        if request.method == "REGISTER":
            self.cseq = cseq
        again.headers.set("CSeq", f"{cseq} {request.method}")
        again.headers.remove(answer)
        again.headers.add(answer, creds.to_header_value())
        return again

    def ack_non2xx(self, request: Request, response: Response) -> Request:
        """The ACK for a non-2xx final: same branch as the INVITE, hop by hop (RFC 3261 section 17.1.1.3)."""
        headers = Headers([
            ("Via", request.headers.get("Via") or ""), ("Max-Forwards", "70"),
            ("From", request.headers.get("From") or ""), ("To", response.headers.get("To") or ""),
            ("Call-ID", request.call_id), ("CSeq", f"{request.cseq.seq} ACK"),
        ])
        return Request("ACK", request.uri, headers)

    def ack_2xx(self, invite: Request, ok: Response) -> Request:
        """The ACK for a 2xx: a new transaction to the callee's Contact (RFC 3261 section 13.2.2.4)."""
        target = ok.contacts[0].uri
        headers = Headers([
            ("Via", self.via()), ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""), ("To", ok.headers.get("To") or ""),
            ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq.seq} ACK"),
        ])
        return Request("ACK", str(target), headers)

    def bye(self, invite: Request, ok: Response) -> Request:
        target = ok.contacts[0].uri
        headers = Headers([
            ("Via", self.via()), ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""), ("To", ok.headers.get("To") or ""),
            ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq.seq + 1} BYE"),
        ])
        return Request("BYE", str(target), headers)

    def answer(self, request: Request, status: int, body: bytes = b"", *, tag: str = "callee") -> Response:
        extra = [("Contact", f"<{self.contact}>")] if status < 300 and request.method == "INVITE" else []
        if body:
            extra.append(("Content-Type", "application/sdp"))
        return response_for(request, status, to_tag=tag, extra=extra, body=body)

    def take(self) -> list[Request | Response]:
        got, self.inbox = self.inbox, []
        return got

    def responses(self) -> list[Response]:
        return [m for m in self.take() if isinstance(m, Response)]

    def requests(self) -> list[Request]:
        return [m for m in self.take() if isinstance(m, Request)]


class SocketUA(TestUA):
    """A TestUA on a real UDP socket bound to a free loopback port."""

    __test__ = False
    #: How long ``final`` waits by default, and how long ``silent`` listens.
    FINAL_TIMEOUT_S = 3.0
    SILENT_WAIT_S = 0.3
    #: ``login`` insists on a 401 first; when False it returns whatever final answer came instead.
    CHALLENGE_REQUIRED = True

    def __init__(self, user: str, domain: str, password: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        super().__init__(user, domain, password, self.sock.getsockname())

    def send(self, message: Request | Response | bytes, dest: Address) -> None:
        self.sock.sendto(message if isinstance(message, bytes) else message.to_bytes(), dest)

    def recv(self, timeout_s: float = 3.0) -> Request | Response:
        self.sock.settimeout(timeout_s)
        data, _ = self.sock.recvfrom(65535)
        return parse_message_untrusted(data)

    def final(self, timeout_s: float | None = None) -> Response:
        """The next final response (provisionals are skipped)."""
        deadline = time.monotonic() + (self.FINAL_TIMEOUT_S if timeout_s is None else timeout_s)
        while True:
            message = self.recv(max(0.05, deadline - time.monotonic()))
            if isinstance(message, Response) and message.status >= 200:
                return message

    def silent(self, wait_s: float | None = None) -> bool:
        self.sock.settimeout(self.SILENT_WAIT_S if wait_s is None else wait_s)
        try:
            self.sock.recvfrom(65535)
        except TimeoutError:
            return True
        return False

    def login(self, server: Address, expires: int = 600) -> Response:
        request = self.register(expires)
        self.send(request, server)
        challenge = self.final()
        if challenge.status != 401:
            assert not self.CHALLENGE_REQUIRED, f"expected a 401 challenge, got {challenge.status}"
            return challenge
        self.send(self.authorize(request, challenge), server)
        return self.final()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Wire:
    """Delivers datagrams between nodes and UAs in memory; records every datagram with its route."""

    nodes: dict[Address, RegionalServer] = field(default_factory=dict)
    uas: dict[Address, TestUA] = field(default_factory=dict)
    log: list[tuple[Address, Address, bytes]] = field(default_factory=list)
    now: float = 1000.0
    #: Datagrams to drop: a predicate on (src, dst, data).
    drop: Callable[[Address, Address, bytes], bool] | None = None

    def add_node(self, node: RegionalServer) -> RegionalServer:
        self.nodes[node.config.listen.addr] = node
        return node

    def add_ua(self, ua: TestUA) -> TestUA:
        self.uas[ua.addr] = ua
        return ua

    def send(self, src: Address, dst: Address, message: Request | Response | bytes) -> None:
        data = message if isinstance(message, bytes) else message.to_bytes()
        self._run([(src, dst, data)])

    def _run(self, queue: list[tuple[Address, Address, bytes]]) -> None:
        steps = 0
        while queue:
            steps += 1
            if steps > 10_000:
                raise AssertionError("message storm on the wire")
            src, dst, data = queue.pop(0)
            self.log.append((src, dst, data))
            if self.drop is not None and self.drop(src, dst, data):
                continue
            if dst in self.nodes:
                for out, to in self.nodes[dst].handle_datagram(data, src, self.now):
                    queue.append((dst, to, out))
            elif dst in self.uas:
                self.uas[dst].inbox.append(parse_message_untrusted(data))

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Move the clock, firing node timers on the way."""
        end = self.now + seconds
        while True:
            due: list[tuple[float, RegionalServer]] = []
            for n in self.nodes.values():
                t = n.get_timer()
                if t is not None and t <= end:
                    due.append((t, n))
            if not due:
                break
            t, node = min(due, key=lambda item: item[0])
            self.now = max(self.now, t)
            queue = [(node.config.listen.addr, to, out) for out, to in node.handle_timer(self.now)]
            self._run(queue)
        self.now = end

    def through(self, addr: Address) -> list[bytes]:
        """Datagrams that arrived at ``addr``."""
        return [data for _, dst, data in self.log if dst == addr]


def login(wire: Wire, ua: TestUA, server: Address) -> None:
    """Log ``ua`` in at ``server`` over ``wire``: REGISTER, the 401 challenge, REGISTER with credentials, 200."""
    request = ua.register(600)
    wire.send(ua.addr, server, request)
    (challenge,) = ua.responses()
    wire.send(ua.addr, server, ua.authorize(request, challenge))
    (ok,) = ua.responses()
    assert ok.status == 200
