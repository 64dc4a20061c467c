"""Digest against a real tool: sipsak answers our MD5 challenge over UDP on 127.0.0.1.

Debian's sipsak 0.9.8.1 does MD5 only and reads only the first challenge (like SIPp 3.6.1), so the challenge
here lists MD5 first, as DESIGN 2 says deployments serving such tools must.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from gamesdk.sip.digest import AuthResult, DigestAuthenticator, compute_ha1
from gamesdk.sip.message import Request, response_for
from gamesdk.sip.parser import parse_message_untrusted

pytestmark = pytest.mark.skipif(shutil.which("sipsak") is None, reason="sipsak is not installed")

REALM = "127.0.0.1"


def serve_sipsak(password: str) -> tuple[int, list[AuthResult]]:
    """Run sipsak (OPTIONS with digest) against a digest-checking UDP responder; returns its exit code and
    every verification result."""
    auth = DigestAuthenticator(
        REALM, secret=os.urandom(32), random_bytes=os.urandom, algorithms=("MD5", "SHA-256")
    )
    ha1 = {alg: compute_ha1("alice", REALM, "wonderland", alg) for alg in ("MD5", "SHA-256")}
    results: list[AuthResult] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        port = sock.getsockname()[1]
        cmd = ["sipsak", "-s", f"sip:alice@127.0.0.1:{port}", "-u", "alice", "-a", password]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10.0
            for _ in range(20):  # bounded: sipsak sends at most a handful of requests
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                try:
                    data, addr = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                req = parse_message_untrusted(data)
                assert isinstance(req, Request)
                now = time.monotonic()
                result = auth.verify(
                    req.headers.get("Authorization"),
                    method=req.method,
                    now=now,
                    lookup_ha1=lambda user, alg: ha1[alg] if user == "alice" else None,
                    request_uri=req.uri,
                )
                results.append(result)
                if result.ok:
                    resp = response_for(req, 200, to_tag="t1")
                else:
                    challenges = [("WWW-Authenticate", v) for v in auth.challenges(now, stale=result.stale)]
                    resp = response_for(req, 401, to_tag="t1", extra=challenges)
                sock.sendto(resp.to_bytes(), addr)
            code = proc.wait(timeout=10.0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, results


def test_sipsak_md5_credentials_verify() -> None:
    code, results = serve_sipsak("wonderland")
    assert code == 0
    assert [r.ok for r in results] == [False, True]
    assert results[0].reason == "no credentials"
    assert (results[1].username, results[1].algorithm) == ("alice", "MD5")


def test_sipsak_wrong_password_is_refused() -> None:
    code, results = serve_sipsak("not-the-password")
    assert code != 0
    assert results and not any(r.ok for r in results)
    assert "wrong response" in [r.reason for r in results]
