"""demo_game/loopback: an in-memory :class:`~demo_game.link.GameLink` pair with a simulated network.

Used by the tests and by ``--offline``: the game runs exactly as over the real channel, with
optional one-way latency, jitter and loss drawn from a seeded ``random.Random`` (a repeatable
network), a scripted session setup (steps, then ready or a failure such as a policy refusal),
and a way to cut the wire to show what a peer drop looks like.

Time is whatever the caller passes to ``poll``/``flush``, so tests can run a whole match on a
virtual clock in a fraction of a second.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, replace
from typing import Self

from demo_game.link import (
    Lane,
    LinkClosed,
    LinkEvent,
    LinkStats,
    MessageReceived,
    PeerDisconnected,
    PeerInterrupted,
    PeerResumed,
    SessionFailed,
    SessionInfo,
    SessionReady,
    SetupStep,
)

__all__ = ["LoopbackLink", "NetSim"]

#: Bytes a message costs on the wire besides its payload: IPv4 (20) + UDP (8) + our channel
#: header (13) + AEAD tag (16), DESIGN section 6. Makes the simulated kbit/s comparable to the real ones.
WIRE_OVERHEAD_BYTES = 20 + 8 + 13 + 16

#: Window of the kbit/s figures, seconds.
RATE_WINDOW_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NetSim:
    """The simulated network, per direction."""

    #: one-way latency, ms
    latency_ms: float = 0.0
    #: extra one-way delay drawn uniformly from [0, jitter_ms], ms
    jitter_ms: float = 0.0
    #: probability a message is lost; a lost reliable message arrives one retransmission later
    loss: float = 0.0
    seed: int = 0


@dataclass(slots=True)
class _Wire:
    """One direction: messages in flight, ordered by arrival time."""

    sim: NetSim
    rng: random.Random
    heap: list[tuple[float, int, Lane | None, bytes, float]]
    counter: itertools.count[int]
    last_reliable_at: float = 0.0
    sent_state: int = 0
    lost_state: int = 0
    severed: bool = False

    def put(self, now: float, lane: Lane | None, data: bytes) -> None:
        delay = (self.sim.latency_ms + self.rng.uniform(0.0, self.sim.jitter_ms)) / 1000.0
        lost = self.severed or (self.sim.loss > 0.0 and self.rng.random() < self.sim.loss)
        if lane is Lane.STATE:
            self.sent_state += 1
            if lost:
                self.lost_state += 1
                return
        elif lost:
            if self.severed and lane is not None:
                return  # a cut wire loses everything; the reliable lane would give up with the session
            # The channel resends a reliable message after about two round trips (its RTO).
            delay += max(0.02, 4 * self.sim.latency_ms / 1000.0)
        at = now + delay
        if lane is Lane.RELIABLE or lane is None:
            # Reliable-ordered: never overtakes an earlier reliable message.
            at = max(at, self.last_reliable_at)
            self.last_reliable_at = at
        heapq.heappush(self.heap, (at, next(self.counter), lane, data, now))

    def due(self, now: float) -> list[tuple[float, Lane | None, bytes, float]]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            at, _, lane, data, sent = heapq.heappop(self.heap)
            out.append((at, lane, data, sent))
        return out


class LoopbackLink:
    """One end of an in-memory link. Build a connected pair with :meth:`pair`."""

    def __init__(
        self,
        info: SessionInfo,
        out_wire: _Wire,
        in_wire: _Wire,
        *,
        setup_steps: tuple[str, ...],
        step_interval_s: float,
        failure: tuple[int, str] | None,
        interrupt_after_s: float,
        disconnect_after_s: float,
    ) -> None:
        self._info = info
        self._out = out_wire
        self._in = in_wire
        self._steps = setup_steps
        self._step_interval_s = step_interval_s
        self._failure = failure
        self._interrupt_after_s = interrupt_after_s
        self._disconnect_after_s = disconnect_after_s
        self._now = 0.0
        self._started_at: float | None = None
        self._steps_done = 0
        self._ready = False
        self._closed = False
        self._last_state_seq = -1
        self._state_seq = 0
        self._cut_at: float | None = None
        self._interrupted = False
        # figures
        self._srtt_in_s: float | None = None
        self._rtt_min_s: float | None = None
        self._rtt_max_s: float | None = None
        self._jitter_s = 0.0
        self._last_transit_s: float | None = None
        self._packets_in = 0
        self._packets_out = 0
        self._bytes_in: deque[tuple[float, int]] = deque()
        self._bytes_out: deque[tuple[float, int]] = deque()
        self._peer: LoopbackLink | None = None

    @classmethod
    def pair(
        cls,
        info: SessionInfo,
        *,
        sim: NetSim | None = None,
        setup_steps: tuple[str, ...] = (),
        guest_setup_steps: tuple[str, ...] | None = None,
        step_interval_s: float = 0.0,
        failure: tuple[int, str] | None = None,
        interrupt_after_s: float = 1.0,
        disconnect_after_s: float = 10.0,
    ) -> tuple[Self, Self]:
        """A connected (host, guest) pair.

        Args:
            info: the session as the host sees it (``local_side`` is set per end).
            sim: the simulated network, the same both ways (each direction gets its own generator).
            setup_steps: texts the host's end reports as :class:`SetupStep` before the session is ready.
            guest_setup_steps: the guest's texts; None means the same as the host's.
            step_interval_s: time between two steps, so a connecting screen can show them appear.
            failure: ``(status, reason)``: the setup ends in :class:`SessionFailed` instead.
            interrupt_after_s / disconnect_after_s: silence before PeerInterrupted / PeerDisconnected
                once the wire is cut (the SDK channel defaults, DESIGN section 6).
        """
        sim = sim or NetSim()
        to_guest = _Wire(sim, random.Random(sim.seed * 2 + 1), [], itertools.count())
        to_host = _Wire(sim, random.Random(sim.seed * 2 + 2), [], itertools.count())
        common = {
            "step_interval_s": step_interval_s,
            "failure": failure,
            "interrupt_after_s": interrupt_after_s,
            "disconnect_after_s": disconnect_after_s,
        }
        guest_steps = setup_steps if guest_setup_steps is None else guest_setup_steps
        host = cls(replace(info, local_side=0), to_guest, to_host, setup_steps=setup_steps, **common)  # type: ignore[arg-type]
        guest = cls(replace(info, local_side=1), to_host, to_guest, setup_steps=guest_steps, **common)  # type: ignore[arg-type]
        host._peer, guest._peer = guest, host
        return host, guest

    # ---- test and demo controls -----------------------------------------------------------------

    def cut(self, now: float) -> None:
        """Cut both directions of the wire (a peer that vanished without a word)."""
        self._out.severed = self._in.severed = True
        for end in (self, self._peer):
            if end is not None and end._cut_at is None:
                end._cut_at = now

    def restore(self) -> None:
        """Reconnect the wire after :meth:`cut`."""
        self._out.severed = self._in.severed = False
        for end in (self, self._peer):
            if end is not None:
                end._cut_at = None

    # ---- GameLink -------------------------------------------------------------------------------

    def poll(self, now: float) -> list[LinkEvent]:
        self._now = now
        events: list[LinkEvent] = []
        if self._started_at is None:
            self._started_at = now
        if not self._ready and not self._closed:
            self._setup(now, events)
            return events
        if self._closed:
            return events
        for at, lane, data, sent in self._in.due(now):
            if lane is None:
                # The peer's close: a BYE plus the channel's CLOSE on a real link.
                self._closed = True
                events.append(PeerDisconnected(reason=data.decode("utf-8", "replace")))
                return events
            self._account_in(at, sent, len(data))
            if lane is Lane.STATE:
                seq = int.from_bytes(data[:8], "big")
                if seq <= self._last_state_seq:
                    continue  # unreliable-sequenced: an older state than one already delivered
                self._last_state_seq = seq
                data = data[8:]
            events.append(MessageReceived(lane=lane, data=data))
        if self._cut_at is not None:
            silent_s = now - self._cut_at
            if silent_s >= self._disconnect_after_s:
                self._closed = True
                events.append(PeerDisconnected(reason=f"peer silent for {silent_s:.1f} s"))
            elif silent_s >= self._interrupt_after_s and not self._interrupted:
                self._interrupted = True
                events.append(PeerInterrupted())
        elif self._interrupted:
            self._interrupted = False
            events.append(PeerResumed())
        return events

    def send_state(self, data: bytes) -> None:
        self._check_open()
        # The sequence number a real unreliable-sequenced lane carries in its frame.
        self._out.put(self._now, Lane.STATE, self._state_seq.to_bytes(8, "big") + data)
        self._state_seq += 1
        self._account_out(len(data))

    def send_reliable(self, data: bytes) -> None:
        self._check_open()
        self._out.put(self._now, Lane.RELIABLE, bytes(data))
        self._account_out(len(data))

    def flush(self, now: float) -> None:
        self._now = now

    def stats(self) -> LinkStats:
        peer = self._peer
        rtt = None
        if self._srtt_in_s is not None and peer is not None and peer._srtt_in_s is not None:
            rtt = (self._srtt_in_s + peer._srtt_in_s) * 1000.0
        lost_in = self._in.lost_state / self._in.sent_state if self._in.sent_state else 0.0
        lost_out = self._out.lost_state / self._out.sent_state if self._out.sent_state else 0.0
        return LinkStats(
            rtt_ms=rtt,
            rtt_min_ms=self._rtt_pair(lowest=True),
            rtt_max_ms=self._rtt_pair(lowest=False),
            jitter_ms=self._jitter_s * 1000.0,
            loss_in_ppm=round(lost_in * 1_000_000),
            loss_out_ppm=round(lost_out * 1_000_000),
            kbps_in=self._rate(self._bytes_in),
            kbps_out=self._rate(self._bytes_out),
            packets_in=self._packets_in,
            packets_out=self._packets_out,
        )

    def session_info(self) -> SessionInfo | None:
        return self._info if self._ready else None

    def close(self, reason: str = "quit") -> None:
        if self._closed:
            return
        self._closed = True
        if self._ready:
            self._out.put(self._now, None, f"peer hung up ({reason})".encode())

    # ---- internals ------------------------------------------------------------------------------

    def _setup(self, now: float, events: list[LinkEvent]) -> None:
        assert self._started_at is not None
        elapsed = now - self._started_at
        while self._steps_done < len(self._steps) and elapsed >= self._steps_done * self._step_interval_s:
            events.append(SetupStep(text=self._steps[self._steps_done]))
            self._steps_done += 1
        if self._steps_done < len(self._steps) or elapsed < len(self._steps) * self._step_interval_s:
            return
        if self._failure is not None:
            self._closed = True
            events.append(SessionFailed(status=self._failure[0], reason=self._failure[1]))
        else:
            self._ready = True
            events.append(SessionReady(info=self._info))

    def _check_open(self) -> None:
        if not self._ready:
            raise LinkClosed("the session is not established yet")
        if self._closed:
            raise LinkClosed("the session has ended")

    def _account_out(self, size: int) -> None:
        self._packets_out += 1
        self._bytes_out.append((self._now, size + WIRE_OVERHEAD_BYTES))

    def _account_in(self, at: float, sent: float, size: int) -> None:
        self._packets_in += 1
        self._bytes_in.append((at, size + WIRE_OVERHEAD_BYTES))
        transit = at - sent
        # Smoothed one-way time, the RFC 6298 section 2 gain of 1/8.
        self._srtt_in_s = (
            transit if self._srtt_in_s is None else self._srtt_in_s + (transit - self._srtt_in_s) / 8
        )
        self._rtt_min_s = transit if self._rtt_min_s is None else min(self._rtt_min_s, transit)
        self._rtt_max_s = transit if self._rtt_max_s is None else max(self._rtt_max_s, transit)
        if self._last_transit_s is not None:
            # RFC 3550 section 6.4.1: J += (|D| - J) / 16.
            self._jitter_s += (abs(transit - self._last_transit_s) - self._jitter_s) / 16
        self._last_transit_s = transit

    def _rtt_pair(self, *, lowest: bool) -> float | None:
        # A round trip is one transit each way: add this end's and the peer's one-way figures.
        peer = self._peer
        mine = self._rtt_min_s if lowest else self._rtt_max_s
        theirs = None if peer is None else (peer._rtt_min_s if lowest else peer._rtt_max_s)
        if mine is None or theirs is None:
            return None
        return (mine + theirs) * 1000.0

    def _rate(self, window: deque[tuple[float, int]]) -> float:
        while window and window[0][0] < self._now - RATE_WINDOW_S:
            window.popleft()
        return sum(size for _, size in window) * 8 / 1000.0 / RATE_WINDOW_S
