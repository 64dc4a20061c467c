"""The REFER / NOTIFY flow of a web invite as tshark decodes it from a loopback capture of region eu's SIP port."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_refer import player, web_invite
from web_kit import client, login, site_url, sse_steps, two_regions

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None or shutil.which("tshark") is None
                                or os.geteuid() != 0, reason="needs tcpdump, tshark and root (.ci/run installs them)")


def test_tshark_decodes_the_refer_and_its_notifies(tmp_path: Path) -> None:
    capture = tmp_path / "refer.pcap"

    async def main() -> int:
        eu, na = await two_regions(tmp_path)
        port = eu.address[1]
        dump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-n", "-Z", "root",  # noqa: ASYNC220
                                 "-w", str(capture), f"udp port {port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        alice, bob = player("alice", "eu", eu), player("bob", "na", na)
        try:
            assert dump.stderr is not None
            line = await asyncio.to_thread(dump.stderr.readline)  # "listening on lo ..." once it captures
            assert "listening" in line, line
            await alice.login()
            await bob.login()
            url = site_url(eu)
            async with client() as http:
                await login(http, url, "alice")
                ref = await web_invite(url, http, "bob@na.gamesdk.test")
                request = await asyncio.wait_for(alice.next_invite_request(), 10)
                calling = asyncio.create_task(request.accept())
                await (await bob.next_invite()).accept()
                session = await calling
                steps = await sse_steps(http, url, ref)
                assert steps[-1]["step"] == "established"
                await session.end("game over")
            await asyncio.sleep(0.2)  # the last NOTIFY's 200 on the wire before the capture stops
            return port
        finally:
            dump.terminate()
            dump.wait(10)
            await alice.close()
            await bob.close()
            await eu.stop()
            await na.stop()

    port = asyncio.run(asyncio.wait_for(main(), 60))
    for _ in range(50):  # bounded: tcpdump flushed the file on exit
        if capture.exists() and capture.stat().st_size > 24:
            break
        time.sleep(0.05)
    decoded = subprocess.run(
        ["tshark", "-r", str(capture), "-d", f"udp.port=={port},sip", "-Y", "sip.CSeq.method == \"REFER\" or sip.CSeq.method == \"NOTIFY\"",
         "-T", "fields", "-E", "separator=|", "-e", "sip.Request-Line", "-e", "sip.Status-Line", "-e", "sip.Refer-To",
         "-e", "sip.Referred-by", "-e", "sip.Event", "-e", "sip.Subscription-State", "-e", "sipfrag.line"],
        capture_output=True, text=True, timeout=60, check=False)
    assert decoded.returncode == 0, decoded.stderr
    rows = [line.split("|") for line in decoded.stdout.splitlines()]
    refer = next(r for r in rows if r[0].startswith("REFER sip:alice@"))
    assert refer[2].startswith("<sip:bob@na.gamesdk.test?Gsdk-Format=pong%2F1%3Btick%3D60")
    assert refer[3] == "<sip:alice@eu.gamesdk.test>" and refer[4] == "refer"
    assert any(r[1] == "SIP/2.0 202 Accepted" for r in rows)
    notifies = [r for r in rows if r[0].startswith("NOTIFY sip:web@")]
    frags = [r[6] for r in notifies]
    assert frags[0] == "SIP/2.0 100 Trying"  # (a 180 NOTIFY follows only when the callee rang before answering)
    final = notifies[-1]
    assert final[6].startswith("SIP/2.0 200 OK") and "P-Gamesdk-Reservation: na.gamesdk.test" in final[6]
    assert final[5].startswith("terminated")
    assert sum(1 for r in rows if r[1] == "SIP/2.0 200 OK") >= len(notifies)
