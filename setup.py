"""The optional compiled build: ``GAMESDK_MYPYC=1 pip install ".[fast]"`` compiles the hot modules below with
mypyc (the code is ``mypy --strict`` already); without the switch the package is pure Python, as by default.

Only modules that measured faster compiled are listed (bench/bench_mypyc.py compiles each candidate alone and
times the registrar's login and the SIP parser's round trip with and without it; docs/benchmarks.md has the
figures; the proxy's path was measured with callgrind on bench/bench_proxy.py's call, ``--marked``).
``GAMESDK_MYPYC_MODULES="a.py b.py"`` compiles another set, for such measurements.

What the set up to the proxy's path gives a call (digest + policy, one server; measured before the policy's
modules joined): 2.75 M instructions per sans-IO call against
3.54 M pure (-22 %, callgrind), and through sockets (bench/bench_server.py --only ours, 3 rounds alternated, load
5-7) eu 1,210 µs of CPU per call against 1,373 µs pure (-12 %), eu -> na eu 1,117 + na 693 µs against 1,283 +
707; the rates moved within the noise at that load (ours1 615 against 609 calls/s, ours2 497 against 571).
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # build_profile.py beside this file
from build_profile import ProfileGuidedBuildExt

#: Compiled by GAMESDK_MYPYC=1 (paths from the repository root): the SIP core, which every message crosses. Together
#: they make parse + typed reads + serialize of a game INVITE 1.3x faster (the parser alone 1.1x: the calls
#: between compiled modules are what gains). The login's modules (digest, the login flow, location service,
#: registrar) pay only on top of the core: alone they were no faster (0.97x), with it a login costs 7 % fewer
#: instructions (callgrind: 927,951 -> 862,468 per login) and 4.5 % less CPU (198.9 -> 189.8 µs,
#: bench/bench_mypyc.py, docs/benchmarks.md).
MYPYC_MODULES = [
    "gamesdk/sip/_grammar.py",
    "gamesdk/sip/headers.py",
    "gamesdk/sip/message.py",
    "gamesdk/sip/parser.py",
    "gamesdk/sip/uri.py",
    "gamesdk/sip/digest.py",
    "server/auth.py",
    "server/location.py",
    "server/registrar.py",
    # The proxy's splicing (the forwarded INVITE, BYE, ACK and every relayed response): the node's own
    # instructions per call (bench_proxy_path flow, parse and digest out, callgrind) 1,332k -> 1,294k (-2.8 %).
    "server/splice.py",
    # The policy's share of a call (the embedded policy: admission, the decision core, its ledger rows, the request
    # it builds from the terms) and the SDP codec that reads a game INVITE's offer and its 2xx's answer. A whole
    # sans-IO call (bench/bench_proxy.py, callgrind, 300 calls after warm-up) on top of the modules above:
    # 3,430,455 -> 3,236,748 instructions (-5.6 %; the policy modules without model.py: 3,325,957).
    # Round 13 added the hooks, the ledger and the quick SDP terms reader (their tests inject instead of patching
    # module functions; the SDK's value classes in game.py stay Python classes, gamesdk._mypyc, so a field of the
    # wrong type is still LocalProtocolError): bench_breakdown.py --whole --calls 50, callgrind per call with
    # gamesdk/qos/model.py compiled too 1,386,694 -> 1,328,607 (-4.2 %). gamesdk/qos/model.py is left out: compiled,
    # its public game_formats() refused an argument of the wrong type with mypyc's TypeError message ("union[str,
    # GameFormat] object expected; got int") instead of the SDK's, which says what to pass (tests/test_api_shape.py).
    "server/policy/hooks.py",
    "server/policy/ledger.py",
    "gamesdk/sdp/game.py",
    "server/policy/admission.py",
    "server/policy/bridge.py",
    "server/policy/codec.py",
    "server/policy/config.py",
    "server/policy/core.py",
    "server/policy/model.py",
    "server/policy/queries.py",
    "server/policy/store.py",
    "gamesdk/sdp/codec.py",
    "gamesdk/sdp/model.py",
    # The proxy's path of a call (the node's dispatch, the stateful proxy, its response half and the SDK's
    # transactions it runs for CANCEL and its own requests): bench/bench_proxy.py's sans-IO call (digest + policy,
    # callgrind, the server's calls only: bench_proxy.py --marked) 3,046,595 -> 2,830,858 instructions on top of
    # the set above (-7.1 %; the node -3.0 %, proxy + proxy_responses + transactions -4.3 %), 3,647,777 pure
    # (-22 % in all); CPU per sans-IO call 810 -> 690 µs (765 pure), through sockets (bench_server.py ours1) eu
    # 1,383 -> 1,210 µs per call (1,373 pure); medians of 3 alternated, load 5-7 (docs/benchmarks.md).
    # Not compiled: gamesdk/sip/timers.py (its TimerConfig loses the docstring the public API test reads),
    # ids, federation, prefixes, ratelimit (together -0.5 %, within the noise).
    "server/node.py",
    "server/proxy.py",
    # What the proxy tells the policy of a call (server.hooks.CallInfo, a module of its own: the rest of
    # server/hooks.py stays interpreted): made once and read some 50 times a call, natively.
    "server/call_info.py",
    "server/proxy_responses.py",
    # The server's random bytes and the policy's tokens (four a call's 2xx draws: each was a call into the
    # interpreter); its pools tell a forked child by a generation number, native classes taking no weak references.
    "server/random_pool.py",
    # The UDP driver's per-datagram lines (read the wake-up's datagrams, feed the node, send): see the module.
    "server/datagram_pump.py",
    # What a login calls besides the registrar (issue 16, round 18): the unverified sources' rate limit (the 401),
    # the peers' table (is the 401's source a peer), the accounts' HA1 and the presence agent (the 200's
    # watchers), each a call into the interpreter from compiled code while interpreted.
    "server/ratelimit.py",
    "server/federation.py",
    "server/accounts.py",
    "server/presence.py",
    "gamesdk/sip/transaction.py",
    "gamesdk/sip/transaction_client.py",
    # (The SDK's server transactions subclass Transaction and its table drives them: an interpreted class cannot
    # inherit from a compiled one, so they come along.)
    "gamesdk/sip/transaction_server.py",
    "gamesdk/sip/transaction_table.py",
]


def compiled_build() -> bool:
    return os.environ.get("GAMESDK_MYPYC", "").strip().lower() in ("1", "true", "yes", "on")


def ext_modules() -> list[object]:
    if not compiled_build():
        return []
    try:
        from mypyc.build import mypycify  # only the compiled build needs mypy (build_backend.py adds it)
    except ImportError:
        if "egg_info" in sys.argv:
            return []  # pip asking what the build needs, before it installed mypy: nothing to compile yet
        raise SystemExit("GAMESDK_MYPYC=1 needs mypy in the build environment (pip install mypy)") from None

    chosen = os.environ.get("GAMESDK_MYPYC_MODULES", "").split() or MYPYC_MODULES
    return list(mypycify(chosen, opt_level="3", debug_level="0"))


setup(ext_modules=ext_modules(), cmdclass={"build_ext": ProfileGuidedBuildExt})
