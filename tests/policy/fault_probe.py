"""OPTIONS probes for the fault test: ``python fault_probe.py PORT COUNT`` prints one round trip (ms) per line.

A probe lost on the lossy path is sent again after 200 ms (as a SIP client would after T1/2); its round trip is
then counted from the retransmission, so the figure is the server's answering time, not the path's loss.
"""

from __future__ import annotations

import socket
import sys
import time


def main(port: int, count: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    me = sock.getsockname()[1]
    for n in range(count):
        for attempt in range(10):
            data = (f"OPTIONS sip:eu.gamesdk.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};"
                    f"branch=z9hG4bKprobe{n}x{attempt}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@eu.gamesdk.test>;tag=p"
                    f"\r\nTo: <sip:eu.gamesdk.test>\r\nCall-ID: probe-{n}-{attempt}\r\nCSeq: 1 OPTIONS\r\n"
                    "Content-Length: 0\r\n\r\n").encode()
            sent = time.perf_counter()
            sock.sendto(data, ("127.0.0.1", port))
            call_id = f"probe-{n}-{attempt}".encode()
            answered = False
            while not answered:
                try:
                    reply = sock.recv(4096)
                except TimeoutError:
                    break
                # Only this attempt's answer counts (a late one to an earlier attempt is skipped).
                answered = reply.startswith(b"SIP/2.0 ") and b"Call-ID: " + call_id + b"\r\n" in reply
            if answered:
                print(f"{(time.perf_counter() - sent) * 1000:.2f}", flush=True)
                break
        time.sleep(0.05)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
