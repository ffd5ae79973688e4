#!/usr/bin/env python3
"""Direct messages beside a room, on a server that holds many idle clients.

    bench_dm.py WS_HOST:PORT [--seconds S] [--window N] [--probe-rate R] [--no-dms]

Connects four clients of its own (standard library only, one thread each):
- a dm sender and its recipient: the sender keeps WINDOW dms in flight (sent, not yet
  acknowledged) for S seconds; reports dms/s (acknowledged, i.e. stored and delivered);
- a probe pair in room "probe": one sends R timestamped messages a second, the other
  reports the latency of each (p50, p99, max).
With --no-dms only the probe runs (the baseline). Prints one JSON line. Works against a
server with user ids (dm `to_user`) and one without (dm `to` a name), so an older build
can be measured the same way.
"""
import base64
import json
import os
import socket
import statistics
import struct
import sys
import threading
import time


class Ws:
    def __init__(self, addr, path="/ws"):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SystemExit("connection closed during the upgrade")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise SystemExit(f"upgrade refused: {status!r}")
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.lock = threading.Lock()

    def send(self, obj):
        data = json.dumps(obj).encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        with self.lock:
            self.sock.sendall(header + mask + masked)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def recv(self):
        """The next text message as JSON (pings answered, other frames skipped)."""
        while True:
            self._need(2)
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                self._need(4)
                n, off = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                self._need(10)
                n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
            self._need(off + n)
            payload, self.buf = self.buf[off : off + n], self.buf[off + n :]
            op = b0 & 0x0F
            if op == 1:
                return json.loads(payload)
            if op == 9:  # ping: pong
                mask = os.urandom(4)
                with self.lock:
                    self.sock.sendall(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + mask
                                      + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            if op == 8:
                raise EOFError

    def until(self, kind):
        while True:
            v = self.recv()
            if v.get("type") == kind:
                return v


def main():
    args = sys.argv[1:]
    addr = args[0]
    opt = lambda name, default: type(default)(args[args.index(name) + 1]) if name in args else default
    seconds, window, rate = opt("--seconds", 10.0), opt("--window", 64), opt("--probe-rate", 50.0)
    dms = "--no-dms" not in args

    sender, recipient = Ws(addr), Ws(addr)
    welcome_s, welcome_r = sender.until("welcome"), recipient.until("welcome")
    if "user" in welcome_r:
        target = {"to_user": welcome_r["user"]}
    else:  # an older server: by name
        recipient.send({"type": "name", "name": "bench-recipient"})
        recipient.until("name")
        target = {"to": "bench-recipient"}
    p_send, p_recv = Ws(addr), Ws(addr)
    for p in (p_send, p_recv):
        p.until("welcome")
        p.send({"type": "join", "room": "probe"})
        while True:
            v = p.recv()
            if v.get("type") == "presence" and v.get("room") == "probe":
                break

    stop = time.monotonic() + seconds
    acked = [0]
    errors = [0]

    def drain_recipient():
        try:
            while True:
                recipient.recv()
        except (EOFError, OSError):
            pass

    def run_dms():
        inflight = 0
        ref = 0
        while time.monotonic() < stop:
            while inflight < window:
                ref += 1
                sender.send({"type": "dm", **target, "text": f"dm {ref}", "ref": ref})
                inflight += 1
            v = sender.recv()
            if v.get("type") == "ack":
                acked[0] += 1
                inflight -= 1
            elif v.get("type") == "error":
                errors[0] += 1
                inflight -= 1

    latencies = []

    def run_probe_reader():
        try:
            while True:
                v = p_recv.recv()
                if v.get("type") == "message" and v.get("room") == "probe":
                    sent = float(v["text"].split()[1])
                    latencies.append((time.monotonic() - sent) * 1000)
        except (EOFError, OSError, ValueError):
            pass

    threading.Thread(target=drain_recipient, daemon=True).start()
    threading.Thread(target=run_probe_reader, daemon=True).start()
    threading.Thread(target=lambda: [p_send.recv() for _ in iter(int, 1)], daemon=True).start()
    dm_thread = threading.Thread(target=run_dms, daemon=True)
    started = time.monotonic()
    if dms:
        dm_thread.start()
    n = 0
    while time.monotonic() < stop:
        n += 1
        p_send.send({"type": "message", "room": "probe", "text": f"t {time.monotonic():.6f}"})
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
    time.sleep(0.5)  # the last probes arrive
    elapsed = time.monotonic() - started
    lat = sorted(latencies)
    q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None
    print(json.dumps({
        "dms_per_sec": round(acked[0] / seconds, 1) if dms else 0,
        "dm_errors": errors[0],
        "probe_sent": n,
        "probe_seen": len(lat),
        "probe_p50_ms": q(0.50),
        "probe_p99_ms": q(0.99),
        "probe_max_ms": round(lat[-1], 2) if lat else None,
        "probe_mean_ms": round(statistics.mean(lat), 2) if lat else None,
        "seconds": round(elapsed, 1),
    }))


if __name__ == "__main__":
    main()
