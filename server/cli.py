"""``gamesdk-server`` (also ``python -m server``): run a region, check its config, manage players.

``main(argv) -> int`` is testable without a process (hypercorn's ``__main__`` shape). Exit codes (docs/server.md):
0 success, 1 the operation failed (unknown user, duplicate), 2 bad usage or bad configuration, 3 the database
cannot be used (corrupt, missing directory, newer schema), 4 cannot listen (address in use or not local), 5 ``ctl``
found no running server. Errors
are one clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from server.accounts import AccountError, AccountStore
from server.config import ConfigError, ServerConfig, load_config
from server.db import DatabaseError
from server.relay import turnserver_conf

if TYPE_CHECKING:
    from server.hooks import PolicyHooks
    from server.node import RegionalServer

__all__ = ["EXIT_DATABASE", "EXIT_FAILED", "EXIT_LISTEN", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3
EXIT_LISTEN = 4
EXIT_UNREACHABLE = 5

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() returns the code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _build_parser() -> _Parser:
    parser = _Parser(prog="gamesdk-server", description="gamesdk regional game server")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", required=True, metavar="FILE", help="the region's TOML file")

    run = sub.add_parser("run", help="run the regional server until SIGINT/SIGTERM")
    with_config(run)
    run.add_argument("--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="overrides [log] level")
    run.add_argument("--trace", action="store_true",
                     help="log every SIP message in full, whatever the level (DEBUG alone never logs bodies)")
    run.add_argument("--log-format", choices=["text", "json"], help="overrides [log] format")
    run.add_argument("--no-policy", action="store_true",
                     help="run the SIP server without the policy component (no admission, no reservations, "
                          "no billing; PUBLISH answered 501), e.g. to measure the proxy alone")

    check = sub.add_parser("check-config", help="check a config file and explain every error")
    with_config(check)

    relay = sub.add_parser("relay-config", help="print the turnserver.conf lines of the region's [relay] (coturn)")
    with_config(relay)

    user = sub.add_parser("user", help="manage player accounts")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", parser_class=_Parser)
    add = user_sub.add_parser("add", help="create a player account")
    add.add_argument("name")
    add.add_argument("--password", "-p", help="the password (read from stdin when omitted)")
    add.add_argument("--admin", action="store_true", help="may use the web site's operator console")
    with_config(add)
    remove = user_sub.add_parser("remove", help="delete a player account")
    remove.add_argument("name")
    with_config(remove)
    imp = user_sub.add_parser("import", help="create many accounts from a CSV file (name,password per line)")
    imp.add_argument("csv", metavar="FILE", help="CSV with columns name,password (a header line is skipped); "
                                                  "'-' reads stdin")
    with_config(imp)
    lst = user_sub.add_parser("list", help="list player accounts")
    with_config(lst)

    billing = sub.add_parser("billing", help="billing records")
    billing_sub = billing.add_subparsers(dest="billing_command", metavar="ACTION", parser_class=_Parser)
    blist = billing_sub.add_parser("list", help="list billing records")
    blist.add_argument("--json", action="store_true", help="JSON instead of a table")
    blist.add_argument("--limit", type=int, default=None, help="only the newest N records")
    blist.add_argument("--open", action="store_true", help="only records without a STOP")
    with_config(blist)
    export = billing_sub.add_parser("export", help="export billing records")
    export.add_argument("--csv", required=True, metavar="FILE", help="write CSV here ('-' for stdout)")
    with_config(export)

    db = sub.add_parser("db", help="the region database")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    backup = db_sub.add_parser("backup", help="copy the database while the server runs (SQLite online backup)")
    backup.add_argument("target", metavar="FILE", help="the copy to write (must not exist)")
    with_config(backup)
    dbv = db_sub.add_parser("version", help="the database's schema version and the newest this server knows")
    with_config(dbv)

    sessions = sub.add_parser("sessions", help="live reservations and free capacity per access network")
    sessions.add_argument("--json", action="store_true")
    with_config(sessions)

    from server.control import COMMANDS

    ctl = sub.add_parser("ctl", help="control a running region over its local socket",
                         description="Commands: " + "; ".join(
                             f"{name}{' ' + a if a else ''}: {what}" for name, (a, what) in COMMANDS.items()))
    ctl.add_argument("--config", "-c", metavar="FILE", help="the region's TOML file (finds the socket)")
    ctl.add_argument("--socket", metavar="PATH", help="the control socket (instead of --config)")
    ctl.add_argument("--json", action="store_true", help="print the answer as JSON")
    ctl.add_argument("ctl_command", metavar="COMMAND", choices=sorted(COMMANDS))
    ctl.add_argument("ctl_args", metavar="ARG", nargs="*")

    policy = sub.add_parser("policy", help="run the policy server as its own process (HTTP/JSON)")
    with_config(policy)
    policy.add_argument("--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="overrides [log] level")
    policy.add_argument("--log-format", choices=["text", "json"], help="overrides [log] format")

    cert = sub.add_parser("cert", help="make a local CA and region certificates (tests, demo, small deployments)")
    cert_sub = cert.add_subparsers(dest="cert_command", metavar="ACTION", parser_class=_Parser)
    ca = cert_sub.add_parser("ca", help="create DIR/ca.crt and DIR/ca.key (give ca.crt to players and peers)")
    ca.add_argument("--dir", required=True, help="where to write the files")
    ca.add_argument("--name", default="gamesdk local CA", help="the CA's common name")
    ca.add_argument("--days", type=int, default=3650)
    region = cert_sub.add_parser("region", help="create DIR/DOMAIN.crt and DIR/DOMAIN.key signed by the CA")
    region.add_argument("domain", help="the region's SIP domain (its certificate's name)")
    region.add_argument("--ca", required=True, metavar="CADIR", help="the folder holding ca.crt and ca.key")
    region.add_argument("--dir", help="where to write the files (default: CADIR)")
    region.add_argument("--ip", action="append", default=[], help="an IP address the region is reached at "
                                                                     "(repeatable)")
    region.add_argument("--days", type=int, default=825)
    return parser


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = _build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except _UsageError as exc:
        print(str(exc), file=err)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return EXIT_OK if exc.code in (0, None) else EXIT_USAGE
    if args.version:
        from gamesdk import __version__
        from server.db import latest_version

        print(f"gamesdk-server {__version__} (database schema {latest_version()})", file=out)
        return EXIT_OK
    if args.command is None:
        parser.print_help(out)
        return EXIT_USAGE
    if args.command == "cert":
        return _cert(args, out, err)
    if args.command == "ctl":
        return _ctl(args, out, err)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"gamesdk-server: bad configuration {args.config}: {exc}", file=err)
        return EXIT_USAGE
    try:
        if args.command == "check-config":
            return _check_config(config, out, err)
        if args.command == "relay-config":
            return _relay_config(config, out, err)
        if args.command == "run":
            return _run(config, args.log_level, args.trace, err, policy=not args.no_policy,
                        log_format=args.log_format)
        if args.command == "db":
            return _db(args, config, out, err)
        if args.command == "user":
            return _user(args, config, stdin or sys.stdin, out, err)
        if args.command in ("billing", "sessions", "policy"):
            return _policy_command(args, config, out, err)
    except AccountError as exc:
        print(f"gamesdk-server: {exc}", file=err)
        return EXIT_FAILED
    except DatabaseError as exc:
        print(f"gamesdk-server: {exc}", file=err)
        return EXIT_DATABASE
    except sqlite3.DatabaseError as exc:
        print(f"gamesdk-server: database {config.database}: {exc}", file=err)
        return EXIT_DATABASE
    except ConfigError as exc:
        print(f"gamesdk-server: bad configuration {args.config}: {exc}", file=err)
        return EXIT_USAGE
    except OSError as exc:
        print(f"gamesdk-server: {exc}", file=err)
        return EXIT_FAILED
    parser.print_help(err)
    return EXIT_USAGE


def _relay_config(config: ServerConfig, out: TextIO, err: TextIO) -> int:
    if config.relay is None:
        print(f"gamesdk-server: region {config.name} has no [relay] table (urls, shared_secret): nothing to print",
              file=err)
        return EXIT_FAILED
    out.write(turnserver_conf(config.relay, config.name))
    return EXIT_OK


def _cert(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pathlib import Path

    from server.certs import CertFiles, CertProblem, make_ca, make_region_certificate

    if args.cert_command is None:
        print("gamesdk-server: cert needs an action: ca or region", file=err)
        return EXIT_USAGE
    if args.days < 1:
        print("gamesdk-server: --days must be at least 1", file=err)
        return EXIT_USAGE
    try:
        if args.cert_command == "ca":
            files = make_ca(Path(args.dir), args.name, days=args.days)
            print(f"wrote {files.certificate} and {files.key} (keep the key private; hand out {files.certificate})",
                  file=out)
            return EXIT_OK
        ca_dir = Path(args.ca)
        ca = CertFiles(ca_dir / "ca.crt", ca_dir / "ca.key")
        for path in (ca.certificate, ca.key):
            if not path.exists():
                print(f"gamesdk-server: {path} does not exist (make it with 'gamesdk-server cert ca --dir "
                      f"{ca_dir}')", file=err)
                return EXIT_FAILED
        files = make_region_certificate(ca, Path(args.dir or ca_dir), args.domain.lower(),
                                        addresses=tuple(args.ip), days=args.days)
    except CertProblem as exc:
        print(f"gamesdk-server: {exc}", file=err)
        return EXIT_FAILED
    except (OSError, ValueError) as exc:
        print(f"gamesdk-server: {exc}", file=err)
        return EXIT_FAILED
    print(f"wrote {files.certificate} and {files.key} for {args.domain}", file=out)
    return EXIT_OK


def _tls_problems(config: ServerConfig, out: TextIO) -> str | None:
    """Certificate files named by the config: unreadable, expired, for another name, or not matching the key."""
    from server.certs import CertProblem, check_certificate, load_certificate

    tls = config.tls
    try:
        if tls.certificate is not None:
            for warning in check_certificate(tls.certificate, tls.key, config.domain):
                print(f"warning: {warning}", file=out)
        for ca in {p.ca for p in config.peers if p.ca is not None} | ({tls.ca} if tls.ca else set()):
            load_certificate(ca)
    except CertProblem as exc:
        return f"tls: {exc}"
    return None


def _database_problem(config: ServerConfig) -> str | None:
    folder = config.database.parent
    if not folder.is_dir():
        return (f"region.database: the directory {folder} does not exist (create it, owned by the server's user, "
                "or fix the path)")
    if config.database.exists() and not os.access(config.database, os.R_OK | os.W_OK):
        return f"region.database: {config.database} is not readable and writable by this user"
    return None


def _check_config(config: ServerConfig, out: TextIO, err: TextIO) -> int:
    problems = _database_problem(config) or _policy_config_problem(config) or _tls_problems(config, out)
    if problems is not None:
        print(f"gamesdk-server: bad configuration {config.source}: {problems}", file=err)
        return EXIT_USAGE
    print(f"{config.source}: ok: region {config.name} ({config.domain}) on "
          f"{', '.join(str(a) for a in config.listens)}, "
          f"database {config.database}, {len(config.peers)} peer(s), "
          f"{len(config.access_networks)} access network(s), digest {', '.join(config.auth.digest_algorithms)}",
          file=out)
    print(_md5_note(config.auth.digest_algorithms), file=out)
    return EXIT_OK


def _md5_note(algorithms: tuple[str, ...]) -> str:
    if "MD5" in algorithms:
        return ("note: auth.digest_algorithms lists MD5 (for legacy tools such as SIPp 3.6.1, sipsak, baresip 1.0):"
                " an on-path party can strip the SHA-256 challenge and make clients answer with MD5")
    return ("note: MD5 is off (SHA-256 only); tools that only do MD5 (SIPp 3.6.1, sipsak, baresip 1.0) need"
            " \"MD5\" in auth.digest_algorithms")


def _policy_config_problem(config: ServerConfig) -> str | None:
    """The policy tables are checked by the policy component's parser (its errors name the key too)."""
    try:
        from server.policy.config import PolicyConfig
        from server.policy.runner import policy_document
    except ImportError:  # pragma: no cover - the policy package is part of the server
        return None
    try:
        PolicyConfig.from_mapping(policy_document(config))
    except ConfigError as exc:
        return str(exc)
    return None


#: The cyclic garbage collector's thresholds while the server runs (CPython's default: 700, 10, 10). The message
#: path leaves no reference cycles (tests/server/test_garbage.py), but it keeps many objects alive for a while
#: (transactions until their timers end, reservations until confirmed, bindings): with the default thresholds
#: every 700 such objects started a collection, and full collections, which walk every live object, came every
#: few hundred calls. Measured (bench/bench_proxy.py, 3,000 calls): 1,048 ms of collections with the defaults,
#: 245 ms with these, about 270 µs of CPU per call less. Kept in round 8, when the transactions stopped leaving
#: cycles (52 objects of cyclic garbage per call before, which counted as growth and made young collections come
#: every ~700 calls): young collections now follow only the growth of tables bounded by a cap or an age (kept
#: dialogs, the policy's used keys, the parser's memo), so higher thresholds would buy little and let a rare
#: cycle (an exception kept with its traceback) wait longer (bench/bench_gc.py, docs/benchmarks.md).
SERVING_GC_THRESHOLDS = (50_000, 20, 10)


@contextmanager
def serving_gc() -> Iterator[None]:
    """While serving: what was allocated at start-up (modules, configuration) moved out of the collector's way
    (``gc.freeze``), and the collector run less often (:data:`SERVING_GC_THRESHOLDS`). Restored afterwards, as
    ``main`` may run inside another program (the tests)."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


def _run(config: ServerConfig, level: str | None, full_trace: bool, err: TextIO, *, policy: bool = True,
         log_format: str | None = None) -> int:
    from server.io import serve_forever, setup_logging

    setup_logging(level or config.log_level, log_format or config.log_format, trace=full_trace)
    problem = _policy_config_problem(config) or _tls_problems(config, err)
    if problem is not None:
        print(f"gamesdk-server: bad configuration {config.source}: {problem}", file=err)
        return EXIT_USAGE
    previous_policy = asyncio.get_event_loop_policy()
    if not _choose_event_loop(config.event_loop, err):
        return EXIT_USAGE
    try:
        with serving_gc():
            asyncio.run(serve_forever(config, hooks_factory=_hooks_factory(config) if policy else None,
                                      policy=policy, log_level_fixed=level is not None))
    except OSError as exc:
        print(f"gamesdk-server: cannot listen on {config.listen}: {exc}", file=err)
        return EXIT_LISTEN
    except KeyboardInterrupt:
        pass
    finally:
        asyncio.set_event_loop_policy(previous_policy)  # main() may run inside a test process
    return EXIT_OK


def _ctl(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from server.control import ControlError, ControlUnreachable, call

    if args.socket:
        path = Path(args.socket)
    elif args.config:
        try:
            path = load_config(args.config).control_path
        except ConfigError as exc:
            print(f"gamesdk-server: bad configuration {args.config}: {exc}", file=err)
            return EXIT_USAGE
    else:
        print("gamesdk-server: ctl needs --config FILE or --socket PATH", file=err)
        return EXIT_USAGE
    try:
        result = call(path, args.ctl_command, list(args.ctl_args))
    except ControlError as exc:
        print(f"gamesdk-server: {exc}", file=err)
        return EXIT_UNREACHABLE if isinstance(exc, ControlUnreachable) else EXIT_FAILED
    if args.json or not isinstance(result, str):
        print(json.dumps(result, indent=None if args.json else 2, sort_keys=not args.json), file=out)
    else:
        print(result, file=out)
    return EXIT_OK


def _choose_event_loop(name: str, err: TextIO) -> bool:
    """Install uvloop when asked for (or available with "auto"); False if "uvloop" was asked and is missing."""
    if name == "asyncio":
        return True
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        if name == "uvloop":
            print("gamesdk-server: runtime.event_loop = \"uvloop\" but uvloop is not installed "
                  "(pip install uvloop)", file=err)
            return False
        return True
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    log.debug("using uvloop")
    return True


def _hooks_factory(config: ServerConfig) -> Callable[[RegionalServer], PolicyHooks]:
    """The policy hooks for ``run``: embedded policy server, or the one at ``[policy] url``."""
    from server.policy.runner import make_policy_hooks

    return lambda node: make_policy_hooks(config, node)


def _user(args: argparse.Namespace, config: ServerConfig, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    if args.user_command is None:
        print("gamesdk-server: user needs an action: add, import, remove or list", file=err)
        return EXIT_USAGE
    store = AccountStore(config.database, config.auth.realm, config.auth.digest_algorithms)
    try:
        if args.user_command == "add":
            password = args.password
            if password is None:
                password = _read_password(stdin)
            if not password:
                print("gamesdk-server: the password must not be empty", file=err)
                return EXIT_USAGE
            account = store.add(args.name, password, now=time.time(), admin=args.admin)
            print(f"added {'operator ' if account.admin else ''}{account.name}@{config.domain} (realm "
                  f"{account.realm}, HA1 for {', '.join(account.algorithms)})", file=out)
        elif args.user_command == "import":
            return _import_users(args.csv, stdin, store, out, err, config.domain)
        elif args.user_command == "remove":
            store.remove(args.name)
            print(f"removed {args.name}@{config.domain}", file=out)
        else:
            accounts = store.list()
            for account in accounts:
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(account.created_at))
                flags = ",".join(f for f, on in (("admin", account.admin), ("locked", account.locked)) if on)
                print(f"{account.name}\t{account.name}@{config.domain}\t{created}Z\t{','.join(account.algorithms)}"
                      + (f"\t{flags}" if flags else ""), file=out)
            if not accounts:
                print("(no accounts)", file=err)
        return EXIT_OK
    finally:
        store.close()


def _import_users(path: str, stdin: TextIO, store: AccountStore, out: TextIO, err: TextIO, domain: str) -> int:
    import csv

    try:
        handle = stdin if path == "-" else open(path, newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"gamesdk-server: cannot read {path}: {exc.strerror or exc}", file=err)
        return EXIT_FAILED
    users: list[tuple[str, str]] = []
    try:
        for number, row in enumerate(csv.reader(handle), 1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if number == 1 and [c.strip().lower() for c in row[:2]] == ["name", "password"]:
                continue  # header
            if len(row) != 2:
                print(f"gamesdk-server: {path} line {number}: expected 2 columns (name,password), got {len(row)}"
                      " (nothing was imported)", file=err)
                return EXIT_USAGE
            users.append((row[0].strip(), row[1]))
    except (UnicodeDecodeError, csv.Error) as exc:
        print(f"gamesdk-server: {path}: {exc} (nothing was imported)", file=err)
        return EXIT_USAGE
    finally:
        if handle is not stdin:
            handle.close()
    count = store.add_many(users, now=time.time())
    print(f"imported {count} account(s) into {domain}", file=out)
    return EXIT_OK


def _db(args: argparse.Namespace, config: ServerConfig, out: TextIO, err: TextIO) -> int:
    from server.db import backup, latest_version, open_region_db, schema_version

    if args.db_command is None:
        print("gamesdk-server: db needs an action: backup or version", file=err)
        return EXIT_USAGE
    if not config.database.exists():
        print(f"gamesdk-server: no database yet at {config.database}", file=err)
        return EXIT_FAILED
    conn = open_region_db(config.database)
    try:
        if args.db_command == "version":
            print(f"{config.database}: schema version {schema_version(conn)} (this server knows up to "
                  f"{latest_version()})", file=out)
            return EXIT_OK
        target = Path(args.target)
        if target.exists():
            print(f"gamesdk-server: {target} exists: choose a new file name", file=err)
            return EXIT_FAILED
        pages = backup(conn, target)
        print(f"backed up {config.database} to {target} ({pages} pages, mode 0600)", file=out)
        return EXIT_OK
    finally:
        conn.close()


def _read_password(stdin: TextIO) -> str:
    if stdin.isatty():
        return getpass.getpass("password: ")
    return stdin.readline().rstrip("\r\n")


def _policy_command(args: argparse.Namespace, config: ServerConfig, out: TextIO, err: TextIO) -> int:
    try:
        from server.policy import cli_support
        from server.policy.config import PolicyConfig
        from server.policy.runner import policy_document
    except ImportError as exc:  # pragma: no cover - the policy package is part of the server
        print(f"gamesdk-server: policy support is missing: {exc}", file=err)
        return EXIT_FAILED
    if not config.database.exists() and args.command != "policy":
        print(f"gamesdk-server: no database yet at {config.database} (run the server or add a user first)",
              file=err)
        return EXIT_FAILED
    if args.command == "billing":
        if args.billing_command is None:
            print("gamesdk-server: billing needs an action: list or export", file=err)
            return EXIT_USAGE
        if args.billing_command == "list":
            rows = cli_support.billing_rows(config.database, limit=args.limit, open_only=args.open)
            print(cli_support.billing_list_json(rows) if args.json else cli_support.billing_list_text(rows),
                  file=out)
            return EXIT_OK
        rows = cli_support.billing_rows(config.database)
        target = out if args.csv == "-" else args.csv
        count = cli_support.billing_export_csv(rows, target)
        if args.csv != "-":
            print(f"wrote {count} record(s) to {args.csv}", file=out)
        return EXIT_OK
    try:
        policy_config = PolicyConfig.from_mapping(policy_document(config))
    except ConfigError as exc:
        print(f"gamesdk-server: bad configuration {config.source}: {exc}", file=err)
        return EXIT_USAGE
    if args.command == "sessions":
        report = cli_support.sessions_report(config.database, policy_config)
        print(cli_support.sessions_json(report) if args.json else cli_support.sessions_text(report), file=out)
        return EXIT_OK
    try:
        from server.policy import http as policy_http
    except ImportError:
        print("gamesdk-server: the HTTP policy server is not available in this build", file=err)
        return EXIT_FAILED
    from server.logs import setup_logging

    setup_logging(args.log_level or config.log_level, args.log_format or config.log_format)
    return int(policy_http.main(config, policy_config))
