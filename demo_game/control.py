"""demo_game/control: the fixed-timestep loop shared by the windowed and the headless runners.

Each frame (STYLE.md principle 12, after cabbages-and-kings ``Control.main`` and Gaffer On Games,
"Fix Your Timestep!"):

1. read the clock once;
2. pump whatever else runs in the process (embedded servers), then poll every peer's link once;
3. run as many fixed ticks as the elapsed time owes (the accumulator), at most MAX_FRAME_S worth;
4. flush what the ticks queued;
5. return ``alpha``, the leftover fraction of a tick, so the caller draws between the last two ticks.

The clock is injected: the runners pass ``time.monotonic``, the tests a virtual clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from demo_game import settings
from demo_game.link import LinkEvent
from demo_game.play import Peer

__all__ = ["Control"]


class Control:
    """Drives peers at a fixed tick rate from a variable frame rate.

    Args:
        peers: the ends this process plays (one in networked mode, two in local mode).
        clock: seconds, monotonic.
        tick_s: the fixed simulation step.
        max_frame_s: longest frame the accumulator catches up on.
        on_link_events: called with each peer and the events its poll returned (for a text log).
        pump: called once per frame before the peers poll (``SessionHandle.pump``: embedded servers).
    """

    def __init__(
        self,
        peers: Sequence[Peer],
        clock: Callable[[], float],
        *,
        tick_s: float = settings.TICK_S,
        max_frame_s: float = settings.MAX_FRAME_S,
        on_link_events: Callable[[Peer, list[LinkEvent]], None] | None = None,
        pump: Callable[[float], None] | None = None,
    ) -> None:
        self.peers = list(peers)
        self.clock = clock
        self.tick_s = tick_s
        self.max_frame_s = max_frame_s
        self.on_link_events = on_link_events
        self.pump = pump
        self.ticks = 0
        self.now = clock()
        self._last = self.now
        self._accumulator = 0.0

    def frame(self) -> float:
        """Run one frame; returns alpha in [0, 1) for drawing."""
        now = self.clock()
        self.now = now
        frame_s = min(max(0.0, now - self._last), self.max_frame_s)
        self._last = now
        if self.pump is not None:
            self.pump(now)
        for peer in self.peers:
            events = peer.poll(now)
            if events and self.on_link_events is not None:
                self.on_link_events(peer, events)
        self._accumulator += frame_s
        while self._accumulator >= self.tick_s:
            self._accumulator -= self.tick_s
            self.ticks += 1
            for peer in self.peers:
                peer.tick(self.tick_s, now)
        for peer in self.peers:
            peer.flush(now)
        return self._accumulator / self.tick_s

    def next_frame_in(self) -> float:
        """Seconds until the next tick is due (what a runner without vsync may sleep)."""
        return max(0.0, self.tick_s - self._accumulator - (self.clock() - self._last))
