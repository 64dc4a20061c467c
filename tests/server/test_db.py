"""The region database: file mode 0600, schema version and ordered migrations, clear errors for bad files."""

from __future__ import annotations

import io
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from server_kit import EXAMPLES

from server.cli import EXIT_DATABASE, EXIT_OK, main
from server.db import (
    MIGRATIONS,
    DatabaseError,
    Migration,
    SchemaError,
    migrate,
    open_region_db,
    schema_version,
)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(""), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "eu.toml"
    shutil.copy(EXAMPLES / "eu.toml", path)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_database_is_private_and_at_the_newest_version(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite3"
    conn = open_region_db(db)
    conn.execute("INSERT INTO accounts(name, realm, created_at) VALUES ('a', 'r', 0)")  # makes -wal exist
    assert schema_version(conn) == MIGRATIONS[-1].version
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"accounts", "account_ha1", "billing_records", "billing_events", "policy_reservations",
            "schema_version"} <= tables
    for path in (db, tmp_path / "r.sqlite3-wal", tmp_path / "r.sqlite3-shm"):
        assert mode(path) == 0o600, path
    conn.close()


def test_cli_creates_the_database_with_mode_0600(conf: Path, tmp_path: Path) -> None:
    assert run("user", "add", "alice", "--password", "pw", "--config", str(conf))[0] == EXIT_OK
    assert mode(tmp_path / "eu.sqlite3") == 0o600


def test_unversioned_database_of_the_first_release_is_adopted_and_tightened(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    old = sqlite3.connect(db)
    old.executescript("CREATE TABLE accounts (name TEXT NOT NULL PRIMARY KEY, realm TEXT NOT NULL,"
                      " created_at REAL NOT NULL); INSERT INTO accounts VALUES ('alice', 'r', 1.0);")
    old.close()
    db.chmod(0o644)
    conn = open_region_db(db)
    assert schema_version(conn) == MIGRATIONS[-1].version
    assert conn.execute("SELECT name FROM accounts").fetchall() == [("alice",)]
    assert mode(db) == 0o600
    conn.close()


def test_migrations_run_in_order_once_each(tmp_path: Path) -> None:
    steps = (*MIGRATIONS, Migration(MIGRATIONS[-1].version + 1, "add a column",
                                    ("ALTER TABLE accounts ADD COLUMN note TEXT",)))
    conn = open_region_db(tmp_path / "r.sqlite3")
    assert migrate(conn, steps) == steps[-1].version
    assert migrate(conn, steps) == steps[-1].version  # again: nothing to do, no "duplicate column" error
    rows = conn.execute("SELECT version, description FROM schema_version ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [m.version for m in steps]
    conn.close()


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    def boom(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk says no")

    v = MIGRATIONS[-1].version
    steps = (*MIGRATIONS, Migration(v + 1, "half done", ("CREATE TABLE half (x INTEGER)",), apply=boom))
    conn = open_region_db(tmp_path / "r.sqlite3")
    with pytest.raises(DatabaseError, match="disk says no"):
        migrate(conn, steps)
    assert schema_version(conn) == v
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchall() == []
    conn.close()


def test_a_database_newer_than_the_code_is_refused(conf: Path, tmp_path: Path) -> None:
    db = tmp_path / "eu.sqlite3"
    future = (*MIGRATIONS, Migration(MIGRATIONS[-1].version + 1, "from the future", ()))
    open_region_db(db, migrations=future).close()
    with pytest.raises(SchemaError, match="newer than this gamesdk-server"):
        open_region_db(db)
    for argv in (("user", "list"), ("billing", "list"), ("sessions",), ("user", "add", "bob", "-p", "x")):
        code, _, err = run(*argv, "--config", str(conf))
        assert code == EXIT_DATABASE, argv
        assert "schema version" in err and "Traceback" not in err, argv


def test_a_corrupt_database_is_a_clean_error(conf: Path, tmp_path: Path) -> None:
    (tmp_path / "eu.sqlite3").write_bytes(b"this is not a database, " * 200)
    for argv in (("user", "list"), ("billing", "list"), ("billing", "export", "--csv", "-"), ("sessions",)):
        code, _, err = run(*argv, "--config", str(conf))
        assert code == EXIT_DATABASE, (argv, err)
        assert "eu.sqlite3" in err and "Traceback" not in err and err.count("\n") == 1, argv


def test_a_missing_database_directory_is_not_created(conf: Path, tmp_path: Path) -> None:
    conf.write_text(conf.read_text().replace('database = "eu.sqlite3"', 'database = "nowhere/eu.sqlite3"'))
    code, _, err = run("user", "add", "alice", "--password", "pw", "--config", str(conf))
    assert code == EXIT_DATABASE and "does not exist" in err
    assert not (tmp_path / "nowhere").exists()


def test_version_names_the_schema() -> None:
    code, out, _ = run("--version")
    assert code == EXIT_OK and out.startswith("gamesdk-server ") and f"schema {MIGRATIONS[-1].version}" in out


def test_backup_while_the_server_runs(conf: Path, tmp_path: Path) -> None:
    from process_kit import RegionProcess

    region = conf
    region.write_text(conf.read_text().replace("udp:127.0.0.1:5060", f"udp:127.0.0.1:{_free_port()}"))
    assert run("user", "add", "alice", "--password", "pw", "--config", str(region))[0] == EXIT_OK
    server = RegionProcess(region)
    try:
        code, out, err = run("db", "backup", str(tmp_path / "copy.sqlite3"), "--config", str(region))
        assert code == EXIT_OK, err
        assert "backed up" in out
        code, _, err = run("db", "backup", str(tmp_path / "copy.sqlite3"), "--config", str(region))
        assert code == 1 and "exists" in err
    finally:
        server.stop()
    copy = tmp_path / "copy.sqlite3"
    assert mode(copy) == 0o600
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT name FROM accounts").fetchall() == [("alice",)]
    assert schema_version(conn) == MIGRATIONS[-1].version
    conn.close()
    code, out, _ = run("db", "version", "--config", str(region))
    assert code == EXIT_OK and f"schema version {MIGRATIONS[-1].version}" in out


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_user_import_from_csv(conf: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "players.csv"
    csv_file.write_text("name,password\n" + "".join(f"p{i},pw-{i}\n" for i in range(200)) + '"quoted",a,b\n')
    code, _, err = run("user", "import", str(csv_file), "--config", str(conf))
    assert code == 2 and "line 202" in err and "nothing was imported" in err
    csv_file.write_text("name,password\n" + "".join(f"p{i},pw-{i}\n" for i in range(200)))
    code, out, err = run("user", "import", str(csv_file), "--config", str(conf))
    assert code == EXIT_OK and "imported 200" in out, err
    code, out, _ = run("user", "list", "--config", str(conf))
    assert out.count("@eu.gamesdk.test") == 200
    # All or nothing: one taken name keeps the whole file out.
    csv_file.write_text("new1,pw\np7,pw\n")
    code, _, err = run("user", "import", str(csv_file), "--config", str(conf))
    assert code == 1 and "entry 2" in err and "p7" in err
    assert "new1" not in run("user", "list", "--config", str(conf))[1]
