#!/usr/bin/env python3
"""Which modules pay when compiled with mypyc: each candidate compiled alone, then all that paid, against pure
Python, in one run.

For every variant (pure, each candidate module alone, the set in setup.py) the repository is copied to a temp
directory and the variant's modules are compiled there in place (``GAMESDK_MYPYC=1 GAMESDK_MYPYC_MODULES=...
python setup.py build_ext --inplace``: the ``.so`` sits beside the ``.py`` and wins the import). Then each
variant runs the same workloads in its own process, rounds interleaved across variants, the best round counting:

  login      the registrar's path without sockets (bench/bench_registrar.py): REGISTER -> 401, REGISTER with
             digest -> 200, CPU per login
  sip        parse + typed reads + serialize of distinct game INVITEs (bench/bench_sip.py's message), CPU per
             message

A module pays when compiling it alone makes a workload it runs in measurably faster (setup.py lists those).
Needs mypy and setuptools >= 77 in this interpreter (``pip install -e ".[dev]"``) and a C compiler.

    python bench/bench_mypyc.py                                   # every candidate, ~10 min on 2 cores
    python bench/bench_mypyc.py --only gamesdk/sip/parser.py --rounds 3
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Modules measured: the SIP core and the registrar's path (what a login and a relayed request run through).
CANDIDATES = [
    "gamesdk/sip/_grammar.py",
    "gamesdk/sip/digest.py",
    "gamesdk/sip/headers.py",
    "gamesdk/sip/message.py",
    "gamesdk/sip/parser.py",
    "gamesdk/sip/uri.py",
    "server/auth.py",
    "server/location.py",
    "server/registrar.py",
]

WORKLOAD = r"""
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "bench")
import bench_registrar as reg
import bench_sip
from gamesdk.sip.parser import parse_message_untrusted

logins, messages = int(sys.argv[1]), int(sys.argv[2])
out = {}
with tempfile.TemporaryDirectory() as tmp:
    node, accounts, store, realm = reg.setup(Path(tmp), 1000)
    reg.run(node, store, realm, logins=1000, users=1000, persist_every=1000)
    spent, ok = reg.run(node, store, realm, logins=logins, users=1000, persist_every=1000)
    out["login"] = 1e6 * spent / max(ok, 1)
pool = [bench_sip.typical_invite(i) for i in range(2000)]
t0 = time.process_time()
for i in range(messages):
    m = parse_message_untrusted(pool[i % 2000])
    _ = (m.top_via.branch, m.cseq, m.from_.tag, m.to.tag, m.call_id)
    m.to_bytes()
out["sip"] = 1e6 * (time.process_time() - t0) / messages
import gamesdk.sip.parser as p
out["compiled_parser"] = not p.__file__.endswith(".py")
print(json.dumps(out))
"""


def setup_modules() -> list[str]:
    """MYPYC_MODULES of setup.py (read, not imported: setup.py runs setup() when imported)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "MYPYC_MODULES" for t in targets) and node.value:
                return list(ast.literal_eval(node.value))
    raise SystemExit("setup.py has no MYPYC_MODULES")


def copy_tree(dest: Path) -> None:
    """The repository's files (tracked and untracked, not ignored) into ``dest``."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        src = REPO / os.fsdecode(raw)
        if src.is_file():
            target = dest / os.fsdecode(raw)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def build(dest: Path, modules: list[str], log: Path) -> float:
    """Compile ``modules`` in place under ``dest``; returns the seconds it took."""
    t0 = time.monotonic()
    if modules:
        env = dict(os.environ, GAMESDK_MYPYC="1", GAMESDK_MYPYC_MODULES=" ".join(modules))
        with log.open("wb") as f:
            done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=dest, env=env,
                                  stdout=f, stderr=subprocess.STDOUT, timeout=1800, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"mypyc build of {modules} failed: see {log}")
    return time.monotonic() - t0


def measure(dest: Path, logins: int, messages: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", WORKLOAD, str(logins), str(messages)], cwd=dest,
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"workload failed in {dest}:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", help="measure only these candidates (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=A.py,B.py",
                    help="also measure these modules compiled together (repeatable)")
    ap.add_argument("--no-setup-set", action="store_true", help="skip the set setup.py lists")
    ap.add_argument("--rounds", type=int, default=3, help="workload rounds per variant (best counts)")
    ap.add_argument("--logins", type=int, default=4000)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--keep", action="store_true", help="keep the built trees")
    args = ap.parse_args(argv)
    chosen = setup_modules()
    variants: list[tuple[str, list[str]]] = [("pure", [])]
    variants += [(m, [m]) for m in (args.only if args.only is not None else CANDIDATES if not args.set else [])]
    for spec in args.set:
        name, _, modules = spec.partition("=")
        variants.append((name, [m for m in modules.split(",") if m]))
    if not args.no_setup_set:
        variants.append(("setup.py set", chosen))
    root = Path(tempfile.mkdtemp(prefix="bench-mypyc-"))
    print(f"# bench_mypyc {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}; work dir {root}", flush=True)
    trees: dict[str, Path] = {}
    for i, (name, modules) in enumerate(variants):
        dest = root / f"v{i}"
        copy_tree(dest)
        try:
            seconds = build(dest, modules, root / f"v{i}.build.log")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"! {name}: {exc}", flush=True)
            continue
        trees[name] = dest
        print(f"  built {name} in {seconds:.0f} s", flush=True)
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for name, dest in trees.items():
            got = measure(dest, args.logins, args.messages)
            mine = best.setdefault(name, {"login": float("inf"), "sip": float("inf")})
            for key in ("login", "sip"):
                mine[key] = min(mine[key], got[key])
    pure = best["pure"]
    print("\n| compiled | login (µs CPU) | vs pure | SIP message (µs CPU) | vs pure |")
    print("|---|---|---|---|---|")
    for name, row in best.items():
        print(f"| {name} | {row['login']:.1f} | {pure['login'] / row['login']:.2f}x | {row['sip']:.1f} | "
              f"{pure['sip'] / row['sip']:.2f}x |")
    print(f"\nsetup.py compiles: {', '.join(chosen)}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
