"""gamesdk/channel/testing: two channel cores over an in-memory, simulated wire, on a fake clock.

Public so the SDK's and the demo's tests can use it too (``trio.testing`` idea). Nothing here touches a
socket or a real clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from gamesdk.address import Address
from gamesdk.channel.config import ChannelConfig, ChannelParams
from gamesdk.channel.connection import Channel
from gamesdk.channel.crypto import generate_keypair, public_key_from_private, transcript_hash
from gamesdk.channel.events import ChannelEvent
from gamesdk.channel.simulator import NetworkSimulator, SimulatorConfig

__all__ = ["DeterministicRandom", "MemoryWire", "channel_pair", "make_params_pair"]

OFFER_ADDR: Address = ("127.0.0.1", 40000)
ANSWER_ADDR: Address = ("127.0.0.1", 40001)
OFFER_GSDK = b"a=gsdk-format:pong/1;tick=60\r\na=gsdk-qos:lat=50;jit=10;loss=10000;pps=60\r\n"
ANSWER_GSDK = b"a=gsdk-format:pong/1;tick=60\r\na=gsdk-qos:lat=50;jit=10;loss=10000;pps=60\r\n"


class DeterministicRandom:
    """A key factory for tests: ``random_bytes(n)`` from SHA-256 in counter mode over a seed."""

    def __init__(self, seed: int | bytes) -> None:
        self._seed = seed if isinstance(seed, bytes) else seed.to_bytes(8, "big")
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            self._counter += 1
            out += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
        return out[:n]


def make_params_pair(
    *,
    suite: str = "chacha20-poly1305",
    seed: int = 1,
    offer_addr: Address = OFFER_ADDR,
    answer_addr: Address = ANSWER_ADDR,
    offer_sid: int = 0x0FFE0001,
    answer_sid: int = 0x0A5E0002,
    offer_gsdk: bytes = OFFER_GSDK,
    answer_gsdk: bytes = ANSWER_GSDK,
    edit_offer: Callable[[bytes], bytes] | None = None,
    edit_answer: Callable[[bytes], bytes] | None = None,
    replace_offer_key: bytes | None = None,
    call_id: str = "a84b4c76e66710@alice.example",
    from_tag: str = "1928301774",
    to_tag: str = "a6c85cf",
) -> tuple[ChannelParams, ChannelParams]:
    """Params for both ends as the SDK would derive them from an offer/answer exchange.

    ``edit_offer`` / ``edit_answer`` change the gsdk lines the *other* side sees (a signalling server
    editing the SDP on the way); ``replace_offer_key`` swaps the offer's public key the answerer sees.
    """
    rng = DeterministicRandom(seed)
    offer_priv, offer_pub = generate_keypair(rng)
    answer_priv, answer_pub = generate_keypair(rng)
    # what the answerer saw of the offer, and what the offerer saw of the answer
    seen_offer_gsdk = edit_offer(offer_gsdk) if edit_offer else offer_gsdk
    seen_answer_gsdk = edit_answer(answer_gsdk) if edit_answer else answer_gsdk
    seen_offer_pub = replace_offer_key if replace_offer_key is not None else offer_pub
    th_offerer = transcript_hash(
        offer_gsdk, seen_answer_gsdk, offer_pub, answer_pub, call_id, from_tag, to_tag
    )
    th_answerer = transcript_hash(
        seen_offer_gsdk, answer_gsdk, seen_offer_pub, answer_pub, call_id, from_tag, to_tag
    )
    offer = ChannelParams(
        role="offer",
        suite=suite,
        local_private_key=offer_priv,
        remote_public_key=answer_pub,
        transcript_hash=th_offerer,
        local_session_id=offer_sid,
        remote_session_id=answer_sid,
        peer_addr=answer_addr,
    )
    answer = ChannelParams(
        role="answer",
        suite=suite,
        local_private_key=answer_priv,
        remote_public_key=seen_offer_pub,
        transcript_hash=th_answerer,
        local_session_id=answer_sid,
        remote_session_id=offer_sid,
        peer_addr=offer_addr,
    )
    assert public_key_from_private(offer_priv) == offer_pub
    return offer, answer


class MemoryWire:
    """Two channels joined by two simulated one-way links, driven on a fake clock.

    ``a`` sends from ``a_addr`` (at first ``b.peer_addr``) and ``b`` from ``b_addr`` (``a.peer_addr``), so
    addresses check out as on UDP; a datagram sent to any other address is lost (kept in ``misrouted``).
    Change ``a_addr`` to play a NAT rebinding of ``a``. Events are collected in ``a_events`` / ``b_events``.
    """

    def __init__(
        self,
        a: Channel,
        b: Channel,
        *,
        a_to_b: SimulatorConfig | None = None,
        b_to_a: SimulatorConfig | None = None,
        now: float = 0.0,
    ) -> None:
        self.a = a
        self.b = b
        self.now = now
        self.a_to_b = NetworkSimulator(a_to_b or SimulatorConfig())
        self.b_to_a = NetworkSimulator(b_to_a or SimulatorConfig(seed=2))
        self.a_events: list[ChannelEvent] = []
        self.b_events: list[ChannelEvent] = []
        #: Where each side's datagrams come from (and the only address that reaches it).
        self.a_addr: Address = b.peer_addr
        self.b_addr: Address = a.peer_addr
        #: Datagrams sent to an address nobody is at: ``(sender "a" or "b", data, address)``.
        self.misrouted: list[tuple[str, bytes, Address]] = []
        #: Hooks that may replace (return bytes) or drop (return None) a datagram as it enters a link.
        self.tap_a_to_b: Callable[[bytes], bytes | None] | None = None
        self.tap_b_to_a: Callable[[bytes], bytes | None] | None = None
        self.steps = 0

    def flush(self) -> None:
        """Move what both channels want to send into the links."""
        for datagram, dest in self.a.datagrams_to_send(self.now):
            if dest != self.b_addr:
                self.misrouted.append(("a", datagram, dest))
                continue
            out = self.tap_a_to_b(datagram) if self.tap_a_to_b else datagram
            if out is not None:
                self.a_to_b.submit(out, dest, self.now)
        for datagram, dest in self.b.datagrams_to_send(self.now):
            if dest != self.a_addr:
                self.misrouted.append(("b", datagram, dest))
                continue
            out = self.tap_b_to_a(datagram) if self.tap_b_to_a else datagram
            if out is not None:
                self.b_to_a.submit(out, dest, self.now)

    def _collect(self) -> None:
        self.a_events.extend(self.a.events())
        self.b_events.extend(self.b.events())

    def run(
        self, until: float, *, stop: Callable[[], bool] | None = None, max_steps: int = 2_000_000
    ) -> None:
        """Advance the fake clock to ``until`` (or until ``stop()`` is true), delivering and firing timers."""
        a, b = self.a, self.b
        start_steps = self.steps
        while self.steps - start_steps < max_steps:
            self.steps += 1
            self.flush()
            self._collect()
            if stop is not None and stop():
                return
            candidates = [until]
            for t in (a.get_timer(), b.get_timer(), self.a_to_b.next_time(), self.b_to_a.next_time()):
                if t is not None:
                    candidates.append(t)
            nxt = min(candidates)
            self.now = max(self.now, nxt)
            if self.now >= until and nxt >= until:
                self.now = until
                self._deliver()
                self.flush()
                self._collect()
                return
            self._deliver()
        raise RuntimeError(f"MemoryWire.run did not settle within {max_steps} steps")

    def _deliver(self) -> None:
        now = self.now
        for data, _ in self.a_to_b.due(now):
            self.b.receive_datagram(data, self.a_addr, now)
        for data, dest in self.b_to_a.due(now):
            if dest == self.a_addr:  # else a moved while it was in flight: the old NAT mapping is gone
                self.a.receive_datagram(data, self.b_addr, now)
        for ch in (self.a, self.b):
            timer = ch.get_timer()
            if timer is not None and timer <= now:
                ch.handle_timer(now)


def channel_pair(
    *,
    suite: str = "chacha20-poly1305",
    config: ChannelConfig | None = None,
    a_to_b: SimulatorConfig | None = None,
    b_to_a: SimulatorConfig | None = None,
    seed: int = 1,
) -> MemoryWire:
    """An offerer (``a``) and an answerer (``b``) with matching keys over a ``MemoryWire``."""
    offer, answer = make_params_pair(suite=suite, seed=seed)
    return MemoryWire(
        Channel(offer, config, now=0.0), Channel(answer, config, now=0.0), a_to_b=a_to_b, b_to_a=b_to_a
    )
