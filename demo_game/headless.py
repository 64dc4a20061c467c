"""demo_game/headless: bot against bot without any window, printing what happens.

Used by ``python -m demo_game --headless`` (and when no display is available) and by the tests.
Both ends of the session live in this process; each is a :class:`~demo_game.play.Peer` with a
:class:`~demo_game.bot.Bot`, and one :class:`~demo_game.control.Control` loop drives them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TextIO

from demo_game import settings
from demo_game.bot import Bot
from demo_game.control import Control
from demo_game.link import (
    GameLink,
    LinkEvent,
    PeerDisconnected,
    PeerInterrupted,
    PeerResumed,
    SessionFailed,
    SessionReady,
    SetupStep,
)
from demo_game.play import GuestRole, HostRole, Peer, Phase, match_result
from demo_game.report import MatchResult, final_score_line, session_lines, stats_line
from demo_game.world import GUEST, HOST, Rules

__all__ = ["run_headless"]


def run_headless(
    host_link: GameLink | None,
    guest_link: GameLink | None,
    duration_s: float,
    out: TextIO,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rules: Rules | None = None,
    seed: int = 1,
    stats_every_s: float = settings.STATS_EVERY_S,
    setup_timeout_s: float = 30.0,
    pump: Callable[[float], None] | None = None,
) -> MatchResult:
    """Play bot (host) against bot (guest) for ``duration_s`` seconds of match time.

    Prints each setup step, the negotiated session, a stats line every ``stats_every_s``, each
    point and a final score line to ``out``. Returns when the match ended (time, score, a peer drop)
    or the setup failed; never raises for network trouble.

    Args:
        host_link: the caller's end (authoritative); None when it plays in another process.
        guest_link: the callee's end; None when it plays in another process.
        duration_s: match time; the host ends the match when it is up (or earlier at the win score).
        out: where the log goes (``sys.stdout`` for the CLI).
        clock, sleep: real time by default; a virtual clock makes tests fast (``sleep`` must advance it).
        rules: match rules; default :class:`~demo_game.world.Rules`.
        seed: seeds the world's serves and the two bots.
        setup_timeout_s: give up if the session is not ready by then.
        pump: called once per frame before the links are polled (``SessionHandle.pump``).
    """
    if host_link is None and guest_link is None:
        raise ValueError("run_headless needs at least one link")
    rules = rules or Rules()
    host = Peer(host_link, Bot(HOST, rules, seed=seed * 2 + 1), rules=rules, seed=seed) if host_link else None
    guest = (
        Peer(guest_link, Bot(GUEST, rules, seed=seed * 2 + 2), rules=rules, seed=seed) if guest_link else None
    )
    peers = [p for p in (host, guest) if p is not None]
    first = peers[0]
    labels = {id(host): "caller", id(guest): "callee"}
    match_started: float | None = None
    match_ended: float | None = None

    def log(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    def clock_s() -> float:
        return 0.0 if match_started is None else control.now - match_started

    def on_link_events(peer: Peer, events: list[LinkEvent]) -> None:
        label = labels[id(peer)]
        for ev in events:
            if isinstance(ev, SetupStep):
                log(f"setup ({label}): {ev.text}")
            elif isinstance(ev, SessionReady) and peer is first:
                for line in session_lines(ev.info):
                    log(line)
            elif isinstance(ev, SessionFailed):
                log(f"setup ({label}) FAILED: {ev.status} {ev.reason}")
            elif isinstance(ev, PeerInterrupted):
                log(f"[{clock_s():6.1f} s] {label}: nothing heard from the other side, match paused")
            elif isinstance(ev, PeerResumed):
                log(f"[{clock_s():6.1f} s] {label}: the other side is back")
            elif (
                isinstance(ev, PeerDisconnected)
                and peer.outcome is not None
                and peer.outcome.reason == "peer-dropped"
            ):
                # (A hang-up right after the end of the match is the normal BYE, not news.)
                log(f"[{clock_s():6.1f} s] {label}: {peer.outcome.message}")

    # Points are logged once, from the first peer (the guest hears the host's points later).
    first.on_notice = lambda notice: log(f"[{clock_s():6.1f} s] {notice.text}")
    control = Control(peers, clock, on_link_events=on_link_events, pump=pump)
    started = control.now
    next_stats = 0.0
    setup_timed_out = False

    while True:
        control.frame()
        now = control.now
        if match_started is None and all(p.phase is Phase.PLAYING for p in peers):
            match_started = now
            next_stats = now + stats_every_s
            log(f"match: started, {duration_s:g} s to play, first to {rules.win_score} wins")
        if match_started is not None and first.phase is Phase.PLAYING and first.info is not None:
            if now - match_started >= duration_s + (0.0 if host is not None else settings.END_GRACE_S):
                # The host ends the match; a lone guest leaves if the host never does.
                first.end("time" if host is not None else "quit", now)
            elif now >= next_stats:
                next_stats += stats_every_s
                log(
                    f"[{clock_s():6.1f} s] score {_score(first)}  "
                    + stats_line(first.link.stats(), first.info.budget)
                )
        if first.finished and match_ended is None:
            match_ended = now
        if all(p.finished and not p.hanging_up for p in peers):
            break
        if match_ended is not None and now - match_ended >= settings.END_GRACE_S:
            break  # the other end never heard the end; its own link will time out
        if match_started is None:
            if any(p.phase is Phase.FAILED for p in peers):
                # One side could not set up: the other will not get anywhere either.
                for peer in peers:
                    peer.end("quit", now)
                break
            if now - started >= setup_timeout_s:
                log(f"setup: no session after {setup_timeout_s:g} s, giving up")
                setup_timed_out = True
                for peer in peers:
                    peer.end("quit", now)
                break
        sleep(control.next_frame_in())

    for peer in peers:
        peer.hang_up(control.now)
    result = match_result(host, guest, control.ticks, match_started, match_ended, control.now)
    if setup_timed_out and result.reason != "failed":
        # Nobody answered (a silent or unreachable server): a failed setup, so the CLI exits non-zero.
        message = f"session failed: no session within {setup_timeout_s:g} s (no answer from the server?)"
        result = replace(result, reason="failed", message=message)
    if first.info is not None:
        log(f"final stats ({labels[id(first)]}): " + stats_line(first.link.stats(), first.info.budget))
    log(final_score_line(result))
    return result


def _score(peer: Peer) -> str:
    role = peer.role
    score = (
        role.cur.score
        if isinstance(role, HostRole)
        else role.score
        if isinstance(role, GuestRole)
        else (0, 0)
    )
    return f"{score[0]}-{score[1]}"
