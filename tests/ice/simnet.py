"""A simulated network for the sans-IO ICE agent tests: agents, a STUN server and NATs, on a virtual clock.

A ``Nat`` maps like nftables ``masquerade`` (one public port per inside address: endpoint-independent) or like
``masquerade fully-random`` (a new port per destination: symmetric), and filters like both (address-and-port
dependent: only hosts the inside already sent to get in).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from gamesdk.address import Address
from gamesdk.ice.agent import IceAgent, IceEvent
from gamesdk.ice.stun import binding_response


@dataclass
class Nat:
    public_ip: str
    symmetric: bool = False
    _ports: itertools.count[int] = field(default_factory=lambda: itertools.count(40000))
    #: mapping key -> public port; public port -> (inside address, set of allowed remote addresses)
    _out: dict[tuple[Address, Address | None], int] = field(default_factory=dict)
    _in: dict[int, tuple[Address, set[Address]]] = field(default_factory=dict)

    def outbound(self, src: Address, dst: Address) -> Address:
        key = (src, dst if self.symmetric else None)
        port = self._out.get(key)
        if port is None:
            port = next(self._ports)
            self._out[key] = port
            self._in[port] = (src, set())
        self._in[port][1].add(dst)
        return self.public_ip, port

    def inbound(self, src: Address, port: int) -> Address | None:
        entry = self._in.get(port)
        if entry is None or src not in entry[1]:
            return None
        return entry[0]


@dataclass
class SimNet:
    """Delivers datagrams with a fixed one-way delay; ``run`` advances the virtual clock."""

    delay_s: float = 0.005
    now: float = 0.0
    agents: dict[Address, IceAgent] = field(default_factory=dict)
    nat_of: dict[Address, Nat] = field(default_factory=dict)
    nats: dict[str, Nat] = field(default_factory=dict)
    stun_servers: set[Address] = field(default_factory=set)
    blackholes: set[str] = field(default_factory=set)
    events: dict[Address, list[IceEvent]] = field(default_factory=dict)
    _queue: list[tuple[float, int, Address, Address, bytes]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    delivered: int = 0

    def add(self, agent: IceAgent, nat: Nat | None = None) -> None:
        self.agents[agent.local_addr] = agent
        self.events[agent.local_addr] = []
        if nat is not None:
            self.nat_of[agent.local_addr] = nat
            self.nats[nat.public_ip] = nat

    def send(self, src: Address, dst: Address, data: bytes) -> None:
        nat = self.nat_of.get(src)
        if nat is not None:
            src = nat.outbound(src, dst)
        self._queue.append((self.now + self.delay_s, next(self._seq), src, dst, data))

    def _flush(self) -> None:
        for address, agent in self.agents.items():
            for data, dst in agent.datagrams_to_send(self.now):
                self.send(address, dst, data)
            while (event := agent.next_event()) is not None:
                self.events[address].append(event)

    def run(self, seconds: float, *, until: object = None) -> None:
        end = self.now + seconds
        self._flush()
        while self.now < end:
            if callable(until) and until():
                return
            due = [t for t in (a.get_timer() for a in self.agents.values()) if t is not None]
            due += [item[0] for item in self._queue]
            step = min([*due, end])
            self.now = max(self.now, step)
            ready = sorted(item for item in self._queue if item[0] <= self.now)
            self._queue = [item for item in self._queue if item[0] > self.now]
            for _, _, src, dst, data in ready:
                self._deliver(src, dst, data)
            for agent in self.agents.values():
                timer = agent.get_timer()
                if timer is not None and timer <= self.now:
                    agent.handle_timer(self.now)
            self._flush()
            if not ready and step == end:
                break

    def _deliver(self, src: Address, dst: Address, data: bytes) -> None:
        if dst[0] in self.blackholes:
            return
        if dst in self.stun_servers:
            answer = binding_response(data, src)
            if answer is not None:
                self._queue.append((self.now + self.delay_s, next(self._seq), dst, src, answer))
            return
        nat = self.nats.get(dst[0])
        if nat is not None:
            inside = nat.inbound(src, dst[1])
            if inside is None:
                return  # filtered
            dst = inside
        agent = self.agents.get(dst)
        if agent is None:
            return
        self.delivered += 1
        payload = agent.receive(data, src, self.now)
        if payload is not None:
            self.events[dst].append(_Payload(payload[0], payload[1]))


@dataclass(frozen=True)
class _Payload(IceEvent):
    data: bytes
    src: Address
