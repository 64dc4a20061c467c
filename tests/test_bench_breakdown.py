"""bench/bench_breakdown.py's pieces that decide its figures: the message kinds, callgrind's dump read back, and the
part definitions it shares with bench/bench_server.py naming functions that exist (a renamed function would
silently leave its part at zero)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bd() -> ModuleType:
    return _load("bench_breakdown")


def test_kinds_of_the_call_and_the_login(bd: ModuleType) -> None:
    bp = _load("bench_proxy")
    br = _load("bench_registrar")
    auth = 'Proxy-Authorization: Digest username="alice",realm="r",nonce="n",uri="sip:x",response="0"'
    invite = bp._invite(7, 1, None)
    relayed = bp._invite(7, 2, auth)
    assert bd.kind_of(invite) == "INVITE -> 407"
    assert bd.kind_of(relayed) == "INVITE with digest -> 100 + relay"
    assert bd.kind_of(bp._in_dialog("ACK", 7, "1", "1", "<sip:bob@x>;tag=a", "sip:bob@x")) == "ACK of the 407"
    assert bd.kind_of(bp._in_dialog("ACK", 7, "2", "ack", "<sip:bob@x>;tag=a", "sip:bob@x")) == \
        "ACK of the 2xx (relayed)"
    bye = bp._in_dialog("BYE", 7, "3", "bye", "<sip:bob@x>;tag=a", "sip:bob@x")
    assert bd.kind_of(bye) == "BYE (relayed)"
    assert bd.kind_of(bp._answer(relayed, 100, None)) == "100 (relayed)"
    assert bd.kind_of(bp._answer(relayed, 180, "t")) == "180 (relayed)"
    assert bd.kind_of(bp._answer(relayed, 200, "t", bp.ANSWER)) == "200 of the INVITE, SDP answer"
    assert bd.kind_of(bp._answer(bye, 200, None)) == "200 of the BYE (relayed)"
    assert bd.kind_of(br._register("p", 1, 1)) == "REGISTER -> 401"
    assert bd.kind_of(br._register("p", 1, 2, 'Authorization: Digest username="p"')) == "REGISTER with digest -> 200"
    # A header named in the body does not count: only the head is looked at.
    assert bd.kind_of(bp._lines("INVITE sip:x SIP/2.0", "CSeq: 1 INVITE",
                                body=b"\r\nProxy-Authorization: x")) == "INVITE -> 407"


def test_callgrind_dump_read_back(bd: ModuleType, tmp_path: Path) -> None:
    # Name compression as callgrind writes it: a name once, then its number; a marker called from two places.
    dump = tmp_path / "cg.1.2"
    dump.write_text("""version: 1
creator: callgrind-3.19.0
events: Ir

fl=(1) x.c
fn=(1) main_loop
10 5
cfl=(1)
cfn=(2) _operator_call
calls=3 20
12 3000
cfn=(3) builtin_eval
calls=1 30
13 700
fn=(4) other
20 8
cfn=(2)
calls=2 20
21 1000
fn=(2)
20 40
totals: 4753
""")
    total, funcs = bd.read_dump(dump)
    assert total == 4753
    assert funcs["_operator_call"] == (5, 4000)
    assert funcs["builtin_eval"] == (1, 700)
    assert "main_loop" not in funcs  # never called here: no inclusive figure


def test_every_part_names_functions_of_this_tree(bd: ModuleType) -> None:
    bs = _load("bench_server")
    bd.import_server_modules()
    missing = []
    for part, funcs in bs.BREAKDOWN:
        found = [f for f in funcs if bd.find_function(f)]
        if not found:
            missing.append(part)
    assert missing == []
    # and a name that is not there is reported as such (the check above can fail)
    assert bd.find_function("ProxyCore.no_such_method") == []
    assert bd.find_function("no_such_function_anywhere") == []


def test_nested_parts_are_subtracted_in_the_profile_table(tmp_path: Path) -> None:
    """bench_server's cProfile table: route's inclusive time holds the digest and the serialization made inside
    it; each is reported once (a stats file written by hand: no timing)."""
    import marshal

    bs = _load("bench_server")
    src = tmp_path / "stand_in.py"
    src.write_text("class LoginFlow: ...\nclass ProxyCore: ...\nclass Message: ...\n")
    f = str(src)
    # (file, line, function): (primitive calls, calls, own time, inclusive time, callers)
    stats = {
        (f, 1, "authenticate"): (1, 1, 0.020, 0.020, {}),
        (f, 2, "handle_request"): (1, 1, 0.030, 0.055, {}),
        (f, 3, "to_bytes"): (1, 1, 0.005, 0.005, {}),
        ("x.py", 1, "parse_message_untrusted"): (1, 1, 0.010, 0.010, {}),
    }
    path = tmp_path / "p.pstats"
    path.write_bytes(marshal.dumps(stats))
    table = bs.breakdown(path, 1)
    us = {line.split(" | ")[0].strip("| ").split(" (")[0]: float(line.split(" | ")[2].strip(" |").replace(",", ""))
          for line in table.splitlines()[2:]}
    assert us["route"] == pytest.approx(30_000)
    assert us["digest"] == pytest.approx(20_000)
    assert us["serialize"] == pytest.approx(5_000)
    assert us["parse"] == pytest.approx(10_000)
    assert us["the rest"] == pytest.approx(0, abs=1)
