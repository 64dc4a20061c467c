"""An in-memory network for the sans-IO :class:`UserAgent`: agents, real regional server nodes and scripted
endpoints exchange datagrams on a fake clock; no sockets, no sleeping.

Scripted endpoints are addresses whose datagrams are kept in an inbox; a test reads them and answers with crafted
messages (``net.send``), which is how a misbehaving or silent peer or server is played.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from server_kit import counter_bytes, make_node

from gamesdk.address import Address
from gamesdk.config import ClientConfig
from gamesdk.events import SessionEvent
from gamesdk.qos.model import SessionTerms
from gamesdk.sdp.codec import format_sdp
from gamesdk.sdp.game import GameMedia, Role, game_to_sdp, read_game_untrusted
from gamesdk.session.agent import UserAgent
from gamesdk.session.terms import make_terms
from gamesdk.sip.ids import SequentialIdFactory
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.timers import TimerConfig
from server.node import RegionalServer
from server.policy.runner import make_policy_hooks

EU_SERVER: Address = ("127.0.0.1", 5060)
NA_SERVER: Address = ("127.0.0.1", 5070)
ALICE: Address = ("127.0.0.1", 6001)
BOB: Address = ("127.0.0.1", 6002)
#: Scripted endpoints of the tests that play the server or the peer by hand.
SCRIPTED_SERVER: Address = ("127.0.0.1", 5099)
SCRIPTED_PEER: Address = ("127.0.0.1", 7001)

START = 1000.0


def config(user: str, password: str, domain: str, server: Address, **changes: object) -> ClientConfig:
    # ice=False: these drive the sans-IO agent alone, without the sockets' NAT traversal (tests/ice has it)
    base = ClientConfig(username=user, password=password, domain=domain, server=server, timers=TimerConfig(),
                        ice=False)
    return replace(base, **changes)  # type: ignore[arg-type]


def make_agent(cfg: ClientConfig, addr: Address, prefix: str) -> UserAgent:
    ports = itertools.count(addr[1] * 10)
    return UserAgent(
        cfg,
        addr,
        ids=SequentialIdFactory(prefix),
        random_bytes=counter_bytes(),
        channel_addr=lambda _call_id: ("127.0.0.1", next(ports) % 65536),
    )


@dataclass
class Net:
    """Delivers datagrams between agents, server nodes and scripted endpoints; keeps every agent's events."""

    agents: dict[Address, UserAgent] = field(default_factory=dict)
    nodes: dict[Address, RegionalServer] = field(default_factory=dict)
    inboxes: dict[Address, list[Request | Response]] = field(default_factory=dict)
    events: dict[Address, list[SessionEvent]] = field(default_factory=dict)
    log: list[tuple[Address, Address, bytes]] = field(default_factory=list)
    lost: list[tuple[Address, Address, bytes]] = field(default_factory=list)
    now: float = START
    #: Datagrams to lose: a predicate on (src, dst, parsed message).
    drop: Callable[[Address, Address, Request | Response], bool] | None = None

    def add_agent(self, agent: UserAgent) -> UserAgent:
        self.agents[agent.local_addr] = agent
        self.events[agent.local_addr] = []
        return agent

    def add_node(self, node: RegionalServer) -> RegionalServer:
        self.nodes[node.config.listen.addr] = node
        return node

    def add_scripted(self, addr: Address) -> None:
        self.inboxes[addr] = []

    # -- moving datagrams --

    def send(self, src: Address, dst: Address, message: Request | Response | bytes) -> None:
        """A scripted endpoint sends ``message``; everything it causes is delivered."""
        data = message if isinstance(message, bytes) else message.to_bytes()
        self._run([(src, dst, data)])

    def flush(self) -> None:
        """Deliver what the agents want to send, and what that causes, until the network is quiet."""
        self._run([])

    def _collect(self) -> list[tuple[Address, Address, bytes]]:
        out: list[tuple[Address, Address, bytes]] = []
        for addr, agent in self.agents.items():
            out.extend((addr, to, data) for data, to in agent.datagrams_to_send())
            while (event := agent.next_event()) is not None:
                self.events[addr].append(event)
        return out

    def _run(self, queue: list[tuple[Address, Address, bytes]]) -> None:
        for _ in range(10_000):  # bounded: a storm is a failure, not a hang
            queue.extend(self._collect())
            if not queue:
                return
            src, dst, data = queue.pop(0)
            self.log.append((src, dst, data))
            if self.drop is not None and self.drop(src, dst, parse_message_untrusted(data)):
                continue
            if dst in self.nodes:
                queue.extend((dst, to, out) for out, to in self.nodes[dst].handle_datagram(data, src, self.now))
            elif dst in self.agents:
                self.agents[dst].receive_datagram(data, src, self.now)
            elif dst in self.inboxes:
                self.inboxes[dst].append(parse_message_untrusted(data))
            else:
                self.lost.append((src, dst, data))  # nobody there (e.g. the federation peer's pings)
        raise AssertionError("message storm on the wire")

    def run(self, seconds: float) -> None:
        """Move the clock by ``seconds``, firing every agent and node timer on the way in order."""
        end = self.now + seconds
        for _ in range(100_000):
            self.flush()
            due: list[tuple[float, int, Address]] = []
            for kind, table in ((0, self.agents), (1, self.nodes)):
                for addr, element in table.items():
                    deadline = element.get_timer()
                    if deadline is not None and deadline <= end:
                        due.append((deadline, kind, addr))
            if not due:
                self.now = end
                return
            deadline, kind, addr = min(due)
            self.now = max(self.now, deadline)
            if kind == 0:
                self.agents[addr].handle_timer(self.now)
            else:
                node = self.nodes[addr]
                self._run([(addr, to, out) for out, to in node.handle_timer(self.now)])
        raise AssertionError("timers keep firing without the clock moving")

    # -- looking at what happened --

    def take(self, addr: Address) -> list[SessionEvent]:
        """Events of the agent at ``addr`` since the last call."""
        self.flush()
        got, self.events[addr] = self.events[addr], []
        return got

    def inbox(self, addr: Address) -> list[Request | Response]:
        """What the scripted endpoint at ``addr`` received since the last call."""
        self.flush()
        got, self.inboxes[addr] = self.inboxes[addr], []
        return got

    def sent(self, src: Address | None = None, dst: Address | None = None) -> list[Request | Response]:
        """Every message on the wire (parsed), optionally only from ``src`` and/or to ``dst``."""
        return [
            parse_message_untrusted(data)
            for s, d, data in self.log
            if (src is None or s == src) and (dst is None or d == dst)
        ]


def requests(messages: list[Request | Response], method: str) -> list[Request]:
    return [m for m in messages if isinstance(m, Request) and m.method == method]


def unique(messages: list[Request]) -> list[Request]:
    """Requests without their retransmissions (same top Via branch), first copy kept."""
    seen: set[str | None] = set()
    out: list[Request] = []
    for request in messages:
        if request.top_via.branch not in seen:
            seen.add(request.top_via.branch)
            out.append(request)
    return out


def responses(messages: list[Request | Response], method: str | None = None) -> list[Response]:
    return [m for m in messages if isinstance(m, Response) and (method is None or m.cseq.method == method)]


def of_type(events: list[SessionEvent], kind: type[SessionEvent]) -> list[SessionEvent]:
    return [e for e in events if isinstance(e, kind)]


# -- crafted answers for the scripted peer -----------------------------------------------------------------------


def answer_sdp(offer_body: bytes, *, latency_ms: int | None = None, port: int = 47000) -> bytes:
    """A valid answer to ``offer_body`` (first format, first suite), optionally with another latency."""
    offer_desc, offer_game = read_game_untrusted(offer_body, Role.OFFER)
    terms = offer_game.terms
    if latency_ms is not None:
        terms = replace(terms, qos=replace(terms.qos, latency_ms=latency_ms))
    terms = replace(terms, formats=terms.formats[:1], suites=terms.suites[:1])
    game = GameMedia(terms=terms, address="127.0.0.1", port=port, public_key=b"\x09" * 32, session_id=77)
    desc = game_to_sdp(game, username="peer", sess_id=1, sess_version=1, role=Role.ANSWER, offer=offer_desc)
    return format_sdp(desc).encode()


def ok_for(invite: Request, *, contact: Address = SCRIPTED_PEER, tag: str = "peer-tag", body: bytes | None = None,
           extra: list[tuple[str, str]] | None = None) -> Response:
    """A 200 OK to ``invite`` from the scripted peer, with a valid answer unless ``body`` is given."""
    headers = [("Contact", f"<sip:peer@{contact[0]}:{contact[1]}>"), ("Content-Type", "application/sdp")]
    return response_for(
        invite, 200, to_tag=tag, extra=headers + (extra or []),
        body=answer_sdp(invite.body) if body is None else body,
    )


def offer_terms(**changes: object) -> SessionTerms:
    return make_terms(**changes)  # type: ignore[arg-type]


def regions(tmp: Path) -> tuple[Net, UserAgent, UserAgent]:
    """Two real regional server nodes (eu, na) and alice@eu, bob@na as agents on one in-memory network."""
    net = Net()
    for region, port, peer_port, users in (("eu", EU_SERVER[1], NA_SERVER[1], {"alice": "alice-pw"}),
                                           ("na", NA_SERVER[1], EU_SERVER[1], {"bob": "bob-pw"})):
        node = make_node(region, port, peer_port, tmp, users)
        tokens = itertools.count(1)

        def token(region: str = region, tokens: itertools.count[int] = tokens) -> str:
            return f"{region}-token-{next(tokens)}"

        # the region's own policy component (embedded, on a real SQLite file in ``tmp``)
        node.set_hooks(make_policy_hooks(node.config, node, token_factory=token))
        net.add_node(node)
    alice = net.add_agent(make_agent(config("alice", "alice-pw", "eu.gamesdk.test", EU_SERVER), ALICE, "a"))
    bob = net.add_agent(make_agent(config("bob", "bob-pw", "na.gamesdk.test", NA_SERVER), BOB, "b"))
    return net, alice, bob

