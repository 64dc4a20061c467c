"""The policy process over HTTPS with mutual TLS (``[policy] url = "https://..."``): the SIP server's client
checks the process's certificate and presents the region's; a caller without the region's certificate is
refused even with the token, and plain HTTP to the port gets nothing."""

from __future__ import annotations

import dataclasses
import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.certs import make_test_pki
from server.config import ServerConfig, load_config
from server.policy import AppSession, Deny, Grant, Resource
from server.policy.http import BlockingPolicyClient
from server.policy_tls import policy_client_context

REPO = Path(__file__).resolve().parents[2]
TOKEN = "policy-https-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def region(tmp_path: Path) -> Iterator[ServerConfig]:
    make_test_pki(tmp_path / "pki", ("eu.gamesdk.test",))
    port = _free_port()
    text = (REPO / "examples" / "eu.toml").read_text()
    text += ('\n[tls]\ncertificate = "pki/eu.gamesdk.test.crt"\nkey = "pki/eu.gamesdk.test.key"\n'
             'ca = "pki/ca.crt"\n')
    text = text.replace('database = "eu.sqlite3"', f'database = "{tmp_path / "eu.sqlite3"}"')
    path = tmp_path / "eu.toml"
    if "[policy]" in text:
        text = text.replace("[policy]", f'[policy]\nurl = "https://127.0.0.1:{port}"\nlisten = "127.0.0.1:{port}"\n'
                                        f'token = "{TOKEN}"', 1)
    else:
        text += f'\n[policy]\nurl = "https://127.0.0.1:{port}"\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
    path.write_text(text)
    config = load_config(path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "server", "policy", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on https://" in line, line + (proc.stdout.read() if proc.poll() is not None else "")
        yield config
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_region_reaches_its_policy_process_over_mutual_tls(region: ServerConfig,
                                                           req: Callable[..., AppSession]) -> None:
    url = (region.policy_raw or {})["url"]
    client = BlockingPolicyClient(url, token=TOKEN, timeout_s=5.0)
    client.ssl_context = policy_client_context(region)
    decision = client.preliminary(req(1, ip="127.0.0.1"), 0.0)
    assert isinstance(decision, Grant) or (isinstance(decision, Deny) and decision.resource is not Resource.POLICY)

    # the token alone, without the region's client certificate: refused at the TLS layer
    anonymous = BlockingPolicyClient(url, token=TOKEN, timeout_s=5.0)
    anonymous.ssl_context = ssl.create_default_context(cafile=str(region.tls.ca))
    refused = anonymous.preliminary(req(2, ip="127.0.0.1"), 0.0)
    assert isinstance(refused, Deny) and refused.resource is Resource.POLICY

    # plain HTTP to the HTTPS port gets no HTTP answer
    host, port = url.removeprefix("https://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/health")
        conn.getresponse()
    conn.close()
    time.sleep(0)  # nothing else to wait for


def test_https_without_certificate_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "eu.toml"
    text = (REPO / "examples" / "eu.toml").read_text().replace('database = "eu.sqlite3"',
                                                                f'database = "{tmp_path / "eu.sqlite3"}"')
    port = _free_port()
    text += f'\n[policy]\nurl = "https://127.0.0.1:{port}"\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n' \
        if "[policy]" not in text else ""
    path.write_text(text)
    if "[policy]" in (REPO / "examples" / "eu.toml").read_text():
        pytest.skip("the example already has a [policy] table")
    done = subprocess.run([sys.executable, "-m", "server", "policy", "--config", str(path)], capture_output=True, check=False,
                          text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 2 and "[tls] certificate" in done.stderr and "Traceback" not in done.stderr
    assert dataclasses.is_dataclass(load_config(path))
