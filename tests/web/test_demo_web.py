"""``python -m demo_game --local --web``: the lobby URL and a login are printed, alice's game waits, and inviting
bob@na from the page starts the match (headless bots, over real loopback sockets)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from web_kit import client, csrf_of, sse_steps

ROOT = Path(__file__).resolve().parents[2]


def start_demo(*extra: str) -> tuple[subprocess.Popen[str], str, str, str]:
    """The demo in its own process; returns it, the lobby URL and the printed login."""
    proc = subprocess.Popen([sys.executable, "-m", "demo_game", "--local", "--web", "--web-port", "0", "--headless",
                             "--duration", "2", "--sim-latency-ms", "0", "--sim-jitter-ms", "0", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for _ in range(50):  # bounded: the banner comes within the first lines
        line = proc.stdout.readline()
        match = re.search(r"web lobby of region eu: (http://\S+?)/\s+log in as (\w+) / (\S+)", line)
        if match:
            return proc, match.group(1), match.group(2), match.group(3)
        if not line:
            break
    proc.kill()
    raise AssertionError("the demo printed no lobby URL")


def test_demo_web_invite_starts_the_match(tmp_path: Path) -> None:
    proc, url, user, password = start_demo()
    try:
        async def invite() -> list[str]:
            async with client() as http:
                async with http.get(url + "/login") as page:
                    token = csrf_of(await page.text())
                async with http.post(url + "/login", data={"csrf": token, "user": user, "password": password},
                                     allow_redirects=False) as resp:
                    assert resp.status == 302
                for _ in range(500):  # bounded: alice's game logs in within a few seconds
                    async with http.get(url + "/") as lobby:
                        text = await lobby.text()
                    if "online</span>" in text:
                        break
                    await asyncio.sleep(0.02)
                async with http.post(url + "/invite", data={
                    "csrf": csrf_of(text), "target": "bob@na.gamesdk.test", "format": "pong/1;tick=60",
                    "classification": "action", "latency_ms": "150", "jitter_ms": "30", "loss_ppm": "20000",
                    "bandwidth_kbps": "64"}, allow_redirects=False) as resp:
                    ref = resp.headers["Location"].rsplit("/", 1)[1]
                return [s["step"] for s in await sse_steps(http, url, ref)]

        steps = asyncio.run(asyncio.wait_for(invite(), 60))
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert steps[-1] == "established", steps
    assert "the web page asks to invite bob@na.gamesdk.test" in out
    assert proc.returncode == 0, out[-2000:]
    assert re.search(r"final score", out, re.IGNORECASE) or "match" in out.lower()
