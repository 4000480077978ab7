# SPDX-License-Identifier: LGPL-2.1-or-later
"""A directory agent for integration tests: a farm CA and node
certificates made with `tsctl pki`, a tsagent configuration with
roles = directory on a free loopback port and its own UNIX socket, and
HTTP helpers for both (mutual TLS as a node, or the local socket)."""

import http.client
import json
import os
import socket
import ssl
import subprocess
import tempfile

from tsftest import build_dir

TSAGENT = os.path.join(build_dir(), "tsagent")
TSCTL = os.path.join(build_dir(), "tsctl")


def pki(*args):
    subprocess.run([TSCTL, "pki", *args], check=True, capture_output=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answer(conn, method, path, data):
    try:
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data is not None else {})
        r = conn.getresponse()
        text = r.read()
        return r.status, (json.loads(text) if text else None)
    finally:
        conn.close()


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


class Directory:
    """Certificates for `nodes` (plus "dir" for the agent) from a farm CA;
    with `evil`, a second CA that also issues an "n1"."""

    def __init__(self, prefix, heartbeat_lapse, nodes=("n1", "n2"), evil=False):
        self.work = tempfile.mkdtemp(prefix=prefix)
        self.conf = os.path.join(self.work, "tsagent.conf")
        self.ca_dir = os.path.join(self.work, "ca")
        self.evil_dir = os.path.join(self.work, "evil") if evil else None
        self.sock_path = os.path.join(self.work, "run", "directory.sock")
        os.mkdir(self.ca_dir, 0o700)
        pki("init", "--dir", self.ca_dir, "--name", "test", "--days", "2")
        for n in ("dir", *nodes):
            pki("issue", "--dir", self.ca_dir, n, "--ip", "127.0.0.1", "--days", "1")
        if evil:
            os.mkdir(self.evil_dir, 0o700)
            pki("init", "--dir", self.evil_dir, "--name", "evil", "--days", "2")
            pki("issue", "--dir", self.evil_dir, "n1", "--ip", "127.0.0.1", "--days", "1")
        self.port = free_port()
        with open(self.conf, "w") as f:
            f.write(f"""[agent]
roles = directory
node-name = dir
state-directory = {self.work}/state
runtime-directory = {self.work}/run

[directory]
listen = 127.0.0.1:{self.port}
certificate = {self.ca_dir}/dir.crt
key = {self.ca_dir}/dir.key
ca = {self.ca_dir}/ca.crt
heartbeat-lapse = {heartbeat_lapse}
""")

    def start(self, notify_path):
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, TSFARM_LOG_TARGET="stderr")
        return subprocess.Popen([TSAGENT, "--config", self.conf], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def call(self, node, method, path, body=None, raw=None, ca=None, timeout=10):
        """One request as `node` (None: no certificate), its certificate
        from `ca` (default the farm's). Returns (status, parsed body or
        None); an exception from the TLS layer propagates."""
        c = ssl.create_default_context(cafile=os.path.join(self.ca_dir, "ca.crt"))
        if node:
            d = ca or self.ca_dir
            c.load_cert_chain(os.path.join(d, node + ".crt"), os.path.join(d, node + ".key"))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=c, timeout=timeout)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        return _answer(conn, method, path, data)

    def local(self, method, path, body=None):
        """One request on the UNIX socket (operators, as root)."""
        data = json.dumps(body).encode() if body is not None else None
        return _answer(UnixConnection(self.sock_path), method, path, data)
