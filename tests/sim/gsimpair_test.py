#!/usr/bin/python3
"""Tests of the gsimpair UDP relay on 127.0.0.1 only.

    gsimpair_test.py PATH_TO_GSIMPAIR

An echo server and clients in this process, the relay between them. Every
send loop is bounded in count and paced; every relay has a --duration as a
backstop and is stopped with SIGINT. Exit 0 when all pass, 1 otherwise.
"""
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

RELAY = sys.argv[1] if len(sys.argv) > 1 else "gsimpair"
HOST = "127.0.0.1"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


class Echo:
    """Echo server: counts what arrives (and from whom), sends it back."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.received = []          # (arrival monotonic, payload, source)
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop:
            r, _, _ = select.select([self.sock], [], [], 0.05)
            if not r:
                continue
            data, src = self.sock.recvfrom(65536)
            self.received.append((time.monotonic(), data, src))
            self.sock.sendto(data, src)

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Relay:
    def __init__(self, target_port, *opts):
        self.port = free_port()
        args = [RELAY, "--listen", f"{HOST}:{self.port}", "--to", f"{HOST}:{target_port}",
                "--duration", "30s", "--stats-interval", "200ms", *opts]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The first stderr line says it is bound.
        line = self.proc.stderr.readline()
        if "->" not in line:
            raise RuntimeError("relay did not start: " + line + self.proc.stderr.read())
        self.addr = (HOST, self.port)

    def finish(self):
        """SIGINT, then the final JSON line and the stderr stat lines."""
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=10)
        self.rc = self.proc.returncode
        self.stats_lines = [l for l in err.splitlines() if l.startswith("gsimpair ")]
        return json.loads(out.strip().splitlines()[-1])


def client():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    s.bind((HOST, 0))
    return s


def drain(sock, want, timeout):
    """Receives until `want` datagrams or `timeout` seconds of silence."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if r:
            got.append((time.monotonic(), sock.recv(65536)))
            deadline = time.monotonic() + timeout
    return got


def send_paced(sock, addr, n, gap=0.0005, size=64):
    for i in range(n):
        sock.sendto(struct.pack("!Id", i, time.monotonic()).ljust(size, b"x"), addr)
        if gap:
            time.sleep(gap)


def test_clean():
    echo = Echo()
    relay = Relay(echo.port)
    a, b = client(), client()
    n = 300
    send_paced(a, relay.addr, n)
    send_paced(b, relay.addr, 10)
    got = drain(a, n, 1.0)
    got_b = drain(b, 10, 1.0)
    time.sleep(0.45)   # let two stat lines pass
    stats = relay.finish()
    seqs = [struct.unpack("!Id", d[:12])[0] for _, d in got]
    check(seqs == list(range(n)), f"clean: all {n} echoes back, in order (got {len(seqs)})")
    check(len(got_b) == 10, "clean: second client served")
    sources = {src for _, _, src in echo.received}
    check(len(sources) == 2 and all(p[1] not in (a.getsockname()[1], b.getsockname()[1]) for p in sources),
          f"clean: the server sees two distinct relay-side clients ({sources})")
    check(stats["clients"] == 2, "clean: JSON clients == 2")
    check(stats["up"]["packets_in"] == n + 10 and stats["up"]["sent"] == n + 10, "clean: JSON up counts")
    check(stats["down"]["sent"] == n + 10 and stats["down"]["dropped_loss"] == 0, "clean: JSON down counts")
    check(relay.rc == 0, "clean: exit 0 on SIGINT")
    check(len(relay.stats_lines) >= 2 and "clients=2" in relay.stats_lines[-1],
          f"clean: periodic stat lines on stderr ({len(relay.stats_lines)})")
    a.close(); b.close(); echo.close()


def test_loss():
    echo = Echo()
    relay = Relay(echo.port, "--loss", "10%", "--up-only", "--seed", "7")
    c = client()
    n = 2000
    send_paced(c, relay.addr, n, gap=0.0004)
    drain(c, n, 0.5)
    stats = relay.finish()
    got = len(echo.received)
    # Binomial(2000, 0.9): sd 13.4; +-75 is 5.6 sd.
    check(1725 <= got <= 1875, f"loss 10%: {got} of {n} arrived, expected 1800 +- 75")
    up = stats["up"]
    check(up["packets_in"] == n, f"loss: relay saw all {n} ({up['packets_in']})")
    check(up["dropped_loss"] + up["delivered"] == n, "loss: dropped + delivered == in")
    check(up["sent"] == got, f"loss: relay sent ({up['sent']}) == server received ({got})")
    check(stats["down"]["dropped_loss"] == 0 and stats["down"]["sent"] == got, "loss: --up-only leaves down clean")
    c.close(); echo.close()


def test_delay():
    echo = Echo()
    relay = Relay(echo.port, "--delay", "30ms")
    c = client()
    one_way, rtts = [], []
    for i in range(15):
        t0 = time.monotonic()
        c.sendto(struct.pack("!Id", i, t0), relay.addr)
        got = drain(c, 1, 2.0)
        if got:
            rtts.append(got[0][0] - t0)
    for arrival, data, _ in echo.received:
        one_way.append(arrival - struct.unpack("!Id", data[:12])[1])
    relay.finish()
    check(len(rtts) == 15, f"delay: 15 round trips ({len(rtts)})")
    check(all(o >= 0.030 for o in one_way) and len(one_way) == 15,
          f"delay: one-way >= 30 ms (min {min(one_way) * 1e3:.2f} ms)")
    check(all(r >= 0.060 for r in rtts), f"delay: round trip >= 60 ms (min {min(rtts) * 1e3:.2f} ms)")
    c.close(); echo.close()


def test_duplicate():
    echo = Echo()
    relay = Relay(echo.port, "--duplicate", "50%", "--up-only")
    c = client()
    n = 400
    send_paced(c, relay.addr, n)
    drain(c, 2 * n, 0.5)
    stats = relay.finish()
    got = len(echo.received)
    up = stats["up"]
    check(150 <= up["duplicated"] <= 250, f"duplicate 50%: {up['duplicated']} of {n} duplicated")
    check(got == n + up["duplicated"], f"duplicate: server got {got} == {n} + duplicated")
    c.close(); echo.close()


def test_rate():
    echo = Echo()
    # 1000-byte packets at 800 kbit/s = 10 ms each; 20 sent at once take >= 200 ms.
    relay = Relay(echo.port, "--rate", "800kbit", "--queue", "100KB", "--up-only")
    c = client()
    t0 = time.monotonic()
    send_paced(c, relay.addr, 20, gap=0, size=1000)
    got = drain(c, 20, 1.0)
    relay.finish()
    span = got[-1][0] - t0 if got else 0
    check(len(got) == 20 and span >= 0.19, f"rate: 20 x 1000 B at 800 kbit/s took {span * 1e3:.0f} ms (>= 190)")
    c.close(); echo.close()


def test_duration():
    echo = Echo()
    port = free_port()
    t0 = time.monotonic()
    p = subprocess.run([RELAY, "--listen", f"{HOST}:{port}", "--to", f"{HOST}:{echo.port}",
                        "--duration", "300ms", "--stats-interval", "0"],
                       capture_output=True, text=True, timeout=10)
    dt = time.monotonic() - t0
    ok = p.returncode == 0 and 0.25 <= dt < 5
    try:
        j = json.loads(p.stdout.strip().splitlines()[-1])
        ok = ok and j["up"]["packets_in"] == 0
    except (ValueError, IndexError, KeyError):
        ok = False
    check(ok, f"--duration 300ms stops by itself with a JSON line (rc {p.returncode}, {dt:.2f} s)")
    echo.close()


def test_bad_options():
    base = ["--listen", "127.0.0.1:1", "--to", "127.0.0.1:2"]
    cases = [
        (base + ["--loss", "5x"], ["--loss", "'5x'", "probability"]),
        (base + ["--delay", "20"], ["--delay", "'20'", "unit"]),
        (base + ["--rate", "10mbps"], ["--rate", "'10mbps'", "ambiguous"]),
        (base + ["--queue", "lots"], ["--queue", "'lots'", "size"]),
        (base + ["--burst", "1%"], ["--burst", "'1%'", "P_GOOD_TO_BAD"]),
        (base + ["--seed", "-3"], ["--seed", "'-3'", "whole number"]),
        (base + ["--frobnicate", "1"], ["--frobnicate", "unknown option"]),
        (base + ["--loss"], ["--loss", "needs a value"]),
        (base + ["--up-only", "--down-only"], ["exclude"]),
        (["--to", "127.0.0.1:2"], ["--listen", "required"]),
        (["--listen", "127.0.0.1", "--to", "127.0.0.1:2"], ["--listen", "'127.0.0.1'", "HOST:PORT"]),
        (["--listen", "127.0.0.1:99999", "--to", "127.0.0.1:2"], ["--listen", "'127.0.0.1:99999'"]),
    ]
    for args, words in cases:
        p = subprocess.run([RELAY, *args], capture_output=True, text=True, timeout=10)
        ok = p.returncode == 2 and all(w in p.stderr for w in words)
        first = (p.stderr.strip().splitlines() or [""])[0][:100]
        check(ok, f"bad options {' '.join(args[-2:])}: exit 2 naming {words} (rc {p.returncode}: {first})")
    p = subprocess.run([RELAY, "--help"], capture_output=True, text=True, timeout=10)
    opts = ["--listen", "--to", "--loss", "--burst", "--delay", "--jitter", "--reorder", "--reorder-delay",
            "--duplicate", "--corrupt", "--rate", "--queue", "--mtu", "--seed", "--both", "--up-only",
            "--down-only", "--stats-interval", "--duration", "--max-clients", "--max-pending"]
    check(p.returncode == 0 and all(o in p.stdout for o in opts), "--help: exit 0, explains every option")


def main():
    if not os.access(RELAY, os.X_OK):
        print("no relay binary at " + RELAY)
        return 1
    for t in (test_bad_options, test_clean, test_loss, test_delay, test_duplicate, test_rate, test_duration):
        try:
            t()
        except Exception as e:   # one broken test must not hide the others
            check(False, f"{t.__name__} raised {e!r}")
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
