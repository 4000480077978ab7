# SPDX-License-Identifier: LGPL-2.1-or-later
"""A minimal session host speaking docs/protocol.md, for testing tsclient
before (and independently of) tools/tshost: X.224 Connection Confirm, TLS,
the license exchange with tokens of the real format (tsl1, bound to
SHA-256 of the hardware id; the signature is random, the client never
checks it), logon (one password for everyone, reconnect cookies), one
redirect for chosen users, and a terminal that echoes lines.

  python3 tsproto_server.py --cert C --key K [--port 0] [--farm farm1]
      [--password secret] [--redirect-user bob] [--log events.jsonl]

Prints "PORT <n>" once listening. Every step is appended to --log as one
JSON object per line, so a test can check what the client sent.
"""

import argparse
import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time

T_LICENSE_REQUEST, T_CLIENT_LICENSE_INFO, T_LICENSE_RESPONSE = 1, 2, 3
T_CLIENT_INFO, T_LOGON_RESULT, T_REDIRECT, T_TERMINAL_DATA = 4, 5, 6, 7
T_WINDOW_SIZE, T_DISCONNECT, T_LOGOFF, T_KEEPALIVE, T_ERROR = 8, 9, 10, 11, 12

ISSUER = hashlib.sha256(b"tsproto_server test issuer").digest()


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.tokens = {}  # token id -> {"kind", "device_hash", "validated"}
        self.sessions = {}  # user -> {"id", "connected"}
        self.cookies = {}  # cookie bytes -> user
        self.next_id = 1
        self.logf = open(args.log, "a") if args.log else None

    def log(self, **event):
        if self.logf:
            with self.lock:
                self.logf.write(json.dumps(event) + "\n")
                self.logf.flush()


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def make_token(state, kind, hwid):
    tid = os.urandom(16)
    now = int(time.time() * 1e6)
    days = 90 if kind == 1 else 60
    pack = b"" if kind == 1 else b"pack1"
    body = (bytes([1, kind]) + tid + ISSUER + hashlib.sha256(hwid).digest()
            + struct.pack(">QQ", now, now + days * 86400 * 10**6)
            + bytes([len(pack)]) + pack + bytes([4]) + b"2025")
    with state.lock:
        state.tokens[tid] = {"kind": kind, "device_hash": hashlib.sha256(hwid).digest(),
                             "validated": False}
    return "tsl1." + b64u(body) + "." + b64u(os.urandom(64)), tid


def parse_token(token):
    try:
        prefix, body, _sig = token.split(".")
        if prefix != "tsl1":
            return None
        body = unb64u(body)
        return {"kind": body[1], "id": body[2:18], "device_hash": body[50:82]}
    except Exception:
        return None


class Conn:
    def __init__(self, state, sock, addr):
        self.state = state
        self.raw = sock
        self.addr = addr
        self.tls = None
        self.buf = b""

    # ---- framing ---------------------------------------------------------
    def send(self, ptype, body, flags=0):
        self.tls.sendall(b"TSRP" + struct.pack(">BBHI", 1, ptype, flags, len(body)) + body)

    def recv(self):
        while True:
            if len(self.buf) >= 12:
                magic, ver, ptype, flags, length = struct.unpack(">4sBBHI", self.buf[:12])
                if magic != b"TSRP" or ver != 1:
                    raise ValueError("bad frame")
                if len(self.buf) >= 12 + length:
                    body = self.buf[12:12 + length]
                    self.buf = self.buf[12 + length:]
                    if ptype == T_KEEPALIVE:
                        if not flags & 1:
                            self.send(T_KEEPALIVE, body, flags=1)
                        continue
                    return ptype, body
            data = self.tls.recv(65536)
            if not data:
                return None, None
            self.buf += data

    # ---- the sequence ----------------------------------------------------
    def x224(self):
        hdr = self.recv_plain(4)
        length = struct.unpack(">H", hdr[2:4])[0]
        rest = self.recv_plain(length - 4)
        pdu = hdr + rest
        src_ref = pdu[8:10]
        body = pdu[11:]
        cookie = None
        if b"\r\n" in body and not body.startswith(b"\x01"):
            line, body = body.split(b"\r\n", 1)
            cookie = line.decode()
        self.state.log(event="cr", cookie=cookie, neg=body.hex())
        # TPKT 19, LI 14, CC, DST-REF = the request's SRC-REF, SRC-REF 0x1234,
        # class 0, RDP_NEG_RSP selecting PROTOCOL_SSL.
        self.raw.sendall(bytes.fromhex("03000013 0e d0") + src_ref
                         + bytes.fromhex("1234 00 02 00 0800 01000000"))
        return cookie

    def recv_plain(self, n):
        data = b""
        while len(data) < n:
            chunk = self.raw.recv(n - len(data))
            if not chunk:
                raise EOFError()
            data += chunk
        return data

    @staticmethod
    def s(b):
        return struct.pack(">H", len(b)) + b

    @staticmethod
    def take(body, off):
        n = struct.unpack(">H", body[off:off + 2])[0]
        return body[off + 2:off + 2 + n], off + 2 + n

    def license(self):
        nonce = os.urandom(32)
        farm = self.state.args.farm.encode()
        self.send(T_LICENSE_REQUEST, bytes([1]) + nonce + self.s(farm) + self.s(b"2025"))
        ptype, body = self.recv()
        if ptype != T_CLIENT_LICENSE_INFO:
            raise ValueError(f"expected CLIENT_LICENSE_INFO, got {ptype}")
        if body[:32] != nonce:
            raise ValueError("nonce mismatch")
        hwid, off = self.take(body, 32)
        device, off = self.take(body, off)
        token, off = self.take(body, off)
        token = token.decode()
        self.hwid = hwid
        status, reason, new = 1, 0, None
        t = parse_token(token) if token else None
        known = self.state.tokens.get(t["id"]) if t else None
        if token and (t is None or known is None):
            status, reason = 1, 0x0105  # token-invalid: a new temporary one
        elif t and t["device_hash"] != hashlib.sha256(hwid).digest():
            status, reason = 1, 0x0104  # token-other-device
        elif t and t["kind"] == 1 and known["validated"]:
            status = 2  # upgrade to a Device CAL
        elif t:
            status = 3  # valid
        if status in (1, 2):
            new, tid = make_token(self.state, 2 if status == 2 else 1, hwid)
            self.token_id = tid
        else:
            self.token_id = t["id"] if t else None
        self.state.log(event="license", hwid=hwid.hex(), device=device.decode(), token=token,
                       status=status, reason=reason, new_token=new)
        self.send(T_LICENSE_RESPONSE, bytes([status]) + struct.pack(">H", reason) + self.s(b"")
                  + self.s((new or "").encode()))

    def logon(self, cookie):
        args = self.state.args
        for attempt in range(3):
            ptype, body = self.recv()
            if ptype is None:
                return None
            if ptype != T_CLIENT_INFO:
                raise ValueError(f"expected CLIENT_INFO, got {ptype}")
            rows, cols = struct.unpack(">HH", body[:4])
            user, off = self.take(body, 4)
            password, off = self.take(body, off)
            device, off = self.take(body, off)
            hwid, off = self.take(body, off)
            rcookie, off = self.take(body, off)
            term, off = self.take(body, off)
            user = user.decode()
            with self.state.lock:
                by_cookie = self.state.cookies.pop(rcookie, None) if rcookie else None
            ok = (by_cookie == user) if rcookie else password.decode() == args.password
            self.state.log(event="client-info", user=user, rows=rows, cols=cols, term=term.decode(),
                           hwid_matches=hwid == self.hwid, cookie_used=bool(rcookie), ok=ok)
            if not ok:
                self.send(T_LOGON_RESULT, bytes([2, 0]) + struct.pack(">IH", 0, 0x0201)
                          + self.s(b"wrong user name or password") + self.s(b""))
                continue
            if user in args.redirect_user and cookie and cookie.startswith("Cookie: mstshash="):
                token = args.routing_token.encode()
                self.state.log(event="redirect", user=user, routing_token=args.routing_token)
                self.send(T_REDIRECT, struct.pack(">HI", 0x0301, 0) + self.s(token)
                          + self.s(b"127.0.0.1:1") + self.s(b"") + self.s(b"session elsewhere"))
                return None
            with self.state.lock:
                sess = self.state.sessions.get(user)
                reattached = bool(sess and not sess["connected"])
                if not sess:
                    sess = {"id": self.state.next_id, "connected": False}
                    self.state.next_id += 1
                    self.state.sessions[user] = sess
                sess["connected"] = True
                rc = os.urandom(16)
                self.state.cookies[rc] = user
                if self.token_id in self.state.tokens:
                    self.state.tokens[self.token_id]["validated"] = True
            self.state.log(event="logon", user=user, session_id=sess["id"], reattached=reattached)
            self.send(T_LOGON_RESULT, bytes([1, int(reattached)]) + struct.pack(">IH", sess["id"], 0)
                      + self.s(b"") + self.s(rc))
            return user
        self.send(T_DISCONNECT, struct.pack(">H", 0x0407) + self.s(b"too many attempts"))
        return None

    def session(self, user):
        how = "eof"
        line = b""
        self.send(T_TERMINAL_DATA, b"$ ")
        try:
            while True:
                ptype, body = self.recv()
                if ptype is None:
                    break
                if ptype == T_TERMINAL_DATA:
                    line += body
                    while b"\n" in line:
                        one, line = line.split(b"\n", 1)
                        one = one.rstrip(b"\r")
                        if one == b"exit":
                            self.send(T_LOGOFF, b"")
                            how = "exit"
                            raise StopIteration
                        self.send(T_TERMINAL_DATA, b"echo: " + one + b"\r\n$ ")
                elif ptype == T_WINDOW_SIZE:
                    rows, cols = struct.unpack(">HH", body)
                    self.send(T_TERMINAL_DATA, f"size {rows}x{cols}\r\n".encode())
                elif ptype == T_LOGOFF:
                    self.send(T_LOGOFF, b"")
                    how = "logoff"
                    break
                elif ptype == T_DISCONNECT:
                    how = "disconnect"
                    break
                else:
                    how = f"type-{ptype}"
                    break
        except StopIteration:
            pass
        except (OSError, ssl.SSLError):
            how = "reset"
        with self.state.lock:
            if how in ("logoff", "exit"):
                self.state.sessions.pop(user, None)
            elif user in self.state.sessions:
                self.state.sessions[user]["connected"] = False
        self.state.log(event="end", user=user, how=how)

    def run(self, ctx):
        try:
            self.raw.settimeout(30)
            cookie = self.x224()
            self.tls = ctx.wrap_socket(self.raw, server_side=True)
            self.license()
            user = self.logon(cookie)
            if user:
                self.session(user)
        except Exception as e:  # a test server: log it, drop the connection
            self.state.log(event="error", error=f"{type(e).__name__}: {e}")
        finally:
            try:
                (self.tls or self.raw).close()
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--farm", default="farm1")
    ap.add_argument("--password", default="secret")
    ap.add_argument("--redirect-user", action="append", default=[])
    ap.add_argument("--routing-token", default="16777343.15629.0000")
    ap.add_argument("--log")
    args = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    state = State(args)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.address, args.port))
    ls.listen(512)
    print(f"PORT {ls.getsockname()[1]}", flush=True)
    while True:
        sock, addr = ls.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=Conn(state, sock, addr).run, args=(ctx,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
