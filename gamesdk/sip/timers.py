"""SIP transaction timers as one value (RFC 3261 section 17 and table 4, as amended by RFC 6026).

Pass a :class:`TimerConfig` to every transaction instead of setting globals; tests and LAN deployments may use a
smaller T1 (RFC 3261 17.1.1.1 allows it on networks known to have a small round-trip time).

======  =====================  ================================================  ==========================
Timer   Default                Meaning                                           Section
======  =====================  ================================================  ==========================
T1      500 ms                 round-trip time estimate                          17.1.1.1
T2      4 s                    maximum retransmit interval, non-INVITE / 2xx     17.1.2.2
T4      5 s                    maximum duration a message stays in the network   17.1.2.2
A       T1, doubling           INVITE request retransmit (unreliable only)       17.1.1.2
B       64*T1                  INVITE transaction timeout                        17.1.1.2
C       > 3 min                proxy INVITE timeout                              16.6 step 11
D       >= 32 s (0 reliable)   wait for response retransmits, INVITE client      17.1.1.2
E       T1, doubling to T2     non-INVITE request retransmit (unreliable only)   17.1.2.2
F       64*T1                  non-INVITE transaction timeout                    17.1.2.2
G       T1, doubling to T2     INVITE final response retransmit (unreliable)     17.2.1
H       64*T1                  wait for ACK receipt                              17.2.1
I       T4 (0 reliable)        wait for ACK retransmits                          17.2.1
J       64*T1 (0 reliable)     wait for non-INVITE request retransmits           17.2.2
K       T4 (0 reliable)        wait for response retransmits, non-INVITE client  17.1.2.2
L       64*T1                  wait for INVITE retransmits after a 2xx (server)  RFC 6026 8.11
M       64*T1                  wait for 2xx retransmits (INVITE client)          RFC 6026 8.11
======  =====================  ================================================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TimerConfig"]


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1, T2, T4 (seconds) and the timers derived from them.

    ``d`` is separate because RFC 3261 17.1.1.2 fixes Timer D at "at least 32 seconds" for unreliable
    transports whatever T1 is. ``c`` is the proxy INVITE timer (16.6 step 11: "greater than 3 minutes").
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0
    c: float = 180.0

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2):
            raise ValueError(f"timers need 0 < T1 <= T2, got T1={self.t1} T2={self.t2}")
        if self.t4 <= 0 or self.d < 0 or self.c <= 0:
            raise ValueError("T4, Timer C and Timer D must be positive")

    @property
    def a(self) -> float:
        """Initial INVITE retransmit interval (doubles on each firing, no cap: 17.1.1.2)."""
        return self.t1

    @property
    def b(self) -> float:
        """INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def e(self) -> float:
        """Initial non-INVITE retransmit interval (doubles up to T2)."""
        return self.t1

    @property
    def f(self) -> float:
        """Non-INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def g(self) -> float:
        """Initial INVITE final response retransmit interval (doubles up to T2)."""
        return self.t1

    @property
    def h(self) -> float:
        """How long an INVITE server transaction waits for the ACK of a non-2xx."""
        return 64 * self.t1

    @property
    def i(self) -> float:
        """How long the Confirmed state absorbs ACK retransmissions (unreliable transports)."""
        return self.t4

    @property
    def j(self) -> float:
        """How long a non-INVITE server transaction absorbs request retransmissions (unreliable)."""
        return 64 * self.t1

    @property
    def k(self) -> float:
        """How long a non-INVITE client transaction absorbs response retransmissions (unreliable)."""
        return self.t4

    @property
    def l(self) -> float:  # the RFC 6026 name
        """How long an INVITE server transaction stays Accepted after sending a 2xx."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """How long an INVITE client transaction stays Accepted after receiving a 2xx."""
        return 64 * self.t1

    def wait_d(self, reliable: bool) -> float:
        """Timer D for the transport in use (zero on reliable transports)."""
        return 0.0 if reliable else self.d

    def wait_i(self, reliable: bool) -> float:
        """Timer I for the transport in use."""
        return 0.0 if reliable else self.i

    def wait_j(self, reliable: bool) -> float:
        """Timer J for the transport in use."""
        return 0.0 if reliable else self.j

    def wait_k(self, reliable: bool) -> float:
        """Timer K for the transport in use."""
        return 0.0 if reliable else self.k

    def backoff(self, interval: float) -> float:
        """The next retransmit interval after ``interval`` for E and G (and 2xx retransmits): 2x, capped at T2."""
        return min(2 * interval, self.t2)
