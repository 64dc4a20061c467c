#!/usr/bin/env python3
"""SDP and negotiation cost per operation on one core: what a server pays for every INVITE and 2xx body.

Operations, all on the example offer of docs/protocol.md (about 450 bytes):

  split-baseline   decode + split into lines + partition each at "=" (the floor any line parser pays)
  parse            parse_sdp_untrusted(bytes)
  format           format_sdp_bytes(desc)
  parse+format     one exact round trip
  read-game        read_game_untrusted(bytes, Role.OFFER): parse + validate the gsdk extension (the parsed
                   format and QoS texts are cached, as for a server seeing the same game in every INVITE)
  read-game-cold   the same with those caches cleared before each read (every INVITE a new text)
  canonical        canonical_gsdk_lines(desc) (the channel's transcript input)
  answer_offer     the offer/answer rules on typed terms
  callee-path      read the offer, answer_offer, game_to_sdp, format the answer body
  check_answer     the caller's acceptability check
  demand           the policy server's input for one side

Each operation runs in batches until ``--seconds`` have passed (default 0.4 s each; the whole run is a few
seconds); rates are per CPU second of this process. Ratios are against split-baseline measured in the same run.

    python bench/bench_sdp.py
    python bench/bench_sdp.py --seconds 1 --profile parse
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gamesdk.qos import Acceptable, Side, answer_offer, check_answer, demand
from gamesdk.qos.negotiation import Accepted
from gamesdk.sdp import (
    GameMedia,
    Role,
    canonical_gsdk_lines,
    format_sdp_bytes,
    game_to_sdp,
    parse_sdp_untrusted,
    read_game_untrusted,
)
from gamesdk.sdp import game as game_module
from gamesdk.sdp.examples import BOB_KEY, BOB_MODIFIED, example_offer

BATCH = 200


def measure(fn: Callable[[], object], seconds: float) -> float:
    """Operations per CPU second of ``fn``, in batches until ``seconds`` of wall time have passed.

    CPU time (``process_time``) rather than wall time, so that other processes on a shared machine count less.
    """
    fn()
    count = 0
    start_wall = time.perf_counter()
    start_cpu = time.process_time()
    deadline = start_wall + seconds
    while True:
        for _ in range(BATCH):
            fn()
        count += BATCH
        if time.perf_counter() >= deadline:
            return count / max(time.process_time() - start_cpu, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.4, help="time per operation (default 0.4)")
    parser.add_argument("--profile", metavar="OP", help="print a cProfile of one operation")
    args = parser.parse_args(argv)

    offer_desc = example_offer()
    body = format_sdp_bytes(offer_desc)
    offer_terms = read_game_untrusted(body, Role.OFFER)[1].terms
    accepted = answer_offer(offer_terms, BOB_MODIFIED)
    assert isinstance(accepted, Accepted)
    answer_terms = accepted.answer

    def split_baseline() -> object:
        return [line.partition("=") for line in body.decode("utf-8").split("\r\n") if line]

    def read_cold() -> object:
        game_module._cached_format.cache_clear()
        game_module._cached_qos.cache_clear()
        return read_game_untrusted(body, Role.OFFER)

    def callee_path() -> object:
        desc, game = read_game_untrusted(body, Role.OFFER)
        result = answer_offer(game.terms, BOB_MODIFIED)
        assert isinstance(result, Accepted)
        mine = GameMedia(
            terms=result.answer, address="127.0.0.1", port=40_000, public_key=BOB_KEY, session_id=9
        )
        answer = game_to_sdp(mine, username="bob", sess_id=1, sess_version=1, role=Role.ANSWER, offer=desc)
        return format_sdp_bytes(answer)

    operations: dict[str, Callable[[], object]] = {
        "split-baseline": split_baseline,
        "parse": lambda: parse_sdp_untrusted(body),
        "format": lambda: format_sdp_bytes(offer_desc),
        "parse+format": lambda: format_sdp_bytes(parse_sdp_untrusted(body)),
        "read-game": lambda: read_game_untrusted(body, Role.OFFER),
        "read-game-cold": read_cold,
        "canonical": lambda: canonical_gsdk_lines(offer_desc),
        "answer_offer": lambda: answer_offer(offer_terms, BOB_MODIFIED),
        "callee-path": callee_path,
        "check_answer": lambda: check_answer(offer_terms, answer_terms, Acceptable()),
        "demand": lambda: demand(offer_terms, answer_terms, Side.CALLER),
    }
    if args.profile:
        if args.profile not in operations:
            parser.error(f"--profile must be one of {', '.join(operations)}")
        fn = operations[args.profile]
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(20_000):
            fn()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return 0

    print(f"python {sys.version.split()[0]}, body {len(body)} bytes, {args.seconds:.2f} s per operation")
    print(f"{'operation':<16} {'ops/cpu-s':>10} {'us/op':>8} {'x baseline':>11}")
    baseline = 0.0
    for name, fn in operations.items():
        rate = measure(fn, args.seconds)
        if name == "split-baseline":
            baseline = rate
        print(f"{name:<16} {rate:>10,.0f} {1e6 / rate:>8.1f} {baseline / rate:>10.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
