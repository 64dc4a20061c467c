"""Bot against bot over LoopbackLink, headless, on a virtual clock; and the CLI around it."""

from __future__ import annotations

import io
import re

import pytest

from demo_game.control import Control
from demo_game.headless import run_headless
from demo_game.link import Lane, MessageReceived
from demo_game.loopback import LoopbackLink, NetSim
from demo_game.main import _exit_code, main
from demo_game.play import Peer, Phase, StillController
from demo_game.protocol import StateMsg, decode_message_untrusted
from demo_game.report import MatchResult
from demo_game.settings import CLOSE_LINGER_S
from demo_game.testing import VirtualClock, offline_session, sample_session_info
from demo_game.world import Rules

INFO = sample_session_info(latency_ms=80, jitter_ms=20)
SCORE_LINE = re.compile(
    r"^final score: (\S+) (\d+) - (\d+) (\S+) \((\w+), ([\d.]+) s, (\d+) ticks\): (.+)$", re.MULTILINE
)
STATS_LINE = re.compile(
    r"^\[\s*([\d.]+) s\] score (\d+)-(\d+)  rtt ([\d.]+)/80 ms  jitter ([\d.]+)/20 ms  loss ([\d.]+)%/1.00%  "
    r"in ([\d.]+) kbit/s  out ([\d.]+) kbit/s  (within budget|OVER BUDGET: .+)$",
    re.MULTILINE,
)


def play(duration_s: float, *argv: str, rules: Rules | None = None) -> tuple[str, MatchResult]:
    session = offline_session(*argv)
    out = io.StringIO()
    clock = VirtualClock(start=1000.0)
    result = run_headless(
        session.host_link,
        session.guest_link,
        duration_s,
        out,
        clock=clock,
        sleep=clock.sleep,
        rules=rules,
        seed=3,
    )
    return out.getvalue(), result


def test_headless_match_prints_steps_stats_and_a_final_score() -> None:
    text, result = play(30.0)
    # setup steps from both ends, then the negotiated session
    assert (
        "setup (caller): [simulated] INVITE bob@na.gamesdk.test: format pong/1;tick=60, class action" in text
    )
    assert "setup (callee):" in text
    assert "reserved: eu: eu-fibre 74 up / 40 down kbit/s; na: na-cable 40 up / 74 down kbit/s" in text
    assert "suite: chacha20-poly1305" in text
    # a stats line per second, with figures that match the simulated network (15 ms each way + up to 2 ms)
    stats = STATS_LINE.findall(text)
    assert 28 <= len(stats) <= 30
    for _, _, _, rtt, jitter, loss, kin, kout, verdict in stats:
        assert 30.0 <= float(rtt) <= 34.0
        assert float(jitter) <= 2.0 and float(loss) == 0.0
        assert 50.0 < float(kout) < 80.0  # 60 snapshots/s of ~80 bytes + overhead
        assert 20.0 < float(kin) < 45.0  # 60 inputs/s of ~20 bytes + overhead
        assert verdict == "within budget"
    # the final line agrees with the result object and with the last stats line
    m = SCORE_LINE.search(text)
    assert m is not None, text
    host, a, b, guest, reason, seconds, _ticks, message = m.groups()
    assert (host, guest) == ("alice@eu.gamesdk.test", "bob@na.gamesdk.test") == result.players
    assert (int(a), int(b)) == result.score
    assert reason == result.reason and result.ok
    if reason == "time":
        assert float(seconds) == pytest.approx(30.0, abs=0.05)
        last = stats[-1]
        assert (int(last[1]), int(last[2])) <= result.score
    assert message == result.message
    # the guest saw (nearly) every snapshot: 60 per second over a loss-free link
    assert result.snapshots_received >= 0.97 * 60 * result.duration_s
    assert result.hits > 0
    assert result.host_stats is not None and result.host_stats.packets_out >= 60 * result.duration_s


def test_match_to_the_win_score_ends_early() -> None:
    text, result = play(600.0, rules=Rules(win_score=2))
    assert result.reason == "score" and max(result.score) == 2
    assert result.duration_s < 600.0
    assert f"wins {result.score[0]}-{result.score[1]}" in text


def test_lossy_link_goes_over_budget_and_says_so() -> None:
    text, result = play(6.0, "--sim-loss", "0.1", "--seed", "5")
    verdicts = [s[-1] for s in STATS_LINE.findall(text)]
    assert verdicts and all(v == "OVER BUDGET: loss" for v in verdicts[1:])
    assert result.ok  # a lossy link still plays: the snapshots are interpolated over the gaps


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("--latency-ms", "1"), "latency budget: the path needs"),
        (("--access-kbps", "20"), "insufficient uplink in eu-fibre"),
    ],
)
def test_policy_refusal_ends_the_run_with_a_clear_message(argv: tuple[str, ...], needle: str) -> None:
    text, result = play(5.0, *argv)
    assert result.reason == "failed" and result.status == 580
    assert needle in result.message
    assert f"setup (caller) FAILED: 580 {needle}" in text
    assert re.search(rf"^no match: session failed: 580 {re.escape(needle)}", text, re.MULTILINE)
    assert "match: started" not in text


def test_peer_drop_mid_match_is_reported() -> None:
    session = offline_session()
    host_link, guest_link = session.host_link, session.guest_link
    assert isinstance(host_link, LoopbackLink) and isinstance(guest_link, LoopbackLink)
    clock = VirtualClock(start=1000.0)
    host = Peer(host_link, StillController(), rules=Rules(win_score=100))
    control = Control([host], clock)
    # the guest's end is driven by hand and then vanishes
    guest_link.poll(clock())
    while host.phase is not Phase.PLAYING:
        control.frame()
        clock.sleep(1 / 60)
    for _ in range(60):
        control.frame()
        clock.sleep(1 / 60)
    host_link.cut(clock())
    for _ in range(60 * 12):
        control.frame()
        clock.sleep(1 / 60)
        if host.finished:
            break
    assert host.outcome is not None and host.outcome.reason == "peer-dropped"
    assert "connection to bob@na.gamesdk.test lost: peer silent for 10.0 s" == host.outcome.message
    assert any("interrupted" in n.text for n in host.notices)
    # the host paused while the guest was silent
    assert host.role.world.tick < 60 * 3  # type: ignore[union-attr]


def test_guest_draws_interpolated_snapshots_and_predicts_its_paddle() -> None:
    session = offline_session("--sim-latency-ms", "40", "--latency-ms", "200")
    clock = VirtualClock(start=1000.0)
    up = StillController()
    host, guest = Peer(session.host_link, StillController()), Peer(session.guest_link, up)  # type: ignore[arg-type]
    control = Control([host, guest], clock)
    for _ in range(120):
        control.frame()
        clock.sleep(1 / 60)
    assert guest.phase is Phase.PLAYING
    view = guest.view(clock(), 0.0)
    assert view is not None
    # The guest renders the past: about (40 ms + INTERP_DELAY_S) behind the host.
    behind_ticks = host.role.cur.tick - view.tick  # type: ignore[union-attr]
    assert 4 <= behind_ticks <= 7
    # Its own paddle moves at once, before the host has even heard of the input.
    up.move = -1.0
    before = guest.view(clock(), 0.0).paddle_y[1]  # type: ignore[union-attr]
    host_before = host.role.cur.paddle_y[1]  # type: ignore[union-attr]
    control.frame()
    clock.sleep(1 / 60)
    control.frame()
    assert guest.view(clock(), 0.0).paddle_y[1] < before  # type: ignore[union-attr]
    assert host.role.cur.paddle_y[1] == host_before  # type: ignore[union-attr]
    # ...and the host catches up with exactly the same positions once the inputs arrive.
    up.move = 0.0
    for _ in range(30):
        clock.sleep(1 / 60)
        control.frame()
    assert guest.view(clock(), 0.0).paddle_y[1] == pytest.approx(host.role.cur.paddle_y[1], abs=1e-3)  # type: ignore[union-attr]


def test_cli_offline_headless_runs_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    code = main(["--offline", "--headless", "--duration", "1.5", "--sim-latency-ms", "1"], out=out)
    text = out.getvalue()
    assert code == 0, text
    assert SCORE_LINE.search(text)
    assert "billing: none (offline mode" in text


def test_cli_refusal_exits_3() -> None:
    out = io.StringIO()
    assert main(["--offline", "--headless", "--latency-ms", "1"], out=out) == 3
    assert "580" in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--server", "tcp:1.2.3.4:5"], "udp:HOST:PORT"),
        (["--server", "udp:127.0.0.1:5060", "--user", "a", "--password", "b"], "--invite"),
        (["--wait"], "networked mode"),
        (["--duration", "-3"], "positive"),
        (["--sim-loss", "1.5"], "share of packets"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_cli_bad_options_exit_2_with_a_message(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, out=io.StringIO()) == 2
    assert needle in capsys.readouterr().err


def test_state_messages_travel_on_the_state_lane_only() -> None:
    session = offline_session("--sim-latency-ms", "0")
    host_link, guest_link = session.host_link, session.guest_link
    assert isinstance(host_link, LoopbackLink) and isinstance(guest_link, LoopbackLink)
    clock = VirtualClock(start=1000.0)
    host = Peer(host_link, StillController())
    control = Control([host], clock)
    guest_link.poll(clock())
    lanes: dict[Lane, int] = {Lane.STATE: 0, Lane.RELIABLE: 0}
    for _ in range(120):
        control.frame()
        clock.sleep(1 / 60)
        for ev in guest_link.poll(clock()):
            if isinstance(ev, MessageReceived):
                is_state = isinstance(decode_message_untrusted(ev.data), StateMsg)
                assert is_state == (ev.lane is Lane.STATE)
                lanes[ev.lane] += 1
    assert lanes[Lane.STATE] > 60


class RecordingLink(LoopbackLink):
    """Remembers when close() was called."""

    closed_at: float | None = None

    def close(self, reason: str = "quit") -> None:
        if self.closed_at is None:
            self.closed_at = self._now
        super().close(reason)


def test_host_hangs_up_after_the_end_message_and_the_guest_waits_for_it() -> None:
    host_link, guest_link = RecordingLink.pair(INFO, sim=NetSim(latency_ms=20.0))
    clock = VirtualClock(start=1000.0)
    host, guest = Peer(host_link, StillController()), Peer(guest_link, StillController())
    control = Control([host, guest], clock)
    for _ in range(30):
        control.frame()
        clock.sleep(1 / 60)
    ended_at = clock()
    host.end("time", ended_at)
    for _ in range(60):
        control.frame()
        clock.sleep(1 / 60)
    assert host_link.closed_at is not None and host_link.closed_at >= ended_at + CLOSE_LINGER_S
    assert guest_link.closed_at is None  # the guest let the host hang up
    assert guest.outcome is not None and guest.outcome.reason == "time"
    assert host.outcome is not None and host.outcome.reason == "time"


def test_setup_that_never_completes_is_a_failed_run() -> None:
    # A silent server (networked mode against the wrong port) must end the run as a failed setup, so the
    # CLI exits non-zero instead of reporting a 0-0 "quit" as success.
    host_link, guest_link = LoopbackLink.pair(INFO, setup_steps=("REGISTER", "INVITE"), step_interval_s=3600.0)
    out = io.StringIO()
    clock = VirtualClock(start=1000.0)
    result = run_headless(
        host_link, guest_link, 5.0, out, clock=clock, sleep=clock.sleep, setup_timeout_s=2.0
    )
    text = out.getvalue()
    assert result.reason == "failed"
    assert "no session within 2 s" in result.message
    assert "setup: no session after 2 s, giving up" in text
    assert "match: started" not in text
    assert re.search(r"^no match: session failed: no session within 2 s", text, re.MULTILINE)
    assert _exit_code(result) != 0
