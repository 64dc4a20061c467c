"""Leak test: hundreds of random sessions on a fake clock, through PUBLISH, timers and a restart.

Sessions end normally (terminated PUBLISH, either side's BYE), by QoS failure (a 580 BYE, or a FINAL denied
because the network is full), by silence (the player crashes: no refresh, lease expiry), by never confirming,
and by registration expiry; half-way the server "crashes" and a new process restores from the same SQLite file.
Afterwards every access network is back to full capacity and every record has exactly one STOP, after its
START if it has one.
"""

from __future__ import annotations

import heapq
import itertools
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.billing import SqliteBillingStore
from server.dialog_info import (
    CONTENT_TYPE,
    DialogEntry,
    DialogInfo,
    DialogState,
    Direction,
    format_dialog_info,
)
from server.policy import (
    AppSession,
    Grant,
    MediaComponent,
    PolicyConfig,
    PolicyServer,
    Side,
    SqliteReservationStore,
    open_region_db,
    operations_for_publish,
)
from server.publish import DialogPublications, PublishRequest

SESSIONS = 300
RESTART_AT = 3000.0


class Region:
    """One regional server process: policy + PUBLISH state over a database file."""

    def __init__(self, db: Path, config: PolicyConfig, tokens: Callable[[], str], now: float) -> None:
        conn = open_region_db(db)
        self.billing = SqliteBillingStore(conn, config.tariff)
        self.policy = PolicyServer(config, token_factory=tokens, region="eu",
                                   store=SqliteReservationStore(conn), billing=self.billing)
        self.policy.restore(now)
        etags = itertools.count(1)
        self.esc = DialogPublications(etag_factory=lambda: f"e{next(etags)}-{now}")
        self.conn = conn

    def run_timers(self, until: float) -> None:
        while (when := self.policy.get_timer()) is not None and when <= until:
            self.policy.handle_timer(when)
        while (when := self.esc.get_timer()) is not None and when <= until:
            self.esc.handle_timer(when)

    def publish(self, aor: str, now: float, *, expires: int = 90, if_match: str | None = None,
                body: bytes = b"") -> Any:
        result = self.esc.handle(PublishRequest(aor=aor, event="dialog", expires=expires, if_match=if_match,
                                                content_type=CONTENT_TYPE, body=body), now)
        for op in operations_for_publish(result, aor):
            self.policy.apply(op, now)
        return result


def dialog_body(aor: str, n: int, side: Side, state: DialogState, version: int, event: str | None = None,
                code: int | None = None) -> bytes:
    local, remote = (f"f{n}", f"t{n}") if side is Side.ORIG else (f"t{n}", f"f{n}")
    return format_dialog_info(DialogInfo(entity=aor, version=version, dialogs=(DialogEntry(
        id=f"d{n}", state=state, call_id=f"c{n}", local_tag=local, remote_tag=remote,
        direction=Direction.INITIATOR if side is Side.ORIG else Direction.RECIPIENT, event=event, code=code),)))


def test_no_reservation_leaks(tmp_path: Path, config: PolicyConfig, tokens: Callable[[], str]) -> None:
    rng = random.Random(20261128)
    db = tmp_path / "region.sqlite"
    region = Region(db, config, tokens, 0.0)
    restarted = False
    agenda: list[tuple[float, int, str, int]] = []
    seq = itertools.count()
    plans: dict[int, dict[str, Any]] = {}

    for n in range(SESSIONS):
        t0 = rng.uniform(0, 6000)
        side = rng.choice([Side.ORIG, Side.TERM])
        ip = rng.choice(["10.1.0.5", "10.2.0.5", "10.2.5.5"])
        plan: dict[str, Any] = {
            "aor": f"sip:p{n}@eu.example", "side": side, "ip": ip, "etag": None, "version": 0,
            "ending": rng.choice(["bye-local", "bye-remote", "qos-580", "silence", "no-confirm", "reg-expired",
                                  "remove"]),
            "refreshes": rng.randint(0, 4),
            "request": AppSession(
                call_id=f"c{n}", from_tag=f"f{n}", to_tag=f"t{n}", side=side, player=f"sip:p{n}@eu.example",
                peer="sip:x@na.example", player_ip=ip,
                components=(MediaComponent(uplink_kbps=rng.choice([50, 100, 200, 400]),
                                           downlink_kbps=rng.choice([50, 100, 300, 800]), max_latency_ms=100,
                                           qos_class=rng.choice(["casual", "action", None])),),
            ),
        }
        plans[n] = plan
        heapq.heappush(agenda, (t0, next(seq), "final", n))

    while agenda:
        now, _, action, n = heapq.heappop(agenda)
        if not restarted and now >= RESTART_AT:
            # Crash: the in-memory state (policy caches, PUBLISH etags) is lost; the database file stays.
            region.conn.close()
            region = Region(db, config, tokens, now)
            restarted = True
        region.run_timers(now)
        plan = plans[n]
        aor, side = plan["aor"], plan["side"]
        if action == "final":
            decision = region.policy.final(plan["request"], now)
            # A 2xx retransmission gets the same answer.
            assert region.policy.final(plan["request"], now + 0.5) == decision
            if isinstance(decision, Grant) and plan["ending"] != "no-confirm":
                heapq.heappush(agenda, (now + rng.uniform(0.1, 3), next(seq), "confirm", n))
        elif action == "confirm":
            body = dialog_body(aor, n, side, DialogState.CONFIRMED, plan["version"])
            plan["etag"] = region.publish(aor, now, body=body).etag
            nxt = "refresh" if plan["refreshes"] else "end"
            heapq.heappush(agenda, (now + rng.uniform(5, 45), next(seq), nxt, n))
        elif action == "refresh":
            plan["refreshes"] -= 1
            result = region.publish(aor, now, if_match=plan["etag"])
            if result.status == 412:  # state lost in the restart: the SDK publishes its full state again
                plan["version"] += 1
                body = dialog_body(aor, n, side, DialogState.CONFIRMED, plan["version"])
                result = region.publish(aor, now, body=body)
            assert result.status == 200
            plan["etag"] = result.etag
            nxt = "refresh" if plan["refreshes"] else "end"
            heapq.heappush(agenda, (now + rng.uniform(30, 45), next(seq), nxt, n))
        elif action == "end":
            ending = plan["ending"]
            plan["version"] += 1
            if ending in ("bye-local", "bye-remote", "qos-580"):
                event = "remote-bye" if ending == "bye-remote" else "local-bye"
                body = dialog_body(aor, n, side, DialogState.TERMINATED, plan["version"], event=event,
                                   code=580 if ending == "qos-580" else None)
                result = region.publish(aor, now, if_match=plan["etag"], body=body)
                if result.status == 412:
                    result = region.publish(aor, now, body=body)
                assert result.status == 200
            elif ending == "remove":
                region.publish(aor, now, if_match=plan["etag"], expires=0)
            elif ending == "reg-expired":
                region.policy.release_player(aor, now)
            # "silence": the player vanished; the lease must run out on its own.

    region.run_timers(1e9)
    assert region.policy.is_idle()
    assert region.policy.reservations() == []
    for cap in region.policy.capacity():
        assert (cap.sessions, cap.uplink_free_kbps, cap.downlink_free_kbps) == (0, cap.uplink_kbps,
                                                                                  cap.downlink_kbps)
    assert restarted

    # A fresh process sees nothing left either.
    region.conn.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM policy_reservations").fetchone() == (0,)
    per_record = conn.execute(
        "SELECT r.id,"
        " SUM(e.kind = 'START'), SUM(e.kind = 'STOP'),"
        " MAX(CASE WHEN e.kind = 'START' THEN e.time END), MAX(CASE WHEN e.kind = 'STOP' THEN e.time END)"
        " FROM billing_records r JOIN billing_events e ON e.record_id = r.id GROUP BY r.id"
    ).fetchall()
    assert len(per_record) == SESSIONS
    for _record_id, starts, stops, t_start, t_stop in per_record:
        assert stops == 1
        assert starts in (0, 1)
        if starts:
            assert t_stop >= t_start
    reasons = {row[0] for row in conn.execute("SELECT end_reason FROM billing_events WHERE kind = 'STOP'")}
    # The random mix really exercised every way a session ends.
    assert reasons >= {"bye-local", "bye-remote", "qos-failed", "not-established", "lease-expired",
                       "reg-expired"}
    conn.close()
