#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A client for steering tests. Connects to ADDR:PORT (optionally from
--source), sends a first PDU and prints what happened as one line:

  served-by NODE user USER      the backend's answer (then: bye NODE)
  closed after N.NNs            the server side closed without a word
  reset after N.NNs             the connection was reset

Modes: --user U (mstshash cookie), --token A:P (routing token for A:P),
--nothing (send nothing, wait for the close), --garbage (an HTTP request),
--oversize (a PDU whose TPKT length exceeds any real one), --bulk MIB
(after the answer, send MIB MiB while reading the echo concurrently;
checks every byte and prints "bulk ok N" or "bulk corrupt"), --half-close
(shut down writing after the PDU; expect "bye"), --wait-file F (hold
the connection until F exists, then check the echo). Exit 0 unless the probe
itself failed."""

import argparse
import hashlib
import os
import socket
import struct
import sys
import threading
import time


def pdu(cookie_line):
    body = cookie_line + b"\x01\x00\x08\x00\x03\x00\x00\x00"
    li = 6 + len(body)
    total = 4 + 1 + li
    return struct.pack(">BBH", 3, 0, total) + bytes([li, 0xE0, 0, 0, 0, 0, 0]) + body


def token(addr, port):
    a = socket.inet_aton(addr)
    (le,) = struct.unpack("<I", a)
    swapped = ((port & 0xFF) << 8) | (port >> 8)
    return f"Cookie: msts={le}.{swapped}.0000\r\n".encode()


def readline(s, deadline):
    buf = b""
    while not buf.endswith(b"\n"):
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(1)
        if not chunk:
            return buf, "eof"
        buf += chunk
    return buf, None


def pattern(i, n):
    # Deterministic bytes: block i of the stream.
    return hashlib.sha256(struct.pack("<Q", i)).digest() * (n // 32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--port", type=int, default=3389)
    ap.add_argument("--source")
    ap.add_argument("--user")
    ap.add_argument("--token")
    ap.add_argument("--nothing", action="store_true")
    ap.add_argument("--garbage", action="store_true")
    ap.add_argument("--oversize", action="store_true")
    ap.add_argument("--bulk", type=int, default=0)
    ap.add_argument("--half-close", action="store_true")
    ap.add_argument("--wait-file")
    ap.add_argument("--timeout", type=float, default=10)
    a = ap.parse_args()

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if a.source:
        s.bind((a.source, 0))
    s.settimeout(a.timeout)
    s.connect((a.addr, a.port))
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    try:
        if a.nothing:
            pass
        elif a.garbage:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        elif a.oversize:
            s.sendall(b"\x03\x00\xff\xff" + b"\x00" * 2000)
        elif a.token:
            h, p = a.token.rsplit(":", 1)
            s.sendall(pdu(token(h, int(p))))
        else:
            s.sendall(pdu(f"Cookie: mstshash={a.user}\r\n".encode() if a.user else b""))
        line, end = readline(s, deadline)
    except ConnectionResetError:
        print(f"reset after {time.monotonic() - t0:.2f}s")
        return 0
    except socket.timeout:
        print("timeout")
        return 0
    if end == "eof" and not line:
        print(f"closed after {time.monotonic() - t0:.2f}s")
        return 0
    print(line.decode().strip(), flush=True)

    if a.wait_file:
        # Hold the relayed connection until told (the test reloads the
        # agent meanwhile), then check it still carries data both ways.
        while not os.path.exists(a.wait_file) and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            s.sendall(b"still-here\n")
            echo, _ = readline(s, deadline)
        except OSError as e:
            echo = f"({e.__class__.__name__})".encode()
        print("echo ok" if echo == b"still-here\n" else f"echo lost {echo.decode(errors='replace')}")
    elif a.half_close:
        s.shutdown(socket.SHUT_WR)
        rest, _ = readline(s, deadline)
        print(rest.decode().strip())
    elif a.bulk:
        block = 1 << 20
        ok = [True]
        got = [0]

        def reader():
            i = 0
            buf = b""
            s.settimeout(a.timeout)
            while i < a.bulk:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= block and i < a.bulk:
                    if buf[:block] != pattern(i, block):
                        ok[0] = False
                    buf = buf[block:]
                    i += 1
            got[0] = i

        t = threading.Thread(target=reader)
        t.start()
        for i in range(a.bulk):
            s.sendall(pattern(i, block))
        t.join()
        s.shutdown(socket.SHUT_WR)
        print(f"bulk {'ok' if ok[0] and got[0] == a.bulk else 'corrupt'} {got[0]}")
    s.close()
    return 0


sys.exit(main())
