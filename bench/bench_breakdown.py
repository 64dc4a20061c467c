#!/usr/bin/env python3
"""Where a call's CPU goes: bench_proxy.py's call and bench_registrar.py's login, per message kind and per part.

The parts are bench_server.py's (``BREAKDOWN``: parse, digest, policy, route, serialize, registrar), found and
wrapped by name in the tree under test; "other" is what runs outside every part (the node's dispatch, timers).
I/O has no share here (no sockets): it is bench_server.py's CPU per call minus this bench's.

Modes:

- ``callgrind`` (default): instructions counted by valgrind's callgrind, blind to the machine's load. Only the
  measured calls are counted (not start-up, imports or the warm-up): each message is handed to the server through
  a marker C function of its kind (``--toggle-collect``), and a part's phase turns counting on when the part is
  entered and off again inside any other part it calls, so each part's figure is its own (exclusive) count. One
  valgrind run per bench, one phase per part (a dump each), the same calls in every phase.
  ``--whole`` counts each message kind whole and no parts, in one phase, replacing nothing of the server: the
  way to count a compiled build (``GAMESDK_MYPYC=1``), whose functions cannot be wrapped.
- ``time``: process CPU time per message kind (no valgrind; moves with the load).
- ``profile``: cProfile of the same loop, printed as bench_server.py's part table (shares only: the profiler
  inflates small functions).

    python bench/bench_breakdown.py                         # both benches, callgrind, this tree
    python bench/bench_breakdown.py --tree /tmp/before      # another checkout's gamesdk and server, same datagrams
    python bench/bench_breakdown.py --mode time --calls 1000
    python bench/bench_breakdown.py --json out.json         # also keep the figures
    python bench/bench_breakdown.py --whole --tree /tmp/compiled   # per kind only: a compiled build
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import functools
import gc
import importlib.util
import itertools
import json
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent

# --- marker C functions -------------------------------------------------------------------------------------------
# Each calls a Python callable from a C function of CPython with its own symbol, which callgrind can toggle on.
# Whether the server itself calls one of them is checked: the calls callgrind saw must equal the calls made here
# (iter(callable, sentinel) is out: re's finditer runs through it).

_res: list[Any] = []


def _m_call(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    return operator.call(f, *a)


class _MatMul:
    """``x @ None`` runs its ``__matmul__`` through CPython's slot_nb_matrix_multiply, which neither the server nor
    the standard library's import-time code reaches (nothing of either defines or applies ``@``)."""

    def __init__(self, f: Callable[..., Any], a: tuple[Any, ...]) -> None:
        self.f, self.a = f, a

    def __matmul__(self, _other: Any) -> Any:
        return self.f(*self.a)


def _m_matmul(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    # eval was the marker here: a compiled build's server calls it too (a mismatch of the counts below). Then
    # unary minus (slot_nb_negative): the pure-Python datetime module applies it to its own timedelta twice while
    # gamesdk is imported, and callgrind, counting off, still put those two calls into the first phase's counts.
    return _MatMul(f, a) @ None


def _m_methodcaller(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    return operator.methodcaller("__call__", *a)(f)


def _m_starmap(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    return next(itertools.starmap(f, (a,)))


def _m_reduce(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    return functools.reduce(lambda _x, _y: f(*a), (None,), None)


def _m_takewhile(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    out: list[Any] = []
    next(itertools.takewhile(lambda _: out.append(f(*a)) or True, (None,)))
    return out[0]


def _m_dropwhile(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    out: list[Any] = []
    next(itertools.dropwhile(lambda _: out.append(f(*a)), (None,)))
    return out[0]


def _m_filterfalse(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    out: list[Any] = []
    next(itertools.filterfalse(lambda _: out.append(f(*a)), (None,)))
    return out[0]


def _m_staticmethod(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    return staticmethod(f)(*a)


_UNCACHED = functools.lru_cache(maxsize=0)(lambda f, a: f(*a))


def _m_uncached(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    return _UNCACHED(f, a)


def _m_context(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    return contextvars.Context().run(f, *a)


def _m_groupby(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    out: list[Any] = []
    next(itertools.groupby((None,), key=lambda _: out.append(f(*a))))
    return out[0]


def _m_tracing(f: Callable[..., Any], a: tuple[Any, ...]) -> Any:
    return sys.call_tracing(f, a)


#: (C symbol, caller) for the message kinds, in the order kinds are first seen. Counting stays off in them: a
#: kind's figure is what was counted inside it (its inclusive count).
KIND_MARKERS = [("_operator_call", _m_call), ("slot_nb_matrix_multiply", _m_matmul),
                ("methodcaller_call", _m_methodcaller), ("starmap_next", _m_starmap),
                ("functools_reduce", _m_reduce), ("takewhile_next", _m_takewhile),
                ("dropwhile_next", _m_dropwhile), ("filterfalse_next", _m_filterfalse),
                ("sm_call", _m_staticmethod), ("groupby_next", _m_groupby)]
#: The markers that turn counting on or off around a part, one per depth (callgrind toggles only at the outermost
#: entry of a function, so a flip inside a flip needs another function).
FLIPS = [("sys_call_tracing", _m_tracing), ("uncached_lru_cache_wrapper", _m_uncached), ("context_run", _m_context)]
DUMP = "sys_getswitchinterval"  # called once between phases: a dump each
_depth = [0]


def _flip(f: Callable[..., Any], a: tuple[Any, ...], k: dict[str, Any]) -> Any:
    depth = _depth[0]
    if depth >= len(FLIPS):
        raise RuntimeError(f"parts nested {depth + 1} deep: add a marker to FLIPS")
    _depth[0] = depth + 1
    try:
        return FLIPS[depth][1](lambda: f(*a, **k), ())
    finally:
        _depth[0] = depth


# --- message kinds --------------------------------------------------------------------------------------------------

def kind_of(data: bytes) -> str:
    """The message's place in bench_proxy's call or bench_registrar's login (their datagrams only)."""
    head = data[:data.find(b"\r\n\r\n")]
    if data.startswith(b"INVITE "):
        return "INVITE with digest -> 100 + relay" if b"\r\nProxy-Authorization:" in head else "INVITE -> 407"
    if data.startswith(b"ACK "):
        return "ACK of the 407" if b"\r\nCSeq: 1 ACK" in head else "ACK of the 2xx (relayed)"
    if data.startswith(b"BYE "):
        return "BYE (relayed)"
    if data.startswith(b"REGISTER "):
        return "REGISTER with digest -> 200" if b"\r\nAuthorization:" in head else "REGISTER -> 401"
    if data.startswith(b"SIP/2.0 "):
        status = data[8:11].decode()
        if status == "200":
            return "200 of the BYE (relayed)" if b" BYE\r\n" in head else "200 of the INVITE, SDP answer"
        return f"{status} (relayed)"
    return "other datagram"


# --- the tree under test --------------------------------------------------------------------------------------------

def load_tree(tree: Path) -> tuple[ModuleType, ModuleType, ModuleType]:
    """Import gamesdk and server from ``tree`` (before any bench module puts its own checkout first), then the bench
    modules of this checkout: bench_proxy, bench_registrar (datagrams, set-up) and bench_server (the parts)."""
    sys.path.insert(0, str(tree))
    importlib.import_module("gamesdk")
    server = importlib.import_module("server")
    assert Path(server.__file__).resolve().is_relative_to(tree.resolve()), server.__file__
    mods = []
    for name in ("bench_proxy", "bench_registrar", "bench_server"):
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        mods.append(mod)
    sys.path[:] = [p for p in sys.path if p != str(BENCH.parent)]
    return mods[0], mods[1], mods[2]


def _our_modules() -> list[ModuleType]:
    return [m for n, m in list(sys.modules.items())
            if m is not None and (n == "gamesdk" or n.startswith(("gamesdk.", "server")))
            and n not in ("bench_server",)]


def import_server_modules() -> None:
    """Every server module the benches' path may use, so the parts' functions are found before they are bound."""
    import importlib
    import pkgutil

    import server

    for info in pkgutil.walk_packages(server.__path__, "server."):
        if info.name.startswith(("server.web", "server.cli_", "server.__main__")):
            continue
        with contextlib.suppress(Exception):  # optional parts (a missing extra) are not on the path
            importlib.import_module(info.name)


def find_function(name: str) -> list[tuple[Any, str, Callable[..., Any]]]:
    """Where ``name`` ("function" or "Class.method", as bench_server.BREAKDOWN writes them) is bound in the loaded
    gamesdk and server modules: (class or module, attribute, the function) for each binding to replace."""
    cls_name, _, attr = name.rpartition(".")
    mods = _our_modules()
    found: list[tuple[Any, str, Callable[..., Any]]] = []
    if cls_name:
        seen: set[int] = set()
        for mod in mods:
            cls = vars(mod).get(cls_name)
            if isinstance(cls, type) and attr in vars(cls) and id(cls) not in seen:
                seen.add(id(cls))
                found.append((cls, attr, vars(cls)[attr]))
        return found
    origs = {id(f): f for mod in mods for f in [vars(mod).get(attr)]
             if callable(f) and getattr(f, "__name__", "") == attr
             and getattr(f, "__module__", "").startswith(("gamesdk", "server"))}
    for orig in origs.values():
        for mod in mods:
            found += [(mod, key, orig) for key, value in vars(mod).items() if value is orig]
    return found


class Parts:
    """The parts' functions wrapped: counting turned on inside the phase's part and off inside the others."""

    def __init__(self, breakdown: tuple[tuple[str, tuple[str, ...]], ...], wrap: bool) -> None:
        self.names = [name for name, _ in breakdown]
        self.short = {name: name.split(" (")[0].split(":")[0] for name in self.names}
        self.phase: str | None = None   # the part counted, "other", or None (the whole message)
        self.active = False             # inside a message that is counted
        self.counting = False
        self.calls: Counter[str] = Counter()   # entries of each part while active (outermost only)
        self.missing: list[str] = []
        self.inside: dict[str, bool] = {}
        if not wrap:
            return
        import_server_modules()
        for part, funcs in breakdown:
            for func in funcs:
                if not self._wrap(part, func):
                    self.missing.append(func)

    def _wrap(self, part: str, name: str) -> bool:
        found = find_function(name)
        for owner, attr, orig in found:
            setattr(owner, attr, self._wrapper(part, orig))
        return bool(found)

    def _wrapper(self, part: str, func: Callable[..., Any]) -> Callable[..., Any]:
        if getattr(func, "_bench_part", None):
            return func
        owner = self

        @functools.wraps(func)
        def wrapper(*a: Any, **k: Any) -> Any:
            if not owner.active or owner.inside.get(part):
                return func(*a, **k)
            owner.calls[part] += 1
            owner.inside[part] = True
            before = owner.counting
            want = owner.phase == part
            try:
                if owner.phase is None or want == before:
                    return func(*a, **k)
                owner.counting = want
                return _flip(func, a, k)
            finally:
                owner.counting = before
                owner.inside[part] = False

        wrapper._bench_part = True  # type: ignore[attr-defined]
        return wrapper


class Messages:
    """node.handle_datagram and handle_timer, each message through the marker of its kind."""

    def __init__(self, node: Any, parts: Parts, valgrind: bool) -> None:
        self.parts = parts
        self.valgrind = valgrind
        self.kinds: dict[str, tuple[str, Callable[..., Any]]] = {}
        self.count: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.on = False
        self.prof: Any = None   # a cProfile.Profile enabled inside the messages only (mode "profile")
        self.node = node

    def handle_datagram(self, data: bytes, addr: Any, now: float, **k: Any) -> Any:
        return self._one(kind_of(data), self.node.handle_datagram, (data, addr, now), k)

    def handle_timer(self, now: float) -> Any:
        return self._one("timers", self.node.handle_timer, (now,), {})

    def __getattr__(self, name: str) -> Any:
        # The benches' other uses of the server (its location table) go to it: a compiled build's server takes no
        # new attributes, so the messages come through this front instead of through wrappers set on it.
        return getattr(self.node, name)

    def _marker(self, kind: str) -> tuple[str, Callable[..., Any]]:
        if kind not in self.kinds:
            self.kinds[kind] = KIND_MARKERS[len(self.kinds)]
        return self.kinds[kind]

    def _one(self, kind: str, func: Callable[..., Any], a: tuple[Any, ...], k: dict[str, Any]) -> Any:
        if not self.on:
            return func(*a, **k)
        self.count[kind] += 1
        if self.prof is not None:
            self.prof.enable()
            try:
                return func(*a, **k)
            finally:
                self.prof.disable()
        if not self.valgrind:
            clock = time.process_time
            t0 = clock()
            try:
                return func(*a, **k)
            finally:
                self.seconds[kind] += clock() - t0
        _, mark = self._marker(kind)
        parts = self.parts
        parts.active = parts.phase != "plain"
        try:
            if parts.phase is None or parts.phase == "plain":
                parts.counting = True   # on for the whole message ("plain": the parts' wrappers stepped over)
                return mark(_flip, (func, a, k))
            parts.counting = False      # on only inside the phase's part
            return mark(func, a)
        finally:
            parts.active = False
            parts.counting = False


# --- the run inside valgrind (or not) ------------------------------------------------------------------------------

def inner(args: argparse.Namespace) -> int:
    bp, br, bs = load_tree(Path(args.tree))
    from server import cli

    parts = Parts(bs.BREAKDOWN, wrap=args.mode == "callgrind" and not args.whole)
    phases: list[str | None] = [None]
    if args.mode == "callgrind":
        phases = ["plain"] if args.whole else [None, "plain", *parts.names]
    report: dict[str, Any] = {"tree": str(Path(args.tree).resolve()), "missing": parts.missing, "benches": {}}
    with ExitStack() as stack:
        serving_gc = getattr(cli, "serving_gc", None)
        if serving_gc is not None:
            stack.enter_context(serving_gc())
        for bench in args.bench:
            units, n = ("call", args.calls) if bench == "proxy" else ("login", args.logins)

            def fresh(bench: str = bench) -> tuple[Messages, Callable[[], None]]:
                """A new server, logged-in callee and warm-up: every phase counts the same number of calls from
                the same state (an amortized cost, such as a table's clean-up every few hundred calls, lands in
                each alike); each run has its own Call-IDs and branches, so the parser's memo of values sees them
                as new in every phase, as in a call."""
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-breakdown-")))
                if bench == "proxy":
                    node, realm = bp.setup(tmp)
                    msgs = Messages(node, parts, args.mode == "callgrind")
                    start = 10_000.0
                    bp.login(msgs, realm, start)
                    _, _, start = bp.run(msgs, realm, calls=args.warm_up, now=start)

                    def once_call() -> None:
                        bp.run(msgs, realm, calls=args.calls, now=start)
                    return msgs, once_call
                node, _accounts, store, realm = br.setup(tmp, args.users)
                msgs = Messages(node, parts, args.mode == "callgrind")
                br.run(msgs, store, realm, logins=max(args.warm_up, args.users), users=args.users,
                       persist_every=1000)

                def once_login() -> None:
                    br.run(msgs, store, realm, logins=args.logins, users=args.users, persist_every=10**9)
                return msgs, once_login

            prof = None
            if args.mode == "profile":
                import cProfile

                prof = cProfile.Profile(time.process_time)
            results: list[dict[str, Any]] = []
            for phase in phases:
                if phase not in (None, "plain") and not results[0]["part_calls"].get(phase):
                    continue  # never entered on this path: nothing to count
                msgs, once = fresh()
                msgs.prof = prof
                gc.collect()  # the collector's counts start alike: its collections land at the same calls
                parts.phase = phase
                parts.calls.clear()
                sys.getswitchinterval()  # the dump marker: what came before is another phase's
                msgs.on = True
                once()
                msgs.on = False
                results.append({"phase": phase, "messages": dict(msgs.count), "part_calls": dict(parts.calls),
                                "seconds": dict(msgs.seconds)})
            sys.getswitchinterval()
            entry: dict[str, Any] = {"units": units, "n": n, "phases": results,
                                     "markers": {k: v[0] for k, v in msgs.kinds.items()}}
            if prof is not None:
                path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "stats.pstats"
                prof.dump_stats(str(path))
                entry["profile_table"] = bs.breakdown(path, n)
            report["benches"][bench] = entry
    Path(args.out).write_text(json.dumps(report))
    return 0


# --- callgrind's output ---------------------------------------------------------------------------------------------

_NAME = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")


def read_dump(path: Path) -> tuple[int, dict[str, tuple[int, int]]]:
    """(instructions counted, {function: (calls, inclusive instructions)}) of one callgrind dump, for the calls made
    to each function (a marker is never called from itself)."""
    names: dict[str, str] = {}
    total = 0
    incl: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    pending: str | None = None
    calls = 0
    after_calls = False
    with path.open() as fh:
        for line in fh:
            if after_calls:
                after_calls = False
                fields = line.split()
                if pending is not None and len(fields) >= 2:
                    incl[pending][0] += calls
                    incl[pending][1] += int(fields[1])
                continue
            if line.startswith("cfn="):
                m = _NAME.match(line.rstrip("\n"))
                if m:
                    ident, name = m.groups()
                    if name:
                        names[ident] = name
                    pending = names.get(ident)
            elif line.startswith("fn="):
                m = _NAME.match(line.rstrip("\n"))
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
            elif line.startswith("calls="):
                calls = int(line.split("=", 1)[1].split()[0])
                after_calls = True
            elif line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split(":", 1)[1].split()[0]))
    return total, {k: (v[0], v[1]) for k, v in incl.items()}


def outer_callgrind(args: argparse.Namespace, out: Path, work: Path) -> dict[str, Any]:
    argv = ["valgrind", "--tool=callgrind", "--collect-atstart=no", f"--dump-before={DUMP}",
            f"--callgrind-out-file={work}/cg.%p"]
    argv += [f"--toggle-collect={sym}" for sym, _ in FLIPS]
    argv += [sys.executable, __file__, "--inner", "--out", str(out), *_pass_on(args)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.time_cap, check=False)
    if proc.returncode != 0:
        sys.exit(f"valgrind failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(out.read_text())
    dumps = sorted(work.glob("cg.*.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        for dump in dumps:
            shutil.copy(dump, args.keep / dump.name)
    # Dump 1 is everything before the first phase (nothing counted); then one per phase, bench after bench.
    it = iter(dumps[1:])
    for entry in report["benches"].values():
        for phase in entry["phases"]:
            dump = next(it)
            total, funcs = read_dump(dump)
            phase["instructions"] = total
            phase["by_kind"] = {kind: funcs.get(sym, (0, 0)) for kind, sym in entry["markers"].items()}
            if phase["phase"] == "plain" and shutil.which("callgrind_annotate"):
                phase["runtime"] = runtime_groups(dump)
        next(it, None)  # the dump between benches
    return report


#: What the interpreter's instructions do, by the C function they run in (callgrind_annotate's self counts).
RUNTIME_GROUPS = [
 ("interpreter loop (bytecode dispatch)", r"_PyEval_EvalFrameDefault"),
 ("calls and frames (arguments, locals, frame set-up and clear)", r"PyArg_|vgetargs|convertitem|_Py_CheckFunctionResult|_PyStack_UnpackDict|FastCall|PyTuple_GetSlice|initialize_locals|_PyFrame_|_PyEvalFramePushAndInit|_PyEval_Vector|clear_thread_frame|_PyFunction_Vectorcall|vectorcall|_PyObject_Call|method_vectorcall|cfunction|_PyEval_EvalFrame|PyObject_Vectorcall|_PyObject_MakeTpCall|slot_tp|call_function|_PyThreadState_PushFrame|_PyThreadState_PopFrame"),
 ("objects made and freed (malloc, free, dealloc, reference counts)", r"_int_malloc|_int_free|\bmalloc\b|\bfree\b|_PyTrash|Realloc|new_keys_object|free_keys_object|PyFunction_New|func_clear|_PyObject_Malloc|_PyObject_Free|dealloc|_Py_NewReference|_Py_Dealloc|tuple_alloc|PyTuple_New|_PyTuple_FromArray|PyObject_Malloc|PyObject_Free|pymalloc|_PyObject_GC_|gc_alloc|list_append|PyList_New|_PyList_|PyObject_GC|subtype_dealloc|object_dealloc|free_list|_PyLong_New|PyLong_From|_PyObject_New|object_new|type_call|PyType_GenericAlloc|_PyType_AllocNoTrack|tp_new|visit_decref|subtract_refs|update_refs|move_unreachable|gc_collect"),
 ("attribute and name lookups (dicts, types)", r"dict_lookup|_PyType_Lookup|lookup|_PyObject_GetMethod|PyObject_GenericGetAttr|_PyObject_GenericGetAttrWithDict|insertdict|dict_|PyDict_|unicode_eq|_PyDict|getattr|setattr|_PyObject_LookupAttr|PyObject_GetAttr|PyObject_SetAttr|descr|find_name_in_mro|hash"),
 ("strings and bytes (split, strip, find, join, encode, format)", r"unicode|Unicode|bytes|Bytes|stringlib|fastsearch|find_internal|memcpy|memmove|memset|memchr|strlen|ascii_decode|_PyBytes|split|strip|join|format|_PyUnicodeWriter|utf8|latin1|replace"),
 ("regular expressions", r"_sre|sre_"),
 ("SQLite", r"sqlite|pysqlite|_pysqlite"),
 ("hashing and HMAC (MD5, SHA-256, HMAC)", r"md5|MD5|sha|SHA|hmac|HMAC|EVP|_hashlib|libcrypto|OPENSSL|CRYPTO"),
 ("JSON", r"_json|json"),
]


def runtime_groups(dump: Path) -> dict[str, int]:
    """Self instructions of one dump by RUNTIME_GROUPS (needs callgrind_annotate, installed with valgrind)."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", "--inclusive=no", str(dump)],
                         capture_output=True, text=True, check=False).stdout
    total = 0
    found: Counter[str] = Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if not m:
            continue
        count, name = int(m.group(1).replace(",", "")), m.group(2)
        if "PROGRAM TOTALS" in name:
            total = count
            continue
        if count >= total:
            continue  # main and the callers above it: everything, not their own
        for group, pattern in RUNTIME_GROUPS:
            if re.search(pattern, name):
                found[group] += count
                break
        else:
            found["the rest of the runtime (type checks, comparisons, numbers, sets, locks)"] += count
    return dict(found)


def _pass_on(args: argparse.Namespace) -> list[str]:
    argv = ["--tree", str(args.tree), "--mode", args.mode, "--calls", str(args.calls), "--logins", str(args.logins),
            "--warm-up", str(args.warm_up), "--users", str(args.users)] + (["--whole"] if args.whole else [])
    for bench in args.bench:
        argv += ["--bench", bench]
    return argv


# --- tables --------------------------------------------------------------------------------------------------------

def tables_by_part(phases: dict[Any, Any], kinds: list[str], names: list[str], n: int, units: str) -> list[str]:
    """The rows of the table by message kind and part (every phase counted)."""
    lines: list[str] = []
    short = {p: p.split(" (")[0] for p in names}
    lines.append("| message | " + " | ".join(short[p] for p in names) + " | other | whole |")
    lines.append("|---|" + "---:|" * (len(names) + 2))
    col_sum = Counter[str]()
    for kind in kinds:
        row = []
        s = 0
        for p in names:
            ir = phases[p]["by_kind"][kind][1]
            col_sum[p] += ir
            s += ir
            row.append(f"{ir / n:,.0f}")
        plain_ir = phases["plain"]["by_kind"][kind][1]
        col_sum["other"] += plain_ir - s
        lines.append(f"| {kind} | " + " | ".join(row) + f" | {(plain_ir - s) / n:,.0f} | {plain_ir / n:,.0f} |")
    plain_tot = sum(v[1] for v in phases["plain"]["by_kind"].values())
    lines.append("| **per " + units + "** | " + " | ".join(f"**{col_sum[p] / n:,.0f}**" for p in names)
                 + f" | **{col_sum['other'] / n:,.0f}** | **{plain_tot / n:,.0f}** |")
    lines.append("| share | " + " | ".join(f"{100 * col_sum[p] / max(plain_tot, 1):.0f} %" for p in names)
                 + f" | {100 * col_sum['other'] / max(plain_tot, 1):.0f} % | 100 % |")
    return lines


def tables(report: dict[str, Any], parts_order: list[str]) -> str:
    lines = [f"tree: {report['tree']}"]
    if report["missing"]:
        lines.append(f"parts' functions not found in this tree: {', '.join(report['missing'])}")
    for bench, entry in report["benches"].items():
        n, units = entry["n"], entry["units"]
        phases = {p["phase"]: p for p in entry["phases"]}
        whole = phases[None] if None in phases else phases["plain"]
        if "profile_table" in entry:
            lines += ["", (f"{bench}: cProfile of the server's calls ({n} {units}s), bench_server.py's part table "
                          "(read the shares: the profiler inflates small functions)"), entry["profile_table"]]
            continue
        if "instructions" not in whole:
            lines += ["", f"{bench}: CPU µs per {units} by message kind ({n} {units}s, process time)",
                      "| message | count per " + units + " | µs each | µs per " + units + " |", "|---|---:|---:|---:|"]
            total = 0.0
            for kind, count in whole["messages"].items():
                secs = whole["seconds"].get(kind, 0.0)
                total += secs
                lines.append(f"| {kind} | {count / n:.2f} | {1e6 * secs / max(count, 1):,.1f} | "
                             f"{1e6 * secs / n:,.1f} |")
            lines.append(f"| all | | | {1e6 * total / n:,.1f} |")
            continue
        kinds = list(entry["markers"])
        if None not in phases:  # --whole: each kind's inclusive count, no parts
            plain = phases["plain"]["by_kind"]
            lines += ["", f"{bench}: callgrind instructions per {units} by message kind ({n} {units}s counted)",
                      "| message | whole |", "|---|---:|"]
            lines += [f"| {kind} | {plain[kind][1] / n:,.0f} |" for kind in kinds]
            lines.append(f"| **per {units}** | **{sum(v[1] for v in plain.values()) / n:,.0f}** |")
            names: list[str] = []
        else:
            names = [p for p in parts_order if p in phases and any(v[1] for v in phases[p]["by_kind"].values())]
            lines += ["", (f"{bench}: callgrind instructions per {units} ({n} {units}s counted; each part its own "
                           "count, without the parts it calls; other = whole - parts)")]
            lines += tables_by_part(phases, kinds, names, n, units)
        plain_tot = sum(v[1] for v in phases["plain"]["by_kind"].values())
        plain_dump = phases["plain"].get("instructions", 0)
        wrong = [f"{kind}: {phases['plain']['by_kind'][kind][0]} calls seen, {phases['plain']['messages'].get(kind, 0)} "
                 "made" for kind in kinds
                 if phases["plain"]["by_kind"][kind][0] != phases["plain"]["messages"].get(kind, 0)]
        if wrong:
            lines.append("MARKER MISMATCH (the server calls a marker function too: its figures are wrong): "
                         + "; ".join(wrong))
        lines.append(f"(check: the kinds' counts add up to {plain_tot / max(plain_dump, 1):.4f} of everything counted "
                     "in that phase; 1 means no marker counted twice or missed)")
        runtime = phases["plain"].get("runtime")
        if runtime:
            lines += ["", f"{bench}: where the same instructions run, by C function (self counts, per {units})",
                      "| runtime | instructions | share |", "|---|---:|---:|"]
            counted = max(sum(runtime.values()), 1)
            for group, count in sorted(runtime.items(), key=lambda kv: -kv[1]):
                lines.append(f"| {group} | {count / n:,.0f} | {100 * count / counted:.1f} % |")
        if None not in phases:
            continue  # --whole: no parts were counted
        wrapped_tot = sum(v[1] for v in phases[None]["by_kind"].values())
        calls = phases[None]["part_calls"]
        lines.append("part entries per " + units + ": "
                     + ", ".join(f"{p.split(' (')[0]} {calls.get(p, 0) / n:.1f}" for p in names))
        lines.append(f"(whole = without the parts' wrappers; with them stepped through, {wrapped_tot / n:,.0f} per "
                     f"{units}: a part entered inside another part carries some of its wrapper's count)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, default=BENCH.parent,
                    help="checkout whose gamesdk and server are measured (default: this one)")
    ap.add_argument("--bench", choices=["proxy", "registrar"], action="append",
                    help="bench_proxy's call, bench_registrar's login (default both)")
    ap.add_argument("--mode", choices=["callgrind", "time", "profile"], default="callgrind")
    ap.add_argument("--calls", type=int, default=None, help="calls counted (callgrind 100, else 1000)")
    ap.add_argument("--logins", type=int, default=None, help="logins counted (callgrind 300, else 3000)")
    ap.add_argument("--warm-up", type=int, default=100, help="calls (logins: at least --users) before, not counted")
    ap.add_argument("--users", type=int, default=300, help="players logging in in turn (bench_registrar)")
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    ap.add_argument("--keep", type=Path, help="copy callgrind's dumps (one per phase) to this directory")
    ap.add_argument("--time-cap", type=float, default=1800.0, help="seconds before valgrind is stopped")
    ap.add_argument("--whole", action="store_true",
                    help="callgrind per message kind only, no parts: one phase, nothing of the server replaced "
                         "(counts a compiled build too)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.bench = args.bench or ["proxy", "registrar"]
    slow = args.mode == "callgrind"
    args.calls = args.calls if args.calls is not None else (100 if slow else 1000)
    args.logins = args.logins if args.logins is not None else (300 if slow else 3000)
    if args.inner:
        return inner(args)
    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as tmp:
        out = Path(tmp) / "report.json"
        if args.mode == "callgrind":
            report = outer_callgrind(args, out, Path(tmp))
        else:
            subprocess.run([sys.executable, __file__, "--inner", "--out", str(out), *_pass_on(args)], check=True)
            report = json.loads(out.read_text())
    spec = importlib.util.spec_from_file_location("bench_server", BENCH / "bench_server.py")
    assert spec is not None and spec.loader is not None
    bs = importlib.util.module_from_spec(spec)
    sys.modules["bench_server"] = bs
    spec.loader.exec_module(bs)
    report["load_average"] = os.getloadavg()
    print(tables(report, [name for name, _ in bs.BREAKDOWN]))
    print(f"load average {report['load_average'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
