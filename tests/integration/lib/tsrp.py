# SPDX-License-Identifier: LGPL-2.1-or-later
"""A small client of the tsfarm protocol (docs/protocol.md) for tests: the
X.224 Connection Request and Confirm, TLS, and TSRP frames. Encodes and
decodes only what a test needs; nothing here is clever on purpose, so a
test can also send what a real client never would."""

import os
import socket
import ssl
import struct
import time

LICENSE_REQUEST, CLIENT_LICENSE_INFO, LICENSE_RESPONSE, CLIENT_INFO = 1, 2, 3, 4
LOGON_RESULT, REDIRECT, TERMINAL_DATA, WINDOW_SIZE = 5, 6, 7, 8
DISCONNECT, LOGOFF, KEEPALIVE, ERROR = 9, 10, 11, 12
NAMES = {1: "license-request", 2: "client-license-info", 3: "license-response", 4: "client-info",
         5: "logon-result", 6: "redirect", 7: "terminal-data", 8: "window-size", 9: "disconnect",
         10: "logoff", 11: "keepalive", 12: "error"}
LICENSE_STATUS = {1: "new-license", 2: "upgrade", 3: "valid", 4: "error"}
LOGON_STATUS = {1: "ok", 2: "wrong-password", 3: "no-license", 4: "denied", 5: "error"}
REASONS = {0: "none", 0x0101: "grace-period", 0x0102: "no-inventory", 0x0103: "token-expired",
           0x0104: "token-other-device", 0x0105: "token-invalid", 0x0108: "no-license-server",
           0x0109: "renewed", 0x010A: "license-server-error", 0x0201: "bad-credentials",
           0x0202: "account-denied", 0x0204: "auth-error", 0x0205: "bad-reconnect-cookie",
           0x0301: "session-elsewhere", 0x0401: "user-request", 0x0403: "replaced",
           0x0405: "shutdown", 0x0406: "logon-timeout", 0x0407: "too-many-attempts",
           0x0408: "peer-silent", 0x0501: "malformed", 0x0502: "unsupported-version",
           0x0503: "unexpected-pdu", 0x0504: "too-large", 0x0505: "timeout", 0x0506: "internal",
           0x0507: "nonce-mismatch"}


def cr_bytes(user=None, routing_token=None, protocols=1):
    """TPKT + X.224 Connection Request with a cookie line and RDP_NEG_REQ."""
    line = b""
    if routing_token is not None:
        line = b"Cookie: msts=" + routing_token.encode() + b"\r\n"
    elif user is not None:
        line = b"Cookie: mstshash=" + user.encode() + b"\r\n"
    neg = struct.pack("<BBHI", 1, 0, 8, protocols)
    x224 = bytes([0xE0, 0, 0, 0, 0, 0]) + line + neg
    li = len(x224)
    return struct.pack(">BBH", 3, 0, 4 + 1 + li) + bytes([li]) + x224


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(b)) + b


def frame(ptype, body=b"", flags=0, version=1):
    return b"TSRP" + struct.pack(">BBHI", version, ptype, flags, len(body)) + body


class Reader:
    def __init__(self, body):
        self.b, self.o = body, 0

    def u8(self):
        self.o += 1
        return self.b[self.o - 1]

    def u16(self):
        self.o += 2
        return struct.unpack(">H", self.b[self.o - 2:self.o])[0]

    def u32(self):
        self.o += 4
        return struct.unpack(">I", self.b[self.o - 4:self.o])[0]

    def u64(self):
        self.o += 8
        return struct.unpack(">Q", self.b[self.o - 8:self.o])[0]

    def raw(self, n):
        self.o += n
        return self.b[self.o - n:self.o]

    def bin(self):
        return self.raw(self.u16())

    def str(self):
        return self.bin().decode()


def decode(ptype, flags, body):
    """A frame's body as a dict with its 'type' name."""
    r = Reader(body)
    d = {"type": NAMES.get(ptype, ptype)}
    if ptype == LICENSE_REQUEST:
        d.update(max_version=r.u8(), nonce=r.raw(32), farm_id=r.str(), product_version=r.str())
    elif ptype == LICENSE_RESPONSE:
        st = r.u8()
        d.update(status=LICENSE_STATUS.get(st, st), reason=REASONS.get(r.u16(), "?"),
                 reason_text=r.str(), token=r.str())
    elif ptype == LOGON_RESULT:
        st = r.u8()
        d.update(status=LOGON_STATUS.get(st, st), reattached=bool(r.u8()), session_id=r.u32(),
                 reason=REASONS.get(r.u16(), "?"), reason_text=r.str(), cookie=r.bin())
    elif ptype == REDIRECT:
        d.update(reason=REASONS.get(r.u16(), "?"), session_id=r.u32(), routing_token=r.str(),
                 target=r.str(), user=r.str(), reason_text=r.str())
    elif ptype == TERMINAL_DATA:
        d.update(data=body)
    elif ptype in (DISCONNECT, ERROR):
        d.update(reason=REASONS.get(r.u16(), "?"), reason_text=r.str())
    elif ptype == KEEPALIVE:
        d.update(echo=r.u64(), reply=bool(flags & 1))
    return d


class Closed(Exception):
    pass


class Client:
    """One connection. connect() does X.224 and TLS; then send()/recv()."""

    def __init__(self, host, port, user=None, routing_token=None, cafile=None, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.sendall(cr_bytes(user, routing_token))
        cc = self._read_exact_raw(self.sock, 11)
        length = struct.unpack(">H", cc[2:4])[0]
        if length > 11:
            cc += self._read_exact_raw(self.sock, length - 11)
        self.cc = cc
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cafile:
            ctx.load_verify_locations(cafile)
            ctx.check_hostname = False
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self.tls = ctx.wrap_socket(self.sock, server_hostname=host)
        self.buf = b""

    @staticmethod
    def _read_exact_raw(sock, n):
        b = b""
        while len(b) < n:
            chunk = sock.recv(n - len(b))
            if not chunk:
                raise Closed("closed during X.224")
            b += chunk
        return b

    def send_raw(self, data):
        self.tls.sendall(data)

    def send(self, ptype, body=b"", flags=0):
        self.tls.sendall(frame(ptype, body, flags))

    def recv(self, timeout=10):
        """The next frame, decoded; raises Closed at the end of the stream."""
        self.tls.settimeout(timeout)
        while True:
            if len(self.buf) >= 12:
                ptype, flags, length = self.buf[5], struct.unpack(">H", self.buf[6:8])[0], \
                    struct.unpack(">I", self.buf[8:12])[0]
                if len(self.buf) >= 12 + length:
                    body, self.buf = self.buf[12:12 + length], self.buf[12 + length:]
                    return decode(ptype, flags, body)
            try:
                chunk = self.tls.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"no frame in {timeout:.1f}s")
            except (ssl.SSLError, ConnectionError, OSError) as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("end of stream")
            self.buf += chunk

    def recv_until(self, pred, timeout=10):
        """Frames until pred(frame) is true; returns (frame, all frames seen)."""
        seen = []
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching frame in {timeout}s; saw {[f['type'] for f in seen]}")
            f = self.recv(left)
            seen.append(f)
            if f["type"] == "keepalive" and not f["reply"]:
                self.send(KEEPALIVE, struct.pack(">Q", f["echo"]), flags=1)
            if pred(f):
                return f, seen

    def closed_soon(self, timeout=5):
        """True when the server closes the stream within timeout (frames before are skipped)."""
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                self.recv(end - time.monotonic())
        except Closed:
            return True
        except TimeoutError:
            return False
        return False

    def license(self, hwid, device, token=""):
        req = self.recv()
        assert req["type"] == "license-request", req
        self.request = req
        self.send(CLIENT_LICENSE_INFO, req["nonce"] + s(hwid) + s(device) + s(token))
        return self.recv(70)

    def client_info(self, user, password, device, hwid, cookie=b"", rows=24, cols=80, term="xterm"):
        self.send(CLIENT_INFO, struct.pack(">HH", rows, cols) + s(user) + s(password) + s(device) + s(hwid)
                  + s(cookie) + s(term))
        f, _ = self.recv_until(lambda f: f["type"] in ("logon-result", "redirect", "error", "disconnect"), 60)
        return f

    def type(self, text):
        self.send(TERMINAL_DATA, text.encode())

    def read_until(self, needle, timeout=10, regex=None):
        """Terminal output until it contains needle (or matches the bytes
        regex); returns all of it."""
        out = b""
        end = time.monotonic() + timeout
        while (regex.search(out) is None) if regex else (needle.encode() not in out):
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{needle!r} not seen in {timeout}s; got {out[-400:]!r}")
            f = self.recv(left)
            if f["type"] == "terminal-data":
                out += f["data"]
            elif f["type"] == "keepalive" and not f["reply"]:
                self.send(KEEPALIVE, struct.pack(">Q", f["echo"]), flags=1)
            elif f["type"] in ("logoff", "error", "disconnect"):
                raise Closed(f"{f} while waiting for {needle!r}; got {out[-400:]!r}")
        return out.decode(errors="replace")

    def drop(self):
        """Vanish like a lost network: no DISCONNECT, no close_notify."""
        try:
            self.tls.shutdown(socket.SHUT_RDWR)  # the socket's, without close_notify
        except OSError:
            pass
        self.tls.close()

    def close(self):
        try:
            self.tls.close()
        except OSError:
            pass


def random_hwid():
    return os.urandom(32)
