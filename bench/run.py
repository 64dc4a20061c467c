#!/usr/bin/env python3
"""Run the benchmark scripts of this directory and print what they print.

    python bench/run.py                  # every bench/bench_*.py, in name order
    python bench/run.py sip              # bench_sip.py only ("sip", "bench_sip" and "bench_sip.py" all work)
    python bench/run.py sip server -- --repeats 1   # arguments after "--" go to every script
    python bench/run.py --list

Each script runs in its own Python process (the interpreter running this file), from the repository root,
with the repository on PYTHONPATH. The exit status is non-zero when a script fails or a name matches nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def discover() -> dict[str, Path]:
    """Benchmark scripts by short name: ``bench_sip.py`` is ``sip``."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def select(names: list[str], scripts: dict[str, Path]) -> list[Path]:
    if not names:
        return list(scripts.values())
    chosen: list[Path] = []
    unknown: list[str] = []
    for name in names:
        key = Path(name).name.removesuffix(".py").removeprefix("bench_")
        if key in scripts:
            if scripts[key] not in chosen:
                chosen.append(scripts[key])
        else:
            unknown.append(name)
    if unknown:
        known = ", ".join(scripts) or "none"
        raise SystemExit(f"bench/run.py: no benchmark named {', '.join(unknown)} (known: {known})")
    return chosen


def run(script: Path, extra: list[str]) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    print(f"=== {script.name} {' '.join(extra)}".rstrip(), flush=True)
    start = time.monotonic()
    code = subprocess.call([sys.executable, str(script), *extra], cwd=REPO, env=env)
    print(f"=== {script.name}: exit {code} after {time.monotonic() - start:.1f} s", flush=True)
    print(flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description="Run the benchmarks in bench/ and print their output.")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    scripts = discover()
    if args.list:
        for name, path in scripts.items():
            print(f"{name:<16}{path.relative_to(REPO)}")
        return 0
    failed = [s.name for s in select(args.names, scripts) if run(s, extra) != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
