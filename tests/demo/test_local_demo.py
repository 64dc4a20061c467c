"""The one-command demo as a user runs it: ``python -m demo_game --local --headless --duration 5``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_demo(*args: str, timeout_s: float = 90.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), SDL_VIDEODRIVER="dummy")
    env.pop("DISPLAY", None)
    return subprocess.run([sys.executable, "-m", "demo_game", "--local", "--headless", *args], capture_output=True,
                          text=True, timeout=timeout_s, env=env, cwd=ROOT, check=False)


def test_local_demo_sets_up_reserves_plays_and_bills() -> None:
    done = run_demo("--duration", "5")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # each step of the session setup, in both regions
    for needle in (
        "region eu: regional server eu.gamesdk.test on udp:127.0.0.1:",
        "region na: regional server na.gamesdk.test on udp:127.0.0.1:",
        ", tls:127.0.0.1:",
        "players log in over TLS (RFC 5626 outbound) with certificates made on the fly",
        "alice@eu.gamesdk.test: logged in",
        "bob@na.gamesdk.test: logged in",
        "INVITE bob@na.gamesdk.test via its server, SDP offer a=gsdk-format:pong/1;tick=60 a=gsdk-class:action",
        "bob@na.gamesdk.test: invitation from alice@eu.gamesdk.test",
        "ACK sent directly to bob@na.gamesdk.test, not via a server",
        "ACK received directly from alice@eu.gamesdk.test",
        "channel keys confirmed",
    ):
        assert needle in out, f"missing {needle!r} in:\n{out}"
    # both policy servers reserved, and the caller saw it
    policy_line = next(line for line in out.splitlines() if "200 OK from bob@na.gamesdk.test; policy:" in line)
    for region in ("eu", "na"):
        assert re.search(rf"{region}\.gamesdk\.test reserved \d+ up / \d+ down kbit/s in {region}-fiber",
                         policy_line), policy_line
    # live channel stats against the negotiated budget, then the final score line
    stats = re.findall(r"rtt (\d+\.\d)/80 ms\s+jitter [\d.]+/20 ms\s+loss [\d.]+%/1\.00%", out)
    assert len(stats) >= 3, out
    assert all(0 < float(rtt) < 1000 for rtt in stats)
    assert re.search(r"final score: alice@eu\.gamesdk\.test \d+ - \d+ bob@na\.gamesdk\.test \(time, 5\.\d s", out), out
    # each region billed exactly one record for the session: eu the caller's side, na the callee's
    eu_part, na_part = out.split("billing records of region eu")[1].split("billing records of region na")
    assert re.search(r"\n1\s+\S+\s+orig\s+sip:alice@eu\.gamesdk\.test .* eu-fiber\s+action\s+\d+/\d+\s+[\d.]+\s+bye-local"
                     r"\s+0\.\d+ EUR", eu_part), eu_part
    assert re.search(r"\n1\s+\S+\s+term\s+sip:bob@na\.gamesdk\.test .* na-fiber\s+action\s+\d+/\d+\s+[\d.]+\s+bye-remote"
                     r"\s+0\.\d+ EUR", na_part), na_part
    assert "1 records, 0 open" in eu_part and "1 records, 0 open" in na_part


def test_local_demo_shows_a_policy_refusal() -> None:
    done = run_demo("--duration", "2", "--access-kbps", "20", "--no-tls")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "580 insufficient uplink in eu-fiber" in done.stdout
    assert "players log in over TLS" not in done.stdout  # --no-tls: plain UDP to the regions
    assert "refused by policy:eu.gamesdk.test" in done.stdout
    assert done.stdout.count("(none: no session was confirmed)") == 2
