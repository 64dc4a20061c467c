"""``[relay]``: a logged-in player gets time-limited coturn credentials in its REGISTER 200 OK, and a real coturn
configured with the lines of ``gamesdk-server relay-config`` accepts them (and refuses forged or expired ones)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from coturn_kit import coturn_missing, extra_lines, free_udp_port, running_coturn

from gamesdk import ClientConfig, PollingClient
from gamesdk.events import Registered
from gamesdk.ice import stun
from gamesdk.ice.servers import TurnServer, parse_relay_header
from server.cli import main
from server.config import ConfigError, ServerConfig, load_config
from server.io import EmbeddedServer
from server.relay import turn_credentials

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "test-secret-0123456789"


def _region(tmp_path: Path, turn_port: int, **relay: Any) -> tuple[ServerConfig, Path]:
    text = (EXAMPLES / "eu.toml").read_text()
    table = {"urls": [f"turn:127.0.0.1:{turn_port}?transport=udp"], "shared_secret": SECRET,
             "allowed_peer_ips": ["127.0.0.1/32"], **relay}
    lines = ["", "[relay]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in table.items()]
    path = tmp_path / "eu.toml"
    path.write_text(text + "\n".join(lines) + "\n")
    config = dataclasses.replace(load_config(path), database=tmp_path / "eu.sqlite3")
    return config, path


def _relay_config_lines(path: Path) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert main(["relay-config", "--config", str(path)], stdout=out, stderr=err) == 0, err.getvalue()
    return out.getvalue()


def _allocate(turn: TurnServer, password: str) -> tuple[int | None, tuple[str, int] | None]:
    """Allocate at coturn with long-term credentials (RFC 8656): (error code or None, relayed address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3)

        def ask(attributes: dict[str, Any], key: bytes | None) -> stun.Message:
            request = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, transaction_id=os.urandom(12),
                                   attributes={"REQUESTED-TRANSPORT": 17 << 24, **attributes})
            if key is not None:
                request.add_message_integrity(key)
            sock.sendto(bytes(request), turn.address)
            reply = stun.parse_untrusted(sock.recvfrom(2048)[0])
            assert reply is not None and reply.transaction_id == request.transaction_id
            return reply

        challenge = ask({}, None)
        assert challenge.error_code == 401
        realm, nonce = challenge.attributes["REALM"], challenge.attributes["NONCE"]
        key = hashlib.md5(f"{turn.username}:{realm}:{password}".encode()).digest()
        reply = ask({"USERNAME": turn.username, "REALM": realm, "NONCE": nonce}, key)
        if reply.message_class == stun.Class.ERROR:
            return reply.error_code, None
        assert reply.check_message_integrity(key)
        return None, reply.attributes["XOR-RELAYED-ADDRESS"]


def test_logged_in_player_allocates_at_coturn(tmp_path: Path) -> None:
    reason = coturn_missing()
    if reason:
        pytest.skip(reason)
    turn_port = free_udp_port()
    config, path = _region(tmp_path, turn_port, credential_lifetime_s=600)
    conf = _relay_config_lines(path)
    assert "use-auth-secret" in conf and f"static-auth-secret={SECRET}" in conf
    assert "denied-peer-ip=192.168.0.0-192.168.255.255" in conf and "allowed-peer-ip=127.0.0.1" in conf
    conf += "allow-loopback-peers\n" + extra_lines(tmp_path, 49200, 49300)

    server = EmbeddedServer(config, port=0, policy=False)
    server.add_user("alice", "alice-pw")
    server.start_in_thread()
    client = PollingClient(ClientConfig(username="alice", password="alice-pw", domain=config.domain,
                                        server=server.address))
    try:
        with running_coturn(conf, tmp_path, ("127.0.0.1", turn_port)):
            now = time.monotonic()
            client.login(now)
            deadline = now + 10
            while not any(isinstance(e, Registered) for e in client.poll(time.monotonic())):
                assert time.monotonic() < deadline, "no login"
                time.sleep(0.005)
            (turn,) = client.agent.relays
            assert turn.address == ("127.0.0.1", turn_port)
            expiry, user = turn.username.split(":")
            assert user == "alice" and 590 <= int(expiry) - time.time() <= 610
            assert turn.expires_at - time.monotonic() == pytest.approx(600, abs=30)

            error, relayed = _allocate(turn, turn.password)
            assert error is None and relayed is not None and relayed[0] == "127.0.0.1"
            assert 49200 <= relayed[1] <= 49300
            # a password that is not HMAC(secret, username): refused
            assert _allocate(turn, "forged" + turn.password)[0] == 401
            # a well-signed credential that expired a minute ago: refused too
            old_user, old_password = turn_credentials(SECRET, "alice", int(time.time()) - 60)
            expired = dataclasses.replace(turn, username=old_user, password=old_password)
            assert _allocate(expired, old_password)[0] == 401
    finally:
        client.close()
        server.stop_thread()


def test_relay_header_parsing() -> None:
    value = '<turn:203.0.113.7:3478?transport=udp>;username="1733320000:alice";password="q5+/x=";expires=86400'
    turn = parse_relay_header(value, 100.0)
    assert turn is not None and turn.address == ("203.0.113.7", 3478) and turn.password == "q5+/x="
    assert turn.username == "1733320000:alice" and turn.expires_at == 86500.0
    assert "q5+/x=" not in repr(turn)
    for bad in ("<turns:h:5349>;username=\"a\";password=\"b\"", "<turn:h>;username=\"a\"", "junk"):
        assert parse_relay_header(bad, 0.0) is None


def test_relay_table_errors_and_missing_table(tmp_path: Path) -> None:
    for relay, key in (({"urls": ["http://x"]}, "relay.urls[0]"), ({"shared_secret": "short"}, "relay.shared_secret"),
                       ({"credential_lifetime_s": 5}, "relay.credential_lifetime_s"),
                       ({"denied_peer_ips": ["10.0.0.1/8"]}, "relay.denied_peer_ips[0]"),
                       ({"colour": "red"}, "relay.colour")):
        with pytest.raises(ConfigError) as err:
            _region(tmp_path, 3478, **relay)
        assert err.value.key == key
    out, err_text = io.StringIO(), io.StringIO()
    assert main(["relay-config", "--config", str(EXAMPLES / "eu.toml")], stdout=out, stderr=err_text) != 0
    assert "has no [relay] table" in err_text.getvalue() and out.getvalue() == ""
