"""The gamesdk-server CLI: exit codes, messages, accounts in SQLite (HA1 only), and a real `run` process."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_kit import EXAMPLES

from gamesdk.sip.digest import compute_ha1
from server.cli import EXIT_FAILED, EXIT_LISTEN, EXIT_OK, EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "eu.toml"
    shutil.copy(EXAMPLES / "eu.toml", path)
    return str(path)


def test_check_config_ok_and_bad(conf: str, tmp_path: Path) -> None:
    code, out, _ = run("check-config", "--config", conf)
    assert code == EXIT_OK and "region eu (eu.gamesdk.test)" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(conf).read_text().replace('listen = "udp:127.0.0.1:5060"', 'listen = "udp:127.0.0.1"'))
    code, _, err = run("check-config", "--config", str(bad))
    assert code == EXIT_USAGE and "region.listen" in err and "Traceback" not in err
    code, _, err = run("check-config", "--config", str(tmp_path / "missing.toml"))
    assert code == EXIT_USAGE and "does not exist" in err


def test_policy_tables_are_checked_too(conf: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(conf).read_text().replace("uplink_kbps = 100000", 'uplink_kbps = "fast"', 1))
    code, _, err = run("check-config", "--config", str(bad))
    assert code == EXIT_USAGE and "uplink_kbps" in err


def test_user_add_list_remove(conf: str, tmp_path: Path) -> None:
    assert run("user", "add", "alice", "--password", "s3cret", "--config", conf)[0] == EXIT_OK
    code, out, _ = run("user", "add", "bob", "--config", conf, stdin="from-stdin\n")
    assert code == EXIT_OK and "bob@eu.gamesdk.test" in out
    code, _, err = run("user", "add", "alice", "--password", "x", "--config", conf)
    assert code == EXIT_FAILED and "already exists" in err
    code, _, err = run("user", "add", "bad name", "--password", "x", "--config", conf)
    assert code == EXIT_FAILED and "invalid user name" in err
    code, _, err = run("user", "add", "carol", "--config", conf, stdin="\n")
    assert code == EXIT_USAGE and "empty" in err
    code, out, _ = run("user", "list", "--config", conf)
    assert code == EXIT_OK and [line.split("\t")[0] for line in out.splitlines()] == ["alice", "bob"]

    # The database keeps HA1 per algorithm, never the password.
    db = sqlite3.connect(tmp_path / "eu.sqlite3")
    rows = dict(db.execute("SELECT algorithm, ha1 FROM account_ha1 WHERE name = 'bob'").fetchall())
    dump = "\n".join(db.iterdump())
    db.close()
    # Only for the algorithms the region offers: SHA-256 alone by default (no MD5 hash kept for nothing).
    assert rows == {alg: compute_ha1("bob", "eu.gamesdk.test", "from-stdin", alg) for alg in ("SHA-256",)}
    assert "from-stdin" not in dump and "s3cret" not in dump

    assert run("user", "remove", "alice", "--config", conf)[0] == EXIT_OK
    code, _, err = run("user", "remove", "alice", "--config", conf)
    assert code == EXIT_FAILED and "no such user" in err


def test_usage_errors() -> None:
    assert run()[0] == EXIT_USAGE
    code, _, err = run("frobnicate")
    assert code == EXIT_USAGE and "invalid choice" in err
    code, _, err = run("user", "add", "x")
    assert code == EXIT_USAGE and "--config" in err
    assert run("--help")[0] == EXIT_OK


def test_billing_and_sessions_without_database(conf: str) -> None:
    code, _, err = run("billing", "list", "--config", conf)
    assert code == EXIT_FAILED and "no database" in err
    run("user", "add", "alice", "--password", "pw", "--config", conf)
    code, out, _ = run("sessions", "--config", conf)
    assert code == EXIT_OK and "eu-fiber" in out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_answers_options_and_stops_on_sigterm(conf: str) -> None:
    port = _free_port()
    text = Path(conf).read_text().replace("udp:127.0.0.1:5060", f"udp:127.0.0.1:{port}")
    Path(conf).write_text(text)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "server", "run", "--config", conf], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        options = (b"OPTIONS sip:eu.gamesdk.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKcli\r\n"
                   b"From: <sip:t@t>;tag=1\r\nTo: <sip:eu.gamesdk.test>\r\nCall-ID: cli\r\nCSeq: 1 OPTIONS\r\n"
                   b"Content-Length: 0\r\n\r\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.25)
            deadline = time.monotonic() + 20
            reply = b""
            while time.monotonic() < deadline and not reply:
                sock.sendto(options, ("127.0.0.1", port))
                try:
                    reply = sock.recv(65535)
                except TimeoutError:
                    assert proc.poll() is None, proc.communicate()[0]
        assert reply.startswith(b"SIP/2.0 200 OK")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output
    assert "shutting down" in output and "Traceback" not in output


def test_run_reports_a_busy_port(conf: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        Path(conf).write_text(Path(conf).read_text().replace("udp:127.0.0.1:5060", f"udp:127.0.0.1:{port}"))
        code, _, err = run("run", "--config", conf)
    assert code == EXIT_LISTEN and "cannot listen" in err


def test_run_serves_with_the_serving_gc_thresholds_and_restores_them(conf: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The collector runs less often while serving (server.cli.SERVING_GC_THRESHOLDS; bench/bench_proxy.py has
    # the figure), and main() leaves the thresholds of the program it runs in as they were.
    import gc

    import server.io
    from server.cli import SERVING_GC_THRESHOLDS

    seen: list[tuple[int, ...]] = []

    async def serve(*args: object, **kwargs: object) -> None:
        seen.append(gc.get_threshold())

    before = gc.get_threshold()
    monkeypatch.setattr(server.io, "serve_forever", serve)
    code, _, err = run("run", "--config", conf)
    assert code == EXIT_OK, err
    assert seen == [SERVING_GC_THRESHOLDS] and SERVING_GC_THRESHOLDS[0] > before[0]
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
