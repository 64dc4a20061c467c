"""SIPp over TLS: a SIPp player logs in to eu with digest over a TLS connection and places a call to a SIPp
player on na, through both regions; tshark decodes the captured TLS with the key log the servers write
(``SSLKEYLOGFILE``).

Debian's SIPp is built without OpenSSL ("To use a TLS transport you must compile SIPp with OpenSSL"), so SIPp
speaks TCP (``-t t1``) to a socat bridge on loopback that opens the TLS connection to the region, checking its
certificate against the region CA; the region sees an ordinary TLS client. Skipped (with the reason) without
socat, tcpdump or tshark; CI installs them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gamesdk_sipp_harness as h  # registered by conftest.py
import pytest

REGISTER = h.SCENARIOS / "register_md5.xml"
UAS = h.SCENARIOS / "uas_game.xml"
CALLEE = h.SCENARIOS / "callee_register_and_answer.xml"
UAC = h.SCENARIOS / "uac_game_auth.xml"

pytestmark = pytest.mark.timeout(120)


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind((h.LOOPBACK, 0))
        return int(s.getsockname()[1])


def _wait_tcp(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((h.LOOPBACK, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on tcp {port}")


def _password(user: str) -> str:
    return h.USERS[user][1]


@pytest.fixture
def tools() -> None:
    for tool in ("socat", "tcpdump", "tshark"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


def test_sipp_over_tls_logs_in_and_calls_across_regions(tools: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pki = tmp_path / "pki"
    for argv in (["cert", "ca", "--dir", str(pki)],
                 ["cert", "region", h.EU_DOMAIN, "--ca", str(pki), "--ip", h.LOOPBACK],
                 ["cert", "region", h.NA_DOMAIN, "--ca", str(pki), "--ip", h.LOOPBACK]):
        subprocess.run([sys.executable, "-m", "server", *argv], check=True, capture_output=True, timeout=30)
    keylog = tmp_path / "tls-keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))  # inherited by the region processes

    eu_port, na_port = h.free_udp_ports(2)
    eu_tls = _free_tcp_port()

    def tls_overrides(domain: str, udp: int, tls: int | None) -> dict[str, Any]:
        listen = [f"udp:{h.LOOPBACK}:{udp}"] + ([f"tls:{h.LOOPBACK}:{tls}"] if tls else [])
        return {"region": {"listen": listen},
                "tls": {"certificate": str(pki / f"{domain}.crt"), "key": str(pki / f"{domain}.key"),
                        "ca": str(pki / "ca.crt")}}

    eu = h.RegionServer(tmp_path, "eu", h.EU_DOMAIN, eu_port, [(h.NA_DOMAIN, na_port)],
                        overrides=tls_overrides(h.EU_DOMAIN, eu_port, eu_tls))
    na = h.RegionServer(tmp_path, "na", h.NA_DOMAIN, na_port, [(h.EU_DOMAIN, eu_port)],
                        overrides=tls_overrides(h.NA_DOMAIN, na_port, None))
    for region, user in ((eu, "alice"), (na, "bob")):
        region.add_user(user, _password(user))
    capture = tmp_path / "eu-tls.pcap"
    bridge_port = _free_tcp_port()
    procs: list[subprocess.Popen[bytes]] = []
    callee = None
    try:
        eu.start()
        na.start()
        _wait_tcp(eu_tls)
        tcpdump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-w", str(capture), f"tcp port {eu_tls}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(tcpdump)
        assert tcpdump.stderr is not None
        tcpdump.stderr.readline()  # "listening on lo ...": capturing from here on
        bridge = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{bridge_port},bind={h.LOOPBACK},reuseaddr,fork",
             f"OPENSSL:{h.LOOPBACK}:{eu_tls},cafile={pki / 'ca.crt'},verify=1,commonname={h.EU_DOMAIN}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(bridge)
        _wait_tcp(bridge_port)

        callee_port = h.free_udp_ports(1)[0]
        callee = h.start_sipp(CALLEE, na.port, workdir=tmp_path, tag="callee-bob", local_port=callee_port,
                              keys={"user": "bob", "domain": h.NA_DOMAIN, "contact_port": callee_port,
                                    "expires": 600},
                              auth=("bob", _password("bob")), auth_uri=f"sip:{h.NA_DOMAIN}", timeout_s=60,
                              extra=["-oocsf", str(UAS)])
        h.wait_for_log(tmp_path / "callee-bob.messages.log", b"SIP/2.0 200 ", timeout_s=10)

        login = h.run_sipp(REGISTER, bridge_port, workdir=tmp_path, tag="register-alice-tls",
                           keys={"user": "alice", "domain": h.EU_DOMAIN, "contact_port": 5099, "expires": 600},
                           auth=("alice", _password("alice")), auth_uri=f"sip:{h.EU_DOMAIN}", timeout_s=20,
                           extra=["-t", "t1"])
        assert login.ok, login.explain()
        assert login.statuses() == [401, 200]

        uac = h.run_sipp(UAC, bridge_port, workdir=tmp_path, tag="uac-alice-tls",
                         keys={"user": "alice", "domain": h.EU_DOMAIN, "callee": "bob",
                               "callee_domain": h.NA_DOMAIN},
                         auth=("alice", _password("alice")), auth_uri=f"sip:bob@{h.NA_DOMAIN}", timeout_s=25,
                         extra=["-t", "t1"])
        assert uac.ok, uac.explain()
        statuses = uac.statuses()
        assert statuses[0] == 407 and statuses.count(200) >= 2, statuses
        time.sleep(0.5)  # the callee's SIPp writes its message log as it goes
    finally:
        if callee is not None:
            callee.process.stop()
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        eu.stop()
        na.stop()
    # the callee got the INVITE signed by eu for alice (RFC 8224)
    callee_log = (tmp_path / "callee-bob.messages.log").read_text(errors="replace")
    assert "Identity: " in callee_log and "info=<sip:eu.gamesdk.test>" in callee_log

    # tshark decodes the TLS of the capture with the servers' key log: the REGISTER and INVITE in clear
    assert keylog.exists() and keylog.read_text().strip()
    decoded = subprocess.run(
        ["tshark", "-r", str(capture), "-o", f"tls.keylog_file:{keylog}", "-d", f"tls.port=={eu_tls},sip",
         "-Y", "sip", "-T", "fields", "-e", "sip.Request-Line", "-e", "sip.Status-Line"],
        capture_output=True, text=True, timeout=60, check=False)
    assert decoded.returncode == 0, decoded.stderr
    lines = decoded.stdout
    assert "REGISTER sip:eu.gamesdk.test SIP/2.0" in lines, lines
    assert "INVITE sip:bob@na.gamesdk.test SIP/2.0" in lines, lines
    assert "SIP/2.0 407" in lines and "SIP/2.0 200 OK" in lines, lines
