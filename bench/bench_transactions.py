#!/usr/bin/env python3
"""The SDK's transaction layer alone: transactions per second through one ``TransactionTable``, for comparing trees.

- server: a request matching no transaction, a new ``ServerInviteTransaction`` with 100 Trying, a 200, the
  datagrams and events drained (what a UAS does per INVITE);
- client: a new ``ClientInviteTransaction`` (sent), its 180 and 200 matched, drained;
- expiry: the timers of every transaction of both runs fired in turn (Timers L and M end them).

The messages are parsed and their responses built before the clock starts, so the figures are the layer's own
(keys, tables, timers, heap, events) plus serialising the responses the server side sends.

    python bench/bench_transactions.py --count 20000 --repeats 3
    PYTHONPATH=/path/to/other/tree python /path/to/other/tree/bench/bench_transactions.py ...   # the other tree
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.transaction_client import ClientInviteTransaction
from gamesdk.sip.transaction_server import ServerInviteTransaction
from gamesdk.sip.transaction_table import TransactionTable

SOURCE = ("127.0.0.1", 5070)
DEST = ("127.0.0.1", 5080)


def _invite(n: int) -> Request:
    text = (
        f"INVITE sip:bob@127.0.0.1:5080 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-b{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@eu.example>;tag=a{n}\r\n"
        "To: <sip:bob@na.example>\r\n"
        f"Call-ID: call-{n}@bench\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message_untrusted(text.encode())
    assert isinstance(msg, Request)
    return msg


def run(count: int) -> tuple[float, float, float]:
    """Per-second rates: server transactions, client transactions, transactions expired."""
    invites = [_invite(n) for n in range(count)]
    oks = [response_for(invite, 200, to_tag=f"t{n}") for n, invite in enumerate(invites)]
    ringing: list[Response] = [response_for(invite, 180, to_tag=f"t{n}") for n, invite in enumerate(invites)]
    servers, clients = TransactionTable(), TransactionTable()
    now = 0.0
    start = time.process_time()
    for invite, ok in zip(invites, oks):
        if servers.receive_request(invite, now) is None:
            tx = servers.add(ServerInviteTransaction(invite, now, source=SOURCE, send_trying=True))
            tx.send_response(ok, now)
        servers.datagrams_to_send()
        for _ in servers.events():
            pass
    server_s = time.process_time() - start
    start = time.process_time()
    for invite, ring, ok in zip(invites, ringing, oks):
        clients.add(ClientInviteTransaction(invite, now, destination=DEST))
        clients.receive_response(ring, now)
        clients.receive_response(ok, now)
        clients.datagrams_to_send()
        for _ in clients.events():
            pass
    client_s = time.process_time() - start
    start = time.process_time()
    for table in (servers, clients):
        table.handle_timer(100.0)
        for _ in table.events():
            pass
    expire_s = time.process_time() - start
    assert len(servers) == 0 and len(clients) == 0
    return count / server_s, count / client_s, 2 * count / expire_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000, help="transactions of each kind per repeat (default 20000)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.count < 1 or args.repeats < 1:
        ap.error("--count and --repeats must be at least 1")
    rows = [run(args.count) for _ in range(args.repeats)]
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    for i, name in enumerate(("server INVITE (miss, create, 100, 200, drain)", "client INVITE (create, 180, 200, drain)",
                              "expired by their timers")):
        best = max(row[i] for row in rows)
        print(f"{name}: best {best:,.0f}/s ({1e6 / best:.1f} µs), median {statistics.median(r[i] for r in rows):,.0f}/s")
    print(f"({args.repeats} x {args.count}; tree {REPO}; load average {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
