# SPDX-License-Identifier: LGPL-2.1-or-later
"""Small helpers for tsfarm's integration tests: PASS/FAIL reporting in the
form tests/run.sh counts, deadlines instead of sleeps, and a stand-in for
systemd's notification socket."""

import os
import socket
import sys
import tempfile
import time

_failed = 0


def build_dir():
    d = os.environ.get("TSFARM_BUILD")
    if not d:
        here = os.path.dirname(os.path.abspath(__file__))
        d = os.path.join(here, "..", "..", "..", "build")
    return os.path.abspath(d)


def check(name, ok, why=""):
    """Reports one check; returns ok so callers can stop early."""
    global _failed
    if ok:
        print(f"PASS: {name}", flush=True)
    else:
        _failed += 1
        print(f"FAIL: {name}" + (f" ({why})" if why else ""), flush=True)
    return ok


def skip(name, why):
    print(f"SKIP: {name} ({why})", flush=True)


def finish():
    sys.exit(1 if _failed else 0)


def wait_for(predicate, timeout, interval=0.01):
    """Polls predicate until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


class NotifySocket:
    """Listens where $NOTIFY_SOCKET points, as systemd does for Type=notify."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tsfarm-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def wait(self, field, timeout=5.0):
        """Waits for a datagram carrying `field` (e.g. "READY=1") and returns
        that datagram's fields, or None at the deadline. Earlier datagrams are
        kept in self.messages."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.messages):
                if field in m:
                    del self.messages[: i + 1]
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return None
            self.messages.append(data.decode(errors="replace").split("\n"))

    def close(self):
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)
