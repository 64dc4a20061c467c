"""Raw UDP vs the encrypted game channel on loopback, side by side in one run.

    python bench/bench_channel.py [--seconds 2.0] [--round-trips 3000] [--no-profile]

Two processes (sender/receiver, or client/echo server) on 127.0.0.1 for every row:
  raw        plain blocking sockets, payload bytes as is
  core       gamesdk.channel.Channel on blocking sockets (AEAD, acks, header; no driver)
  poll       the same through gamesdk.io.channel_poll.PollChannel (non-blocking socket + select)
One way: the sender blasts for --seconds; the figure is what the receiver got per second (UDP drops the
excess). Ping-pong: one message in flight; median and p99 round trip over --round-trips exchanges.
Then an in-process breakdown (where the time goes) and a cProfile of the channel receive path.
Bounded: about 45 s with the defaults.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing as mp
import os
import pstats
import select
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gamesdk.channel import Channel, ChannelConfig, ChannelParams, Lane, MessageReceived
from gamesdk.channel.testing import make_params_pair
from gamesdk.io.channel_poll import PollChannel

HOST = "127.0.0.1"
END = b"\xffEND"
# one-way runs must not end on a timeout: no Interrupted/Disconnected noise in the figures
CONFIG = ChannelConfig(disconnected_s=None)


def _sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((HOST, 0))
    return s


def _pair_params(a: socket.socket, b: socket.socket) -> tuple[ChannelParams, ChannelParams]:
    return make_params_pair(offer_addr=a.getsockname(), answer_addr=b.getsockname())


# ---------------------------------------------------------------- one way


def oneway_raw_receiver(sock: socket.socket, conn: Connection, seconds: float) -> None:
    sock.settimeout(seconds + 3)
    count = 0
    first = last = cpu0 = cpu1 = 0.0
    try:
        while True:
            data = sock.recv(2048)
            if data == END:
                break
            last = time.perf_counter()
            cpu1 = time.process_time()
            if not count:
                first, cpu0 = last, cpu1
            count += 1
    except TimeoutError:
        pass
    conn.send((count, last - first, cpu1 - cpu0))


def oneway_raw_sender(sock: socket.socket, dest: tuple[str, int], payload: bytes, seconds: float) -> int:
    sendto = sock.sendto
    sent = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(64):
            try:
                sendto(payload, dest)
            except BlockingIOError:
                pass
        sent += 64
    for _ in range(20):
        sock.sendto(END, dest)
        time.sleep(0.005)
    return sent


def oneway_core_receiver(
    sock: socket.socket, params: ChannelParams, conn: Connection, seconds: float
) -> None:
    ch = Channel(params, CONFIG, now=time.monotonic())
    sock.settimeout(0.5)
    count = 0
    first = last = cpu0 = cpu1 = 0.0
    deadline = time.monotonic() + seconds + 5
    recvfrom, sendto, receive = sock.recvfrom, sock.sendto, ch.receive_datagram
    while time.monotonic() < deadline:
        try:
            data, addr = recvfrom(2048)
        except TimeoutError:
            if count:
                break
            continue
        now = time.monotonic()
        receive(data, addr, now)
        events = ch.events()
        if events:
            n = sum(1 for e in events if type(e) is MessageReceived)
            if n:
                last = time.perf_counter()
                cpu1 = time.process_time()
                if not count:
                    first, cpu0 = last, cpu1
                count += n
        for d, a in ch.datagrams_to_send(now):
            sendto(d, a)
    conn.send((count, last - first, cpu1 - cpu0))


def oneway_core_sender(sock: socket.socket, params: ChannelParams, payload: bytes, seconds: float) -> int:
    ch = Channel(params, CONFIG, now=time.monotonic())
    sock.setblocking(False)
    sendto, recvfrom = sock.sendto, sock.recvfrom
    sent = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(64):
            now = time.monotonic()
            ch.send(payload, Lane.UNRELIABLE)
            for d, a in ch.datagrams_to_send(now):
                try:
                    sendto(d, a)
                except BlockingIOError:
                    pass
        sent += 64
        now = time.monotonic()
        while True:  # read the acks
            try:
                data, addr = recvfrom(2048)
            except BlockingIOError:
                break
            ch.receive_datagram(data, addr, now)
        ch.events()
    return sent


def oneway_poll_receiver(
    sock: socket.socket, params: ChannelParams, conn: Connection, seconds: float
) -> None:
    drv = PollChannel.open(params, CONFIG, now=time.monotonic(), sock=sock)
    count = 0
    first = last = cpu0 = cpu1 = 0.0
    deadline = time.monotonic() + seconds + 5
    idle_since = None
    while time.monotonic() < deadline:
        select.select([drv], [], [], 0.05)
        events = drv.poll(time.monotonic())
        n = sum(1 for e in events if type(e) is MessageReceived)
        if n:
            last = time.perf_counter()
            cpu1 = time.process_time()
            if not count:
                first, cpu0 = last, cpu1
            count += n
            idle_since = None
        elif count:
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 0.5:
                break
    conn.send((count, last - first, cpu1 - cpu0))


def oneway_poll_sender(sock: socket.socket, params: ChannelParams, payload: bytes, seconds: float) -> int:
    drv = PollChannel.open(params, CONFIG, now=time.monotonic(), sock=sock)
    sent = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(64):
            drv.send(payload, Lane.UNRELIABLE)
            drv.flush(time.monotonic())
        sent += 64
        drv.poll(time.monotonic())
    return sent


class OneWay(NamedTuple):
    rate: float  # datagrams/s the receiver got
    delivered: float  # fraction of sent that arrived
    send_cpu_us: float  # sender CPU per datagram sent (includes the raw sender's END tail)
    recv_cpu_us: float  # receiver CPU per datagram received


def run_oneway(kind: str, size: int, seconds: float) -> OneWay:
    ctx = mp.get_context("fork")
    rs, ss = _sock(), _sock()
    offer, answer = _pair_params(ss, rs)
    parent, child = ctx.Pipe()
    payload = bytes(size)
    if kind == "raw":
        proc = ctx.Process(target=oneway_raw_receiver, args=(rs, child, seconds))
    elif kind == "core":
        proc = ctx.Process(target=oneway_core_receiver, args=(rs, answer, child, seconds))
    else:
        proc = ctx.Process(target=oneway_poll_receiver, args=(rs, answer, child, seconds))
    proc.start()
    time.sleep(0.1)
    cpu = time.process_time()
    if kind == "raw":
        sent = oneway_raw_sender(ss, rs.getsockname(), payload, seconds)
    elif kind == "core":
        sent = oneway_core_sender(ss, offer, payload, seconds)
    else:
        sent = oneway_poll_sender(ss, offer, payload, seconds)
    send_cpu_us = (time.process_time() - cpu) / max(sent, 1) * 1e6
    count, elapsed, recv_cpu = parent.recv() if parent.poll(seconds + 10) else (0, 0.0, 0.0)
    proc.join(5)
    if proc.is_alive():
        proc.terminate()
    rs.close()
    ss.close()
    recv_cpu_us = recv_cpu / max(count, 1) * 1e6
    return OneWay(count / elapsed if elapsed > 0 else 0.0, count / max(sent, 1), send_cpu_us, recv_cpu_us)


# ---------------------------------------------------------------- ping-pong


def echo_raw(sock: socket.socket, n: int) -> None:
    sock.settimeout(5)
    try:
        for _ in range(n):
            data, addr = sock.recvfrom(2048)
            sock.sendto(data, addr)
    except TimeoutError:
        pass


def echo_core(sock: socket.socket, params: ChannelParams, n: int) -> None:
    ch = Channel(params, CONFIG, now=time.monotonic())
    sock.settimeout(5)
    echoed = 0
    try:
        while echoed < n:
            data, addr = sock.recvfrom(2048)
            now = time.monotonic()
            ch.receive_datagram(data, addr, now)
            for e in ch.events():
                if type(e) is MessageReceived:
                    ch.send(e.data, Lane.UNRELIABLE)
                    echoed += 1
            for d, a in ch.datagrams_to_send(now):
                sock.sendto(d, a)
    except TimeoutError:
        pass


def echo_poll(sock: socket.socket, params: ChannelParams, n: int) -> None:
    drv = PollChannel.open(params, CONFIG, now=time.monotonic(), sock=sock)
    echoed = 0
    deadline = time.monotonic() + 60
    while echoed < n and time.monotonic() < deadline:
        select.select([drv], [], [], 0.05)
        for e in drv.poll(time.monotonic()):
            if type(e) is MessageReceived:
                drv.send(e.data, Lane.UNRELIABLE)
                echoed += 1
        drv.flush(time.monotonic())


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99) - 1] * 1e6


def run_pingpong(kind: str, size: int, n: int) -> tuple[float, float]:
    """Returns (median, p99) round trip in µs."""
    ctx = mp.get_context("fork")
    cs, es = _sock(), _sock()
    offer, answer = _pair_params(cs, es)
    warm = 200
    total = n + warm
    if kind == "raw":
        proc = ctx.Process(target=echo_raw, args=(es, total))
    elif kind == "core":
        proc = ctx.Process(target=echo_core, args=(es, answer, total))
    else:
        proc = ctx.Process(target=echo_poll, args=(es, answer, total))
    proc.start()
    time.sleep(0.1)
    payload = bytes(size)
    samples: list[float] = []
    dest = es.getsockname()
    if kind == "raw":
        cs.settimeout(1)
        for i in range(total):
            t0 = time.perf_counter()
            cs.sendto(payload, dest)
            try:
                cs.recv(2048)
            except TimeoutError:
                continue
            if i >= warm:
                samples.append(time.perf_counter() - t0)
    elif kind == "core":
        ch = Channel(offer, CONFIG, now=time.monotonic())
        cs.settimeout(1)
        for i in range(total):
            t0 = time.perf_counter()
            ch.send(payload, Lane.UNRELIABLE)
            for d, a in ch.datagrams_to_send(time.monotonic()):
                cs.sendto(d, a)
            got = False
            while not got:
                try:
                    data, addr = cs.recvfrom(2048)
                except TimeoutError:
                    break
                ch.receive_datagram(data, addr, time.monotonic())
                got = any(type(e) is MessageReceived for e in ch.events())
            if got and i >= warm:
                samples.append(time.perf_counter() - t0)
    else:
        drv = PollChannel.open(offer, CONFIG, now=time.monotonic(), sock=cs)
        for i in range(total):
            t0 = time.perf_counter()
            drv.send(payload, Lane.UNRELIABLE)
            drv.flush(time.monotonic())
            got = False
            limit = t0 + 1
            while not got and time.perf_counter() < limit:
                select.select([drv], [], [], 0.05)
                got = any(type(e) is MessageReceived for e in drv.poll(time.monotonic()))
            if got and i >= warm:
                samples.append(time.perf_counter() - t0)
    proc.join(5)
    if proc.is_alive():
        proc.terminate()
    cs.close()
    es.close()
    return _percentiles(samples) if samples else (float("nan"), float("nan"))


# ---------------------------------------------------------------- where the time goes


def _cpu_per_call(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    """Best-of CPU seconds per call (process time: other processes on a shared machine do not count)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return best


def breakdown(size: int) -> list[tuple[str, float]]:
    """In-process CPU µs per packet of the pieces of the channel path."""
    payload = bytes(size)
    n = 5000
    aead = ChaCha20Poly1305(bytes(32))
    nonce = bytes(12)
    header = bytes(13)
    plain = bytes(19 + 3) + payload
    sealed = aead.encrypt(nonce, plain, header)
    rows = [
        ("ChaCha20-Poly1305 seal (AEAD alone)", _cpu_per_call(lambda: aead.encrypt(nonce, plain, header), n)),
        (
            "ChaCha20-Poly1305 open (AEAD alone)",
            _cpu_per_call(lambda: aead.decrypt(nonce, sealed, header), n),
        ),
    ]
    s1, s2 = _sock(), _sock()
    dest = s2.getsockname()
    wire_bytes = bytes(size + 13 + 16 + 22)

    def udp_round() -> None:
        s1.sendto(wire_bytes, dest)
        s2.recvfrom(2048)

    rows.append(("raw sendto + recvfrom (syscalls, same process)", _cpu_per_call(udp_round, n)))

    # The floor any Python channel pays: pack header + ACK + message head, seal; unpack, open. No state.
    head, ack, unrel = struct.Struct("<BIQ"), struct.Struct("<BQQH"), struct.Struct("<BH")
    seal, open_ = aead.encrypt, aead.decrypt
    counter = iter(range(1 << 62))

    def floor_send() -> bytes:
        pn = next(counter)
        h = head.pack(0x42, 7, pn)
        return h + seal(
            (12345 ^ pn).to_bytes(12, "big"), ack.pack(1, pn, 0, 0) + unrel.pack(0x10, size) + payload, h
        )

    floor_datagram = floor_send()

    def floor_recv() -> None:
        _, _, pn = head.unpack_from(floor_datagram)
        body = open_((12345 ^ pn).to_bytes(12, "big"), floor_datagram[13:], floor_datagram[:13])
        ack.unpack_from(body)

    rows.append(("floor: header + ACK + frame + seal, no channel state", _cpu_per_call(floor_send, n)))
    rows.append(("floor: unpack + open + ACK unpack, no channel state", _cpu_per_call(floor_recv, n)))
    s1.close()
    s2.close()

    best_send = best_recv = float("inf")
    for _ in range(5):
        a, b, _offer, answer = _established_pair()
        datagrams: list[bytes] = []
        t0 = time.process_time()
        for _ in range(n):
            a.send(payload, Lane.UNRELIABLE)
            datagrams.append(a.datagrams_to_send(1.0)[0][0])
        best_send = min(best_send, (time.process_time() - t0) / n)
        src = answer.peer_addr
        t0 = time.process_time()
        for d in datagrams:
            b.receive_datagram(d, src, 1.0)
            b.events()
            b.datagrams_to_send(1.0)  # what a driver does after each receive (acks every 16)
        best_recv = min(best_recv, (time.process_time() - t0) / n)
    rows.append(("channel send() + datagrams_to_send() (seal included)", best_send))
    rows.append(("channel receive_datagram() + events() + acks (open incl.)", best_recv))
    return [(name, seconds * 1e6) for name, seconds in rows]


def _established_pair() -> tuple[Channel, Channel, ChannelParams, ChannelParams]:
    offer, answer = make_params_pair()
    a = Channel(offer, CONFIG, now=0.0)
    b = Channel(answer, CONFIG, now=0.0)
    for _ in range(3):  # CONFIRM exchange, so later packets are plain ACK + message
        for d, _addr in a.datagrams_to_send(0.0):
            b.receive_datagram(d, answer.peer_addr, 0.0)
        for d, _addr in b.datagrams_to_send(0.0):
            a.receive_datagram(d, offer.peer_addr, 0.0)
    a.events()
    b.events()
    return a, b, offer, answer


def profile_receive(size: int) -> str:
    a, b, offer, answer = _established_pair()
    datagrams = []
    for i in range(30000):
        a.send(bytes(size), Lane.UNRELIABLE)
        datagrams.extend(d for d, _ in a.datagrams_to_send(i * 1e-5))
        if i % 16 == 0:
            for d, _ in b.datagrams_to_send(i * 1e-5):
                a.receive_datagram(d, offer.peer_addr, i * 1e-5)
    src = answer.peer_addr
    prof = cProfile.Profile()
    prof.enable()
    for i, d in enumerate(datagrams):
        b.receive_datagram(d, src, 1.0 + i * 1e-5)
        b.events()
        if i % 16 == 0:
            b.datagrams_to_send(1.0 + i * 1e-5)
    prof.disable()
    import io

    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(8)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if "ncalls" in ln)
    return "\n".join(lines[start : start + 9])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="one-way blast per row (default 2)")
    parser.add_argument("--round-trips", type=int, default=3000, help="ping-pongs per row (default 3000)")
    parser.add_argument(
        "--repeats", type=int, default=2, help="interleaved runs per row, best kept (default 2)"
    )
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args(argv)
    if not 0.2 <= args.seconds <= 10 or not 100 <= args.round_trips <= 50000 or not 1 <= args.repeats <= 5:
        parser.error("--seconds 0.2..10, --round-trips 100..50000, --repeats 1..5 (the bench is bounded)")
    started = time.monotonic()
    print(
        f"# bench_channel: loopback, 2 processes per row, python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(
        f"# best of {args.repeats} interleaved runs per row (the machine may be shared); CPU = process time"
    )
    print("# load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    print(
        "| payload | path | one way datagrams/s | vs raw | delivered | CPU µs/pkt send / recv "
        "| RTT median µs | RTT p99 µs | median vs raw |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in (64, 512):
        best: dict[str, OneWay] = {}
        rtts: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeats):
            for kind in ("raw", "core", "poll"):
                one = run_oneway(kind, size, args.seconds)
                if kind not in best or one.rate > best[kind].rate:
                    best[kind] = one
                rtt = run_pingpong(kind, size, args.round_trips)
                if kind not in rtts or rtt[0] < rtts[kind][0]:
                    rtts[kind] = rtt
        for kind in ("raw", "core", "poll"):
            one, (median, p99) = best[kind], rtts[kind]
            ratio = one.rate / best["raw"].rate if best["raw"].rate else float("nan")
            extra = "" if kind == "raw" else f"+{median - rtts['raw'][0]:.1f} µs"
            print(
                f"| {size} B | {kind} | {one.rate:,.0f} | {ratio:.2f}x | {one.delivered:.0%} "
                f"| {one.send_cpu_us:.1f} / {one.recv_cpu_us:.1f} | {median:.1f} | {p99:.1f} | {extra} |",
                flush=True,
            )
    print()
    print("In-process CPU per packet (best of 5, process time), µs:")
    for size in (64, 512):
        for name, us in breakdown(size):
            print(f"  {size:>3} B  {name:<58} {us:6.2f}")
    if not args.no_profile:
        print()
        print("cProfile of the channel receive path (64 B, 30k packets), top functions by own time:")
        print(profile_receive(64))
    print()
    print("# load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"# total {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
