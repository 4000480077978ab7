#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""An RDP-like backend for steering tests: accepts on PORT, reads the first
PDU (TPKT length), records "NODE USER" (the mstshash cookie, or "-") to
RECORD, answers "served-by NODE user USER\\n", then echoes until the client
half-closes, answers "bye NODE\\n" and closes. User "resetme" gets a RST
instead of the answer; user "sink" gets its bytes counted and a final
"got N\\n" after EOF (for one-way bulk tests)."""

import socket
import struct
import sys
import threading

node, port, record = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()


def read_exact(c, n):
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve(c):
    try:
        hdr = read_exact(c, 4)
        if not hdr or hdr[0] != 3:
            return
        (length,) = struct.unpack(">H", hdr[2:4])
        body = read_exact(c, length - 4)
        if body is None:
            return
        user = "-"
        marker = b"Cookie: mstshash="
        i = body.find(marker)
        if i >= 0:
            user = body[i + len(marker):body.index(b"\r\n", i)].decode(errors="replace")
        with lock, open(record, "a") as f:
            f.write(f"{node} {user}\n")
        if user == "resetme":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        c.sendall(f"served-by {node} user {user}\n".encode())
        total = 0
        while True:
            data = c.recv(1 << 20)
            if not data:
                break
            total += len(data)
            if user != "sink":
                c.sendall(data)
        c.sendall(f"got {total}\n".encode() if user == "sink" else f"bye {node}\n".encode())
        c.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        c.close()


s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(128)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
