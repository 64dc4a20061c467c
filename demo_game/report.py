"""demo_game/report: the words and figures shown about a session, for the HUD and the text log alike.

One place decides how a budget, a reservation or a stats line reads, so the window and the
headless log say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from demo_game.link import LinkStats, PlayerInfo, QosBudget, SessionInfo, check_budget

__all__ = [
    "MatchResult",
    "budget_text",
    "final_score_line",
    "player_text",
    "reservation_text",
    "session_lines",
    "stats_line",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchResult:
    """What a run produced; returned by ``run_headless`` and ``run_window``."""

    #: "score", "time", "quit", "peer-dropped" or "failed"
    reason: str
    #: (host, guest) points
    score: tuple[int, int]
    #: 0 host, 1 guest, None for a draw or no match
    winner: int | None
    #: one line for people, e.g. "alice@eu.example wins 5-3"
    message: str
    #: (host, guest) player names; ("", "") when the session never started
    players: tuple[str, str]
    #: seconds of play (0 when the session never started)
    duration_s: float
    ticks: int
    #: setup steps as reported by the link(s), in order
    steps: tuple[str, ...]
    #: SIP status of a failed setup, else None
    status: int | None = None
    #: final channel figures of the host's and the guest's link (None for an end not in this process)
    host_stats: LinkStats | None = None
    guest_stats: LinkStats | None = None
    #: snapshots the guest accepted (0 when the guest is not in this process)
    snapshots_received: int = 0
    #: paddle hits over the match (host's count; 0 when the host is not in this process)
    hits: int = 0

    @property
    def ok(self) -> bool:
        """True when a match was played to its end (score or time)."""
        return self.reason in ("score", "time")


def _pct(ppm: float) -> str:
    return f"{ppm / 10_000:.2f}%"


def budget_text(b: QosBudget) -> str:
    return f"rtt {b.latency_ms:g} ms, jitter {b.jitter_ms:g} ms, loss {_pct(b.loss_ppm)}, {b.packets_per_s} pkt/s"


def player_text(p: PlayerInfo) -> str:
    return f"{p.name} ({p.region})"


def reservation_text(p: PlayerInfo) -> str:
    r = p.reservation
    if r is None:
        return f"{p.region}: no reservation known"
    return f"{r.region}: {r.access_network} {r.up_kbps} up / {r.down_kbps} down kbit/s"


def session_lines(info: SessionInfo) -> list[str]:
    """The negotiated session in a few lines (printed once the session is ready)."""
    host, guest = info.players
    return [
        f"players: {player_text(host)} hosts, {player_text(guest)} joins (call {info.call_id})",
        f"format: {info.game_format} | class: {info.classification} | suite: {info.security_suite}",
        f"budget: {budget_text(info.budget)}",
        f"reserved: {reservation_text(host)}; {reservation_text(guest)}",
    ]


def stats_line(stats: LinkStats, budget: QosBudget) -> str:
    """Live figures against the budget, e.g. ``rtt 41.0/50 ms jitter 1.2/10 ms loss 0.00%/1.00% ...``."""
    check = check_budget(stats, budget)
    rtt = "-" if stats.rtt_ms is None else f"{stats.rtt_ms:.1f}"
    flags = [
        name
        for name, over in (("rtt", check.rtt_over), ("jitter", check.jitter_over), ("loss", check.loss_over))
        if over
    ]
    verdict = "within budget" if not flags else "OVER BUDGET: " + ", ".join(flags)
    return (
        f"rtt {rtt}/{budget.latency_ms:g} ms  jitter {stats.jitter_ms:.1f}/{budget.jitter_ms:g} ms  "
        f"loss {_pct(stats.loss_ppm)}/{_pct(budget.loss_ppm)}  "
        f"in {stats.kbps_in:.1f} kbit/s  out {stats.kbps_out:.1f} kbit/s  {verdict}"
    )


def final_score_line(result: MatchResult) -> str:
    """The last line of a run, e.g. ``final score: alice@eu.example 3 - 2 bob@na.example (time, 60.0 s)``."""
    if result.reason == "failed":
        return f"no match: {result.message}"
    host, guest = result.players
    return (
        f"final score: {host} {result.score[0]} - {result.score[1]} {guest} "
        f"({result.reason}, {result.duration_s:.1f} s, {result.ticks} ticks): {result.message}"
    )
