"""Interop with SIPp: two regional servers (eu, na) as real processes on loopback, driven by standard tools.

Issue 3 "How it must be shown": SIPp players log in with MD5 digest, a SIPp caller on eu invites a SIPp callee
logged on at na with our extended SDP; 100, 200 come back through both servers with the body byte-identical and
no Record-Route; failure cases end in the status RFC 3261 prescribes. Assertions read SIPp's exit code and its
message logs (``-trace_msg``), which hold every datagram byte for byte.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gamesdk_sipp_harness as h  # registered by conftest.py
import pytest

REGISTER = h.SCENARIOS / "register_md5.xml"
REGISTER_WRONG = h.SCENARIOS / "register_wrong_password.xml"
UAS = h.SCENARIOS / "uas_game.xml"
CALLEE = h.SCENARIOS / "callee_register_and_answer.xml"
UAC = h.SCENARIOS / "uac_game_auth.xml"
EXPECT_TEMPLATE = h.SCENARIOS / "uac_invite_expect.xml.in"

pytestmark = pytest.mark.timeout(120)


def _password(user: str) -> str:
    return h.USERS[user][1]


def _register(region: Any, user: str, workdir: Path, *, contact_port: int, local_port: int = 0,
              password: str | None = None, scenario: Path = REGISTER, tag: str | None = None,
              auth_uri: str | None = "") -> Any:
    """``auth_uri=""`` signs for the domain (``-auth_uri``); ``None`` leaves SIPp's stock digest uri."""
    return h.run_sipp(scenario, region.port, workdir=workdir, tag=tag or f"register-{user}", local_port=local_port,
                      keys={"user": user, "domain": region.domain, "contact_port": contact_port, "expires": 600},
                      auth=(user, password or _password(user)),
                      auth_uri=f"sip:{region.domain}" if auth_uri == "" else auth_uri, timeout_s=20)


def _render_expect(workdir: Path, status: int) -> Path:
    path = workdir / f"uac_invite_expect_{status}.xml"
    path.write_text(EXPECT_TEMPLATE.read_text().replace("@STATUS@", str(status)))
    return path


def _invite_expecting(fed: Any, workdir: Path, callee: str, callee_domain: str, status: int,
                      *, max_forwards: int = 70, tag: str) -> Any:
    return h.run_sipp(_render_expect(workdir, status), fed.eu.port, workdir=workdir, tag=tag,
                      keys={"user": "alice", "domain": h.EU_DOMAIN, "callee": callee, "callee_domain": callee_domain,
                            "max_forwards": max_forwards},
                      auth=("alice", _password("alice")), auth_uri=f"sip:{callee}@{callee_domain}", timeout_s=25)


def _only(messages: list[Any], what: str) -> Any:
    assert len(messages) >= 1, f"no {what} in the SIPp log"
    return messages[-1]


# --- the success path ------------------------------------------------------------------------------------


def _start_callee(region: Any, user: str, workdir: Path, port: int) -> Any:
    """The callee's SIPp: logs in from ``port`` and answers game INVITEs there (out-of-call scenario)."""
    callee = h.start_sipp(CALLEE, region.port, workdir=workdir, tag=f"callee-{user}", local_port=port,
                          keys={"user": user, "domain": region.domain, "contact_port": port, "expires": 600},
                          auth=(user, _password(user)), auth_uri=f"sip:{region.domain}", timeout_s=60,
                          extra=["-oocsf", str(UAS)])
    h.wait_for_log(workdir / f"callee-{user}.messages.log", b"SIP/2.0 200 ", timeout_s=10)
    return callee


def _finish_callee(callee: Any, port: int) -> Any:
    """Tell the callee's SIPp to log out and end (an OPTIONS with its main call's Call-ID), then collect it."""
    time.sleep(0.6)  # let the answered call finish its 500 ms wait for BYE retransmissions (uas_game.xml)
    h.udp_send(port, h.sip_request("OPTIONS", f"sip:callee@{h.LOOPBACK}:{port}", call_id=f"1-{callee.pid}@{h.LOOPBACK}"))
    return callee.wait(20)


def test_register_md5_and_call_from_eu_to_na_through_both_servers(federation: Any, tmp_path: Path) -> None:
    caller_port, callee_port = h.free_udp_ports(2)

    # bob logs in to na from the port his SIPp answers on; alice logs in to eu from hers.
    callee_proc = _start_callee(federation.na, "bob", tmp_path, callee_port)
    try:
        reg_alice = _register(federation.eu, "alice", tmp_path, contact_port=caller_port, local_port=caller_port)
        assert reg_alice.ok, reg_alice.explain()
        assert reg_alice.statuses() == [401, 200]
        challenge = reg_alice.received()[0]
        assert any("MD5" in v and "qop" in v for v in challenge.header("WWW-Authenticate")), challenge.head

        uac = h.run_sipp(UAC, federation.eu.port, workdir=tmp_path, tag="uac-alice", local_port=caller_port,
                         keys={"user": "alice", "domain": h.EU_DOMAIN, "callee": "bob", "callee_domain": h.NA_DOMAIN},
                         auth=("alice", _password("alice")), auth_uri=f"sip:bob@{h.NA_DOMAIN}", timeout_s=25)
        callee = _finish_callee(callee_proc, callee_port)
    finally:
        callee_proc.process.stop()

    assert uac.ok, uac.explain()
    # The callee logged in (401, 200), took the call, then logged out (401, 200 without its binding).
    assert callee.ok, callee.explain()
    register_statuses = [m.status for m in callee.received() if m.status and "REGISTER" in m.head]
    assert register_statuses == [401, 200, 401, 200], register_statuses

    # The caller was challenged (407) before anything was forwarded, then got 100 and the 200.
    statuses = uac.statuses()
    assert statuses[0] == 407, statuses
    assert 100 in statuses[1:] and statuses.count(200) >= 2, statuses  # 200 for INVITE and for BYE

    # The callee saw the INVITE only once it had passed both servers, with na's Via alone (topology hiding:
    # the caller's Via, with its address, stays in its region).
    invites = [m for m in callee.received() if m.method == "INVITE"]
    first_invite = invites[0]
    assert len(first_invite.header_values("Via")) == 1, first_invite.head
    assert int(first_invite.header("Max-Forwards")[0]) == 68  # 70 minus one per proxy (RFC 3261 16.6 step 3)

    # Bodies cross both servers byte for byte, in both directions.
    sent_offer = [m for m in uac.sent() if m.method == "INVITE"][-1].body
    assert sent_offer and first_invite.body == sent_offer
    sent_answer = _only([m for m in callee.sent() if m.status == 200 and m.body], "200 with SDP").body
    got_200 = _only([m for m in uac.received() if m.status == 200 and m.body], "200 with SDP at the caller")
    assert got_200.body == sent_answer
    assert b"a=gsdk-kx:x25519 " in got_200.body

    # No proxy adds Record-Route (DESIGN section 2), so the dialog's route set is empty.
    assert got_200.header("Record-Route") == []
    for m in invites:
        assert m.header("Record-Route") == []
    # The 200 reaching the caller has only the caller's own Via left.
    assert len(got_200.header_values("Via")) == 1

    # ACK and BYE went to the eu server (SIPp sends everything there) and were forwarded by Request-URI.
    acks = [m for m in callee.received() if m.method == "ACK"]
    byes = [m for m in callee.received() if m.method == "BYE"]
    assert acks and byes, [m.start_line for m in callee.received()]
    assert acks[0].start_line.startswith(f"ACK sip:bob@127.0.0.1:{callee_port}")
    assert "CSeq: 2 ACK" in acks[0].head and "CSeq: 3 BYE" in byes[0].head


def test_register_lists_binding_with_expiry(federation: Any, tmp_path: Path) -> None:
    (contact_port,) = h.free_udp_ports(1)
    result = _register(federation.na, "carol", tmp_path, contact_port=contact_port, tag="register-carol-list")
    assert result.ok, result.explain()
    ok = result.received()[-1]
    assert ok.status == 200
    contacts = ok.header("Contact")
    assert any(f":{contact_port}" in c and "expires=" in c for c in contacts), contacts


def test_register_with_sipps_stock_digest_uri(federation: Any, tmp_path: Path) -> None:
    """Without ``-auth_uri`` SIPp signs ``uri="sip:<server address>"`` while the Request-URI names the domain.

    A digest uri that names this server by one of its listen addresses is this server (as Kamailio's
    ``myself``), so a stock SIPp login succeeds.
    """
    (contact_port,) = h.free_udp_ports(1)
    result = _register(federation.eu, "alice", tmp_path, contact_port=contact_port, tag="register-stock-uri",
                       auth_uri=None)
    assert result.ok, result.explain()
    signed = [m for m in result.sent() if m.header("Authorization")]
    assert signed, [m.start_line for m in result.sent()]
    assert f'uri="sip:127.0.0.1:{federation.eu.port}"' in signed[-1].header("Authorization")[0]
    assert result.received()[-1].status == 200


# --- failure cases -----------------------------------------------------------------------------------------


def test_wrong_password_is_refused(fresh_federation: Any, tmp_path: Path) -> None:
    (contact_port,) = h.free_udp_ports(1)
    result = _register(fresh_federation.eu, "alice", tmp_path, contact_port=contact_port,
                       password="not-" + _password("alice"), scenario=REGISTER_WRONG, tag="register-wrong")
    assert result.ok, result.explain()
    statuses = result.statuses()
    assert statuses[0] == 401 and statuses[-1] in (401, 403), statuses
    assert 200 not in statuses
    # The response with the wrong credentials did reach the server (SIPp signed the retry).
    assert any(m.header("Authorization") for m in result.sent())


def test_unknown_user_gets_404(federation: Any, tmp_path: Path) -> None:
    result = _invite_expecting(federation, tmp_path, "nobody", h.NA_DOMAIN, 404, tag="invite-404")
    assert result.ok, result.explain()
    assert result.statuses()[-1] == 404


def test_offline_user_gets_480(fresh_federation: Any, tmp_path: Path) -> None:
    # carol has an account at na but never logged in there.
    result = _invite_expecting(fresh_federation, tmp_path, "carol", h.NA_DOMAIN, 480, tag="invite-480")
    assert result.ok, result.explain()
    assert result.statuses()[-1] == 480


def test_max_forwards_zero_gets_483(federation: Any, tmp_path: Path) -> None:
    result = _invite_expecting(federation, tmp_path, "bob", h.NA_DOMAIN, 483, max_forwards=0, tag="invite-483")
    assert result.ok, result.explain()
    assert result.statuses()[-1] == 483


# --- malformed and oversize input (raw UDP: SIPp only sends well-formed SIP) ----------------------------------


_GOOD = h.sip_request("OPTIONS", f"sip:{h.EU_DOMAIN}")
MALFORMED = {
    # RFC 3261 section 7.3.1: a header line is "name: value".
    "header line without colon": (_GOOD.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), 400),
    # RFC 3261 section 20.22: Max-Forwards is 1*DIGIT.
    "Max-Forwards not a number": (_GOOD.replace(b"Max-Forwards: 70", b"Max-Forwards: many"), 400),
    # RFC 3261 section 18.3: a datagram shorter than its Content-Length is discarded with 400.
    "Content-Length beyond the datagram": (_GOOD.replace(b"Content-Length: 0", b"Content-Length: 50"), 400),
    # RFC 3261 section 8.2.2.3 / 20.16: the CSeq method must match the request method.
    "CSeq method mismatch": (_GOOD.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"), 400),
    # RFC 3261 section 8.2.2.1 ... version: 505.
    "SIP/3.0": (_GOOD.replace(b" SIP/2.0\r\nVia", b" SIP/3.0\r\nVia", 1), 505),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_gets_error_with_reason(federation: Any, case: str) -> None:
    data, status = MALFORMED[case]
    assert data != _GOOD
    reply = h.udp_exchange(federation.eu.port, data)
    assert reply is not None, f"no answer to a request with {case}"
    status_line = reply.split(b"\r\n", 1)[0].decode()
    assert status_line.startswith(f"SIP/2.0 {status} ")
    assert len(status_line) > len("SIP/2.0 400 ") + 3  # a reason phrase that says what is wrong


def test_garbage_is_dropped_and_server_keeps_serving(federation: Any) -> None:
    assert h.udp_exchange(federation.eu.port, b"\x00\xffnot sip at all\r\n\r\n", timeout_s=0.5) is None
    reply = h.udp_exchange(federation.eu.port, h.sip_request("OPTIONS", f"sip:{h.EU_DOMAIN}"))
    assert reply is not None and reply.startswith(b"SIP/2.0 200 "), reply


def test_oversize_request_gets_513(federation: Any) -> None:
    limit = int(federation.eu.config.get("limits", {}).get("max_message_bytes", 8192))
    body = b"a=gsdk-pad:" + b"x" * (limit + 100) + b"\r\n"
    big = h.sip_request("OPTIONS", f"sip:{h.EU_DOMAIN}", body=body, extra_headers=["Content-Type: application/sdp"])
    assert len(big) > limit
    reply = h.udp_exchange(federation.eu.port, big)
    assert reply is not None and reply.split(b"\r\n", 1)[0].startswith(b"SIP/2.0 513 "), reply
