#!/usr/bin/env python3
"""Bulk TCP flows for bench/guaranteed.sh: an ordinary program (run under gsrun
or not) that the benchmark cannot tell from any other.

  gflows.py serve --ports P,P,... --seconds S
      accepts on every port; counts each connection's bytes in 100 ms bins from
      the first byte of the first connection; after S seconds prints one JSON
      object {"PORT": [bytes per bin, ...], ...} (connections to one port summed)
  gflows.py send --host H --ports P,P,... --seconds S
      one connection per port, each written as fast as the socket takes it
      (64 KiB writes) for S seconds, from one process (one thread per flow)
"""
import argparse
import json
import selectors
import socket
import sys
import threading
import time

BIN = 0.1


def serve(ports, seconds):
    sel = selectors.DefaultSelector()
    for p in ports:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", p))
        ls.listen(16)
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, ("listen", p))
    bins = {p: [] for p in ports}
    start = None
    buf = bytearray(1 << 18)
    deadline = time.monotonic() + seconds + 60   # bounded even if nobody comes
    while True:
        now = time.monotonic()
        if start is not None and now - start >= seconds:
            break
        if now > deadline:
            break
        for key, _ in sel.select(timeout=0.05):
            kind, p = key.data
            if kind == "listen":
                c, _ = key.fileobj.accept()
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, ("conn", p))
                continue
            try:
                n = key.fileobj.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n == 0:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                continue
            t = time.monotonic()
            if start is None:
                start = t
            i = int((t - start) / BIN)
            b = bins[p]
            while len(b) <= i:
                b.append(0)
            b[i] += n
    print(json.dumps({str(p): b for p, b in bins.items()}))


def send(host, ports, seconds):
    stop = time.monotonic() + seconds
    chunk = b"\x5a" * 65536

    def one(p):
        s = socket.create_connection((host, p), timeout=10)
        s.settimeout(2)
        try:
            while time.monotonic() < stop:
                try:
                    s.sendall(chunk)
                except socket.timeout:
                    continue
        finally:
            s.close()

    ts = [threading.Thread(target=one, args=(p,)) for p in ports]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["serve", "send"])
    ap.add_argument("--ports", required=True, help="comma-separated TCP ports")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    ports = [int(p) for p in a.ports.split(",")]
    if a.mode == "serve":
        serve(ports, a.seconds)
    else:
        send(a.host, ports, a.seconds)


if __name__ == "__main__":
    sys.exit(main())
