#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Borrowing between license servers (docs/licensing.md, "Borrowing"): two
tsagent license servers on loopback in a network namespace of their own
(multicast on lo), certificates from `tsctl pki`.

Multicast: A (pack of 1) and B (pack of 2) find each other by their
announcements, no peers= anywhere. Device 1 gets A's CAL; devices 2 and 3
get CALs borrowed from B (lender = B, signed by B's key, 'borrow' in A's
audit, lent_to = A at B); device 4 gets no-inventory at both, and nothing
changes; the invariant holds at both; a farm node that is not a peer gets
403 on /lend; a lent CAL is renewed at B; a B that hangs or is gone costs
A at most peer-timeout and changes nothing.

Configured: A2 and B2 with peers = each other, no multicast at all; A2 has
no pack and borrows from B2.

Run as root (a network namespace; the sockets admit root only)."""

import http.client
import json
import os
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))
from tsftest import NotifySocket, check, finish, skip, wait_for  # noqa: E402
from dirtest import TSAGENT, TSCTL, UnixConnection, free_port, pki  # noqa: E402

DAY = 86400 * 10**6

if os.geteuid() != 0:
    skip("licensing-borrow", "needs root")
    sys.exit(77)
if os.environ.get("TSF_BORROW_NETNS") != "1":
    if not shutil.which("unshare") or not shutil.which("ip"):
        skip("licensing-borrow", "needs unshare and ip")
        sys.exit(77)
    env = dict(os.environ, TSF_BORROW_NETNS="1")
    os.execvpe("unshare", ["unshare", "--net", sys.executable, os.path.abspath(__file__)], env)
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)

work = tempfile.mkdtemp(prefix="tsfarm-licensing-borrow-test-")
ca_dir = os.path.join(work, "ca")
os.mkdir(ca_dir, 0o700)
pki("init", "--dir", ca_dir, "--name", "test", "--days", "2")
for n in ("lic-a", "lic-b", "lic-a2", "lic-b2", "ts1"):
    pki("issue", "--dir", ca_dir, n, "--ip", "127.0.0.1", "--days", "1")
ns = NotifySocket()
logs = {}


def answer(conn, method, path, data):
    try:
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data is not None else {})
        r = conn.getresponse()
        text = r.read()
        try:
            return r.status, (json.loads(text) if text else None)
        except ValueError:
            return r.status, text.decode(errors="replace")
    finally:
        conn.close()


class Server:
    def __init__(self, name, extra=""):
        self.name = name
        self.dir = os.path.join(work, name)
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.sock = os.path.join(self.dir, "run", "licensing.sock")
        self.conf = os.path.join(self.dir, "tsagent.conf")
        self.db = os.path.join(self.dir, "state", "licensing.db")
        self.proc = None
        os.makedirs(self.dir)
        self.extra = extra

    def write_conf(self, extra=None):
        with open(self.conf, "w") as f:
            f.write(f"""[agent]
roles = licensing
node-name = {self.name}
state-directory = {self.dir}/state
runtime-directory = {self.dir}/run

[licensing]
listen = {self.endpoint}
certificate = {ca_dir}/{self.name}.crt
key = {ca_dir}/{self.name}.key
ca = {ca_dir}/ca.crt
inventory-refresh = 1s
peer-timeout = 1s
{self.extra if extra is None else extra}
""")

    def start(self):
        self.write_conf()
        env = dict(os.environ, NOTIFY_SOCKET=ns.path, TSFARM_LOG_TARGET="stderr")
        self.proc = subprocess.Popen([TSAGENT, "--config", self.conf], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        return ns.wait("READY=1", timeout=10) is not None

    def stop(self, sig=signal.SIGTERM):
        if not self.proc:
            return None
        self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        logs[self.name] = logs.get(self.name, "") + err
        rc, self.proc = self.proc.returncode, None
        return rc

    def call(self, node, method, path, body=None, timeout=10):
        c = ssl.create_default_context(cafile=os.path.join(ca_dir, "ca.crt"))
        c.load_cert_chain(os.path.join(ca_dir, node + ".crt"), os.path.join(ca_dir, node + ".key"))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=c, timeout=timeout)
        return answer(conn, method, path, json.dumps(body).encode() if body is not None else None)

    def local(self, method, path, body=None):
        return answer(UnixConnection(self.sock), method, path,
                      json.dumps(body).encode() if body is not None else None)

    def report(self):
        st, b = self.local("GET", "/v1/report?format=json")
        assert st == 200, (st, b)
        return b

    def install(self, pack, count):
        st, b = self.local("POST", "/v1/packs", {"id": pack, "product_version": "2025", "count": count})
        return st == 200

    def peers(self):
        st, b = self.local("GET", "/v1/peers")
        return b["peers"] if st == 200 else []

    def peer_with_cals(self, other, minimum=1):
        """True once this server's last inventory of `other` shows at
        least `minimum` CALs available."""
        for p in self.peers():
            if p["name"] == other.name and p["reachable"] and p["inventory"]:
                return sum(k["available"] for k in p["inventory"]["packs"]) >= minimum
        return False

    def metrics(self):
        conn = UnixConnection(self.sock)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        return text

    def audit(self, action):
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as sql:
            return sql.execute("SELECT token_id, pack_id, device, detail FROM audit WHERE action = ? ORDER BY seq",
                               (action,)).fetchall()

    def public_key(self):
        return os.path.join(self.dir, "state", "license-signing.pub")


def invariant(rep):
    return all(p["available"] + p["issued"] == p["count"] for p in rep["packs"])


def hwid(n):
    return f"{n:02x}" * 16


def device_cal(server, n, node="ts1"):
    """First contact, logon, CAL, as a terminal server drives it."""
    dev = {"hardware_id": hwid(n), "device_name": f"PC-{n}"}
    st, t = server.call(node, "POST", "/v1/licenses/temporary", dev)
    assert st == 200, (st, t)
    st, v = server.call(node, "POST", "/v1/licenses/validate", {"token_id": t["token_id"], "hardware_id": hwid(n)})
    assert st == 200, (st, v)
    return server.call(node, "POST", "/v1/licenses/cal", dict(dev, user_name=f"user{n}",
                                                             presented_token_id=t["token_id"]))


def trust_dir(name, *servers):
    d = os.path.join(work, name)
    os.mkdir(d)
    for s in servers:
        shutil.copy(s.public_key(), os.path.join(d, s.name + ".pem"))
    return d


def verify(token, n, trust):
    p = subprocess.run([TSCTL, "license", "verify", token, "--trust", trust, "--hardware-id", hwid(n), "--json"],
                       capture_output=True, text=True, timeout=30)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        return p.returncode, p.stdout + p.stderr


def key_id(server):
    st, b = server.call("ts1", "GET", "/v1/inventory")
    return b["key_id"] if st == 200 else None


# ---- multicast: A and B find each other ------------------------------------

multicast = "discovery-interface = lo\nannounce-interval = 500ms\n"
A = Server("lic-a", multicast)
B = Server("lic-b", multicast)
if not (check("license server A starts", A.start()) and check("license server B starts", B.start())):
    A.stop()
    B.stop()
    print(logs)
    finish()
check("packs: A has 1, B has 2", A.install("PA", 1) and B.install("PB", 2))
check("A learns B from its announcements and reads its inventory (no peers= configured)",
      wait_for(lambda: A.peer_with_cals(B, 2), 10), json.dumps(A.peers()))
check("B learns A likewise", wait_for(lambda: B.peer_with_cals(A, 1), 10), json.dumps(B.peers()))
pa = A.peers()
check("A does not list itself: one peer, multicast origin, key id = B's",
      len(pa) == 1 and pa[0]["origins"] == ["multicast"] and pa[0]["key_id"] == key_id(B)
      and pa[0]["announced_name"] == "lic-b" and pa[0]["endpoint"] == B.endpoint, json.dumps(pa))
trust_a = trust_dir("trust-a", A)
trust_b = trust_dir("trust-b", B)

st, c1 = device_cal(A, 1)
check("device 1 gets A's own CAL (no lender)", st == 200 and c1["pack"] == "PA" and "lender" not in c1, f"{st} {c1}")

st, c2 = device_cal(A, 2)
check("device 2: A has none left, the CAL is borrowed from B (lender lic-b, pack PB)",
      st == 200 and c2.get("lender") == "lic-b" and c2["pack"] == "PB" and c2["kind"] == "device-cal"
      and c2.get("lent_to") == "lic-a", f"{st} {c2}")
rc, v = verify(c2["token"], 2, trust_b)
check("the borrowed CAL verifies offline against B's key", rc == 0 and v["verdict"] == "ok"
      and v["token"]["issuer_key_id"] == key_id(B) and v["token"]["token_id"] == c2["token_id"], f"{rc} {v}")
rc, v = verify(c2["token"], 2, trust_a)
check("... and is unknown-issuer against A's key alone (B signed it, not A)",
      rc == 1 and v["verdict"] == "unknown-issuer", f"{rc} {v}")
rows = A.audit("borrow")
check("A's audit log has 'borrow' naming the token, B's pack, the device and B",
      len(rows) == 1 and rows[0][0].hex() == c2["token_id"] and rows[0][1] == "PB" and rows[0][2] == "PC-2"
      and "borrowed from lic-b" in rows[0][3] and "ts1" in rows[0][3], f"{rows}")
st, b = B.local("GET", f"/v1/issued?hardware_id={hwid(2)}")
rec = b["tokens"][0] if st == 200 and b["tokens"] else {}
check("B's record of it: active, lent_to lic-a, device PC-2",
      rec.get("token_id") == c2["token_id"] and rec.get("lent_to") == "lic-a" and rec.get("state") == "active"
      and rec.get("device_name") == "PC-2", f"{st} {b}")
rows = B.audit("lend")
check("B's audit log has 'lend' to lic-a", len(rows) == 1 and "lent to lic-a" in rows[0][3], f"{rows}")
check("A keeps no record of the borrowed CAL (it lives at B)",
      all(t["token_id"] != c2["token_id"] for t in A.report()["tokens"]))
st, again = device_cal(A, 2)
check("device 2 asking again gets the same borrowed CAL (B lends it again, idempotent)",
      st == 200 and again["token"] == c2["token"] and again.get("lender") == "lic-b", f"{st} {again}")

st, c3 = device_cal(A, 3)
check("device 3: borrowed from B too", st == 200 and c3.get("lender") == "lic-b", f"{st} {c3}")

check("A's inventory of B catches up: none available",
      wait_for(lambda: any(p["inventory"] and sum(k["available"] for k in p["inventory"]["packs"]) == 0
                           for p in A.peers()), 5), json.dumps(A.peers()))
rep_a, rep_b = A.report(), B.report()
t0 = time.monotonic()
st, c4 = device_cal(A, 4)
check("device 4 at A: 409 no-inventory, keeps its temporary token",
      st == 409 and c4["error"] == "no-inventory", f"{st} {c4}")
st, c4b = device_cal(B, 4)
check("device 4 at B: 409 no-inventory as well (A has none to lend)",
      st == 409 and c4b["error"] == "no-inventory", f"{st} {c4b}")
rep_a2, rep_b2 = A.report(), B.report()
strip = lambda r: [t for t in r["tokens"] if t["hardware_id"] != hwid(4)]  # noqa: E731
check("... and no CAL moved at either (only device 4's temporary tokens are new)",
      rep_a2["packs"] == rep_a["packs"] and rep_b2["packs"] == rep_b["packs"]
      and strip(rep_a2) == rep_a["tokens"] and strip(rep_b2) == rep_b["tokens"])
check("the invariant available + issued = count holds at A and at B",
      invariant(rep_a2) and invariant(rep_b2) and rep_b2["packs"][0]["issued"] == 2
      and rep_b2["packs"][0]["available"] == 0, f"{rep_a2['packs']} {rep_b2['packs']}")

# Who may borrow.
st, b = B.call("ts1", "POST", "/v1/licenses/lend", {"hardware_id": hwid(9), "device_name": "PC-9",
                                                    "user_name": "x"})
check("a farm node that is not a license server: 403 not-a-peer on /v1/licenses/lend",
      st == 403 and b["error"] == "not-a-peer", f"{st} {b}")
st, b = B.local("POST", "/v1/licenses/lend", {"hardware_id": hwid(9), "device_name": "PC-9", "user_name": "x"})
check("... and over the local socket (no peer name): 403", st == 403 and b["error"] == "not-a-peer", f"{st} {b}")
st, b = B.call("lic-a", "POST", "/v1/licenses/lend", {"hardware_id": "zz", "device_name": "PC-9", "user_name": "x"})
check("a peer's malformed lend request: 400", st == 400 and b["error"] == "invalid-request", f"{st} {b}")
check("... nothing changed at B", B.report() == rep_b2)

m_a, m_b = A.metrics(), B.metrics()
check("A's /metrics: 3 CALs relayed (device 2's twice), peers known 1 and reachable 1, 1 no-inventory",
      "tsfarm_licensing_cals_borrowed_total 3" in m_a and "tsfarm_licensing_peers_known 1" in m_a
      and "tsfarm_licensing_peers_reachable 1" in m_a and "tsfarm_licensing_no_inventory_total 1" in m_a, m_a)
check("B's /metrics: 2 lent", "tsfarm_licensing_cals_lent_total 2" in m_b, m_b)

# Renewal of a lent CAL: the device presents it to B, its issuer.
st, b = B.call("ts1", "POST", "/v1/licenses/cal", {"hardware_id": hwid(2), "device_name": "PC-2",
                                                   "user_name": "user2", "presented_token_id": c2["token_id"]})
check("renewing the lent CAL at B 52+ days early: 409 too-early", st == 409 and b["error"] == "too-early",
      f"{st} {b}")
with sqlite3.connect(B.db) as sql:
    soon = int(time.time() * 10**6) + 3 * DAY
    sql.execute("UPDATE tokens SET expires = ? WHERE token_id = ?", (soon, bytes.fromhex(c2["token_id"])))
st, r2 = B.call("ts1", "POST", "/v1/licenses/cal", {"hardware_id": hwid(2), "device_name": "PC-2",
                                                    "user_name": "user2", "presented_token_id": c2["token_id"]})
check("3 days before expiry B renews it: a new CAL from PB, renewed_from = the lent one",
      st == 200 and r2["renewed_from"] == c2["token_id"] and r2["pack"] == "PB", f"{st} {r2}")
st, b = B.local("GET", f"/v1/issued?hardware_id={hwid(2)}&state=active")
check("... still lent to lic-a", st == 200 and len(b["tokens"]) == 1 and b["tokens"][0]["lent_to"] == "lic-a",
      f"{st} {b}")
rc, v = verify(r2["token"], 2, trust_b)
check("... and it verifies against B's key", rc == 0 and v["verdict"] == "ok", f"{rc} {v}")
check("the invariant still holds at B", invariant(B.report()))

# B hangs, then B is gone: A answers no-inventory within peer-timeout (1 s).
check("a new pack at B (PB2 of 1) shows in A's inventory of B",
      B.install("PB2", 1) and wait_for(lambda: A.peer_with_cals(B, 1), 5), json.dumps(A.peers()))
rep_a = A.report()
B.proc.send_signal(signal.SIGSTOP)
t0 = time.monotonic()
st, c5 = device_cal(A, 5)
took = time.monotonic() - t0
check(f"B stopped (SIGSTOP): A answers device 5 no-inventory after the 1 s peer-timeout ({took:.2f} s)",
      st == 409 and c5["error"] == "no-inventory" and took < 1.8, f"{st} {c5}")
peer = A.peers()[0]
check("... A marks B unreachable with the reason", not peer["reachable"] and peer["last_error"], json.dumps(peer))
B.proc.send_signal(signal.SIGCONT)
check("B answers again: reachable once more",
      wait_for(lambda: any(p["reachable"] for p in A.peers()), 5), json.dumps(A.peers()))
st, b = B.local("GET", f"/v1/issued?hardware_id={hwid(5)}&state=active")
held = b["tokens"] if st == 200 else []
check("B, resumed, had lent device 5 a CAL whose answer A gave up on",
      len(held) == 1 and held[0]["lent_to"] == "lic-a", f"{st} {b}")
st, c5 = device_cal(A, 5)
check("device 5 asking again gets that very CAL: A asks B first (in doubt) although B shows none available",
      st == 200 and c5.get("lender") == "lic-b" and held and c5["token_id"] == held[0]["token_id"], f"{st} {c5}")
rep_a = A.report()
check("a third pack at B (PB3 of 1) shows in A's inventory of B",
      B.install("PB3", 1) and wait_for(lambda: A.peer_with_cals(B, 1), 5), json.dumps(A.peers()))
B.stop(signal.SIGKILL)
t0 = time.monotonic()
st, c6 = device_cal(A, 6)
took = time.monotonic() - t0
check(f"B killed: A answers device 6 no-inventory at once ({took:.2f} s)",
      st == 409 and c6["error"] == "no-inventory" and took < 1.0, f"{st} {c6}")
rep_a2 = A.report()
check("... and nothing changed at A but the new devices' temporary tokens",
      rep_a2["packs"] == rep_a["packs"] and invariant(rep_a2)
      and [t for t in rep_a2["tokens"] if t["hardware_id"] != hwid(6)] == rep_a["tokens"])
check("A exits cleanly on SIGTERM (peers, announcer and calls freed)", A.stop() == 0, logs.get("lic-a", "")[-2000:])

# ---- configured peers, no multicast ---------------------------------------

A2 = Server("lic-a2")
B2 = Server("lic-b2")
A2.extra = f"discover-peers = no\nannounce = no\npeers = {B2.endpoint}\n"
B2.extra = f"discover-peers = no\nannounce = no\npeers = {A2.endpoint}\n"
if check("configured peers: A2 and B2 start (announce = no, discover-peers = no)", A2.start() and B2.start()):
    check("B2 has a pack of 1", B2.install("PB", 1))
    check("A2 reads B2's inventory (a configured peer: name from the inventory)",
          wait_for(lambda: A2.peer_with_cals(B2, 1), 10), json.dumps(A2.peers()))
    p = A2.peers()
    check("... origin config, no announced name", len(p) == 1 and p[0]["origins"] == ["config"]
          and p[0]["announced_name"] is None and p[0]["name"] == "lic-b2", json.dumps(p))
    check("B2 knows A2 by its inventory likewise",
          wait_for(lambda: any(x["name"] == "lic-a2" and x["reachable"] for x in B2.peers()), 10),
          json.dumps(B2.peers()))
    st, c = device_cal(A2, 1)
    check("A2 has no pack: device 1's CAL is borrowed from B2", st == 200 and c.get("lender") == "lic-b2",
          f"{st} {c}")
    trust_b2 = trust_dir("trust-b2", B2)
    rc, v = verify(c["token"], 1, trust_b2) if st == 200 else (None, None)
    check("... and verifies against B2's key", rc == 0 and v["verdict"] == "ok", f"{rc} {v}")
    st, b = B2.call("lic-b", "POST", "/v1/licenses/lend", {"hardware_id": hwid(7), "device_name": "PC-7",
                                                           "user_name": "x"})
    check("a license server B2 does not know (lic-b, neither configured nor announced): 403 not-a-peer",
          st == 403 and b["error"] == "not-a-peer", f"{st} {b}")
    check("the invariant holds at B2", invariant(B2.report()))
for s in (A2, B2):
    rc = s.stop()
    check(f"{s.name} exits cleanly", rc == 0, logs.get(s.name, "")[-2000:])

ns.close()
shutil.rmtree(work)
finish()
