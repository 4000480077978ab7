#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The licensing role served by tsagent (docs/licensing.md, "The API"): a
license server on loopback with certificates from `tsctl pki`; key packs
installed with `tsctl license`; terminal servers (farm nodes over mutual
TLS) asking for temporary tokens, validating them and getting Device CALs,
the tokens checked offline with `tsctl license verify`; inventory running
out, renewal too early, the revocation bound, socket-only routes, refused
peers, malformed and oversized requests that change nothing, and a restart
after SIGKILL that loses nothing. Run as root (the socket admits root
only)."""

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
from tsftest import NotifySocket, check, finish  # noqa: E402
from dirtest import TSAGENT, TSCTL, UnixConnection, free_port, pki  # noqa: E402

DAY = 86400 * 10**6

work = tempfile.mkdtemp(prefix="tsfarm-licensing-test-")
conf = os.path.join(work, "tsagent.conf")
ca_dir = os.path.join(work, "ca")
evil_dir = os.path.join(work, "evil")
state = os.path.join(work, "state")
sock_path = os.path.join(work, "run", "licensing.sock")
os.mkdir(ca_dir, 0o700)
os.mkdir(evil_dir, 0o700)
pki("init", "--dir", ca_dir, "--name", "test", "--days", "2")
for n in ("lic", "ts1", "ts2"):
    pki("issue", "--dir", ca_dir, n, "--ip", "127.0.0.1", "--days", "1")
pki("init", "--dir", evil_dir, "--name", "evil", "--days", "2")
pki("issue", "--dir", evil_dir, "ts1", "--ip", "127.0.0.1", "--days", "1")
port = free_port()
with open(conf, "w") as f:
    f.write(f"""[agent]
roles = licensing
node-name = lic
state-directory = {state}
runtime-directory = {work}/run

[licensing]
listen = 127.0.0.1:{port}
certificate = {ca_dir}/lic.crt
key = {ca_dir}/lic.key
ca = {ca_dir}/ca.crt
# A server alone on loopback: nothing to announce or learn on the host's network.
announce = no
discover-peers = no
""")


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


def call(node, method, path, body=None, raw=None, ca=None):
    """One request as farm node `node` over mutual TLS (None: no
    certificate), its certificate from `ca` (default the farm's)."""
    c = ssl.create_default_context(cafile=os.path.join(ca_dir, "ca.crt"))
    if node:
        d = ca or ca_dir
        c.load_cert_chain(os.path.join(d, node + ".crt"), os.path.join(d, node + ".key"))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=c, timeout=10)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return answer(conn, method, path, data)


def local(method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return answer(UnixConnection(sock_path), method, path, data)


def tsctl(*args):
    return subprocess.run([TSCTL, *args], capture_output=True, text=True, timeout=30)


def lic(*args):
    return tsctl("license", *args, "--licensing-socket", sock_path)


def lic_json(*args):
    p = lic(*args, "--json")
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        return p.returncode, p.stdout + p.stderr


def report():
    st, b = local("GET", "/v1/report?format=json")
    assert st == 200, (st, b)
    return b


def invariant_holds(rep):
    return all(p["available"] + p["issued"] == p["count"] for p in rep["packs"])


def hwid(n):
    return f"{n:02x}" * 16


def device(n, name=None, user="alice"):
    return {"hardware_id": hwid(n), "device_name": name or f"PC-{n}", "user_name": user}


def temporary(n, node="ts1"):
    return call(node, "POST", "/v1/licenses/temporary", {k: v for k, v in device(n).items() if k != "user_name"})


def validate(token_id, n, node="ts1"):
    return call(node, "POST", "/v1/licenses/validate", {"token_id": token_id, "hardware_id": hwid(n)})


def cal(n, presented, node="ts1", user="alice"):
    return call(node, "POST", "/v1/licenses/cal", dict(device(n, user=user), presented_token_id=presented))


def verify(token, n, trust):
    p = tsctl("license", "verify", token, "--trust", trust, "--hardware-id", hwid(n), "--json")
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        return p.returncode, p.stdout + p.stderr


# Configuration refused before anything starts.
bad = os.path.join(work, "bad.conf")
with open(bad, "w") as f:
    f.write(f"[agent]\nroles = licensing\n[licensing]\ncertificate = {ca_dir}/lic.crt\n")
p = subprocess.run([TSAGENT, "--config", bad, "--check-config"], capture_output=True, text=True)
check("[licensing] certificate without key and ca is refused",
      p.returncode == 1 and "certificate, key and ca go together" in p.stderr, p.stderr)

ns = NotifySocket()
logs = []


def start_agent():
    env = dict(os.environ, NOTIFY_SOCKET=ns.path, TSFARM_LOG_TARGET="stderr")
    a = subprocess.Popen([TSAGENT, "--config", conf], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    return a, ns.wait("READY=1", timeout=10) is not None


def stop_agent(a, sig=signal.SIGTERM):
    a.send_signal(sig)
    try:
        _, err = a.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        a.kill()
        _, err = a.communicate()
    logs.append(err)
    return a.returncode


agent, ready = start_agent()
if not check("tsagent with roles = licensing sends READY=1", ready, "no READY=1"):
    agent.kill()
    print(agent.communicate()[1])
    finish()

# The signing key, made at first start.
key_file = os.path.join(state, "license-signing.key")
pub_file = os.path.join(state, "license-signing.pub")
check("the signing key is generated with mode 0600",
      os.path.exists(key_file) and os.stat(key_file).st_mode & 0o777 == 0o600)
check("its public key is written beside it (0644)",
      os.path.exists(pub_file) and os.stat(pub_file).st_mode & 0o777 == 0o644)
trust = os.path.join(work, "trust")
os.mkdir(trust)
shutil.copy(pub_file, os.path.join(trust, "lic.pem"))
other_trust = os.path.join(work, "other-trust")
os.mkdir(other_trust)
subprocess.run(f"openssl genpkey -algorithm ed25519 | openssl pkey -pubout -out {other_trust}/other.pem",
               shell=True, check=True, capture_output=True)

# Packs, by the operator.
p = lic("install-pack", "P3", "--version", "2025", "--count", "3")
row = next((l.split() for l in p.stdout.splitlines() if l.startswith("P3 ")), [])
check("tsctl license install-pack P3 --count 3 prints the pack",
      p.returncode == 0 and row[:8] == ["P3", "2025", "3", "3", "0", "0", "0", "0"], p.stdout + p.stderr)
p = lic("install-pack", "P3", "--version", "2025", "--count", "3")
check("installing the same pack id again is refused (exit 1, reason)",
      p.returncode == 1 and "installed already" in p.stderr, p.stdout + p.stderr)
p = lic("install-pack", "P4")
check("install-pack without --version and --count is a usage error", p.returncode == 2, p.stderr)
rc, doc = lic_json("packs")
check("tsctl license packs --json: one pack of 3, all available",
      rc == 0 and len(doc["packs"]) == 1 and doc["packs"][0]["available"] == 3 and doc["totals"]["count"] == 3,
      f"{rc} {doc}")

st, inv = call("ts1", "GET", "/v1/inventory")
check("GET /v1/inventory over TLS names the server, its key id and the pack",
      st == 200 and inv["server"] == "lic" and len(inv["key_id"]) == 64
      and inv["packs"] == [{"id": "P3", "product_version": "2025", "count": 3, "available": 3}], f"{st} {inv}")

# Device 1: a temporary token, asked twice.
st, t1 = temporary(1)
check("a farm node gets a temporary token for a device",
      st == 200 and t1["token"].startswith("tsl1.") and len(t1["token_id"]) == 32 and t1["kind"] == "temporary"
      and t1["expires_usec"] - t1["issued_usec"] == 90 * DAY, f"{st} {t1}")
rc, v = verify(t1["token"], 1, trust)
check("tsctl license verify: the token is ok against the server's key, token id = the record's",
      rc == 0 and v["verdict"] == "ok" and v["token"]["token_id"] == t1["token_id"]
      and v["token"]["kind"] == "temporary" and v["token"]["issuer_key_id"] == inv["key_id"], f"{rc} {v}")
rc, v = verify(t1["token"], 2, trust)
check("... other-device for another hardware id (exit 1)", rc == 1 and v["verdict"] == "other-device", f"{rc} {v}")
rc, v = verify(t1["token"], 1, other_trust)
check("... unknown-issuer against a trust dir without the server's key (exit 1)",
      rc == 1 and v["verdict"] == "unknown-issuer" and v["claimed"]["issuer_key_id"] == inv["key_id"],
      f"{rc} {v}")
p = tsctl("license", "verify", t1["token"][:-2] + ("AA" if t1["token"][-2:] != "AA" else "BA"), "--trust",
          trust, "--hardware-id", hwid(1))
check("... an altered token is not ok (exit 1)", p.returncode == 1 and "verdict" in p.stdout
      and "ok" not in p.stdout.split(), p.stdout + p.stderr)
st, again = temporary(1, node="ts2")
check("the same device asking again (through another node) gets the same token",
      st == 200 and again["token"] == t1["token"], f"{st} {again}")

# Validation, and a CAL only after it.
st, b = cal(1, t1["token_id"])
check("a CAL on a temporary token not validated yet: 409 not-validated",
      st == 409 and b["error"] == "not-validated" and b.get("reason"), f"{st} {b}")
st, b = validate(t1["token_id"], 2)
check("validation for another device's hardware id: 403 other-device", st == 403 and b["error"] == "other-device",
      f"{st} {b}")
st, b = validate(t1["token_id"], 1)
check("validation after logon: temporary-validated", st == 200 and b["state"] == "temporary-validated",
      f"{st} {b}")
st, b = validate("00" * 16, 1)
check("validation of an unknown token: 404", st == 404 and b["error"] == "unknown-token", f"{st} {b}")

before = time.time()
st, c1 = cal(1, t1["token_id"], user="alice")
check("a validated device gets a Device CAL from P3",
      st == 200 and c1["kind"] == "device-cal" and c1["pack"] == "P3" and c1["token_id"] != t1["token_id"]
      and 52 * DAY <= c1["expires_usec"] - c1["issued_usec"] <= 89 * DAY, f"{st} {c1}")
rc, v = verify(c1["token"], 1, trust)
check("the CAL verifies offline (device-cal, pack P3, version 2025)",
      rc == 0 and v["verdict"] == "ok" and v["token"]["kind"] == "device-cal" and v["token"]["pack_id"] == "P3"
      and v["token"]["product_version"] == "2025", f"{rc} {v}")
st, b = cal(1, t1["token_id"])
check("asking again returns the same CAL", st == 200 and b["token"] == c1["token"], f"{st} {b}")

rc, doc = lic_json("issued", "--state", "active")
rec = doc["tokens"][0] if isinstance(doc, dict) and doc.get("tokens") else {}
check("tsctl license issued --json: the CAL with device name, user and date",
      rc == 0 and len(doc["tokens"]) == 1 and rec["token_id"] == c1["token_id"] and rec["device_name"] == "PC-1"
      and rec["user_name"] == "alice" and rec["state"] == "active" and rec["pack_id"] == "P3"
      and abs(rec["issued_usec"] / 1e6 - before) < 60 and rec["hardware_id"] == hwid(1), f"{rc} {doc}")
p = lic("issued", "--device", "PC-1")
rows = [l.split() for l in p.stdout.splitlines()[1:]]
check("tsctl license issued --device PC-1: a table with the temporary token and the CAL",
      p.returncode == 0 and p.stdout.startswith("TOKEN ID") and len(rows) == 2
      and {r[0] for r in rows} == {t1["token_id"], c1["token_id"]}, p.stdout + p.stderr)
# Bytes, not text: CSV lines end in CRLF, which text mode would translate.
p = subprocess.run([TSCTL, "license", "report", "--csv", "--licensing-socket", sock_path], capture_output=True,
                   timeout=30)
csv = p.stdout.decode()
today = time.strftime("%Y-%m-%d", time.gmtime(c1["issued_usec"] / 1e6))
line = next((l for l in csv.split("\r\n") if l.startswith(c1["token_id"])), "")
check("tsctl license report --csv: the CAL's row with device, user and date (CRLF)",
      p.returncode == 0 and ",device-cal,active,P3,2025,PC-1," in line and ",alice," in line
      and f",{today}T" in line and csv.startswith("pack_id,") and "\n" not in csv.replace("\r\n", ""),
      csv + p.stderr.decode())
p = lic("report")
check("tsctl license report (table) has the pack and the CAL",
      p.returncode == 0 and "P3" in p.stdout and c1["token_id"] in p.stdout, p.stdout + p.stderr)
p = lic("report", "--csv", "--json")
check("report --csv --json is a usage error", p.returncode == 2, p.stderr)

# Devices 2 and 3 take the rest; device 4 finds none.
cals = {1: c1}
temps = {1: t1}
for n in (2, 3, 4):
    st, temps[n] = temporary(n)
    st2, _ = validate(temps[n]["token_id"], n)
    check(f"device {n}: temporary token and validation", st == 200 and st2 == 200)
for n in (2, 3):
    st, cals[n] = cal(n, temps[n]["token_id"], user=f"user{n}")
    check(f"device {n} gets a CAL from P3", st == 200 and cals[n]["pack"] == "P3", f"{st} {cals[n]}")
rep = report()
st, b = cal(4, temps[4]["token_id"])
check("the 4th device: 409 no-inventory, it keeps its temporary token",
      st == 409 and b["error"] == "no-inventory" and b.get("reason"), f"{st} {b}")
check("... and nothing changed", report() == rep)
st, b = temporary(4)
check("... its temporary token is still the one it has", st == 200 and b["token"] == temps[4]["token"], f"{st} {b}")

# Renewal outside the window.
st, b = cal(1, c1["token_id"])
check("renewal 52+ days before expiry: 409 too-early", st == 409 and b["error"] == "too-early", f"{st} {b}")
check("... and nothing changed", report() == rep)

# Revocation and its bound.
p = lic("revoke", c1["token_id"])
check("revoking from a pack of 3 (20% < 1 CAL) is refused (exit 1, reason)",
      p.returncode == 1 and "pack too small" in p.stderr, p.stdout + p.stderr)
st, b = local("POST", "/v1/revoke", {"token_id": c1["token_id"]})
check("... 409 revocation-limit, never possible", st == 409 and b["error"] == "revocation-limit"
      and b["possible_at_usec"] is None, f"{st} {b}")
p = lic("revoke", temps[2]["token_id"])
check("revoking a temporary token is refused (they lapse)", p.returncode == 1 and "lapse" in p.stderr,
      p.stdout + p.stderr)
p = lic("install-pack", "P5", "--version", "2025", "--count", "5")
check("a second pack of 5 installs", p.returncode == 0, p.stdout + p.stderr)
st, cals[4] = cal(4, temps[4]["token_id"], user="dave")
check("the 4th device now gets its CAL, from P5", st == 200 and cals[4]["pack"] == "P5", f"{st} {cals[4]}")
st, temps[5] = temporary(5)
validate(temps[5]["token_id"], 5)
st, cals[5] = cal(5, temps[5]["token_id"])
check("a 5th device gets one from P5 too", st == 200 and cals[5]["pack"] == "P5", f"{st} {cals[5]}")
p = lic("revoke", cals[4]["token_id"])
check("revoking one CAL of P5 (20% of 5 = 1) works",
      p.returncode == 0 and "Revoked Device CAL" in p.stdout and "P5 has 4 of 5" in p.stdout, p.stdout + p.stderr)
rep = report()
now = time.time()
p = lic("revoke", cals[5]["token_id"])
check("a second revocation within 60 days is refused with the date it becomes possible",
      p.returncode == 1 and "possible at 20" in p.stderr, p.stdout + p.stderr)
st, b = local("POST", "/v1/revoke", {"token_id": cals[5]["token_id"]})
check("... 409 revocation-limit with possible_at_usec about 60 days on",
      st == 409 and b["error"] == "revocation-limit" and abs(b["possible_at_usec"] / 1e6 - now - 60 * 86400) < 120,
      f"{st} {b}")
check("... and nothing changed", report() == rep)
p = lic("revoke", cals[4]["token_id"])
check("revoking a revoked CAL is refused", p.returncode == 1 and "not active" in p.stderr, p.stderr)
rc, v = verify(cals[4]["token"], 4, trust)
check("(a revoked CAL still verifies offline until it expires: revocation returns it to the pool)",
      rc == 0, f"{rc} {v}")

# Refused peers.
rep = report()
for what, kw in (("no client certificate", {"node": None}),
                 ("a certificate from another CA (CN ts1)", {"node": "ts1", "ca": evil_dir})):
    try:
        st, b = call(kw["node"], "POST", "/v1/licenses/temporary", device(9), ca=kw.get("ca"))
        refused = st == 403
    except (ssl.SSLError, ConnectionError, OSError):
        refused = True
    check(f"{what} is refused", refused)
check("... and nothing changed", report() == rep)

# Socket-only routes over TLS.
for method, path, body in (("POST", "/v1/packs", {"id": "X", "product_version": "1", "count": 1}),
                           ("GET", "/v1/packs", None), ("GET", "/v1/issued", None),
                           ("GET", "/v1/report?format=csv", None),
                           ("POST", "/v1/revoke", {"token_id": cals[5]["token_id"]})):
    st, b = call("ts1", method, path, body)
    check(f"{method} {path} over TLS: 403 local-only", st == 403 and b["error"] == "local-only", f"{st} {b}")
check("... and nothing changed", report() == rep)

# Malformed, oversized, out of range: 400, nothing changed.
long_name = "x" * 256
bad_requests = [
    ("malformed JSON", "/v1/licenses/temporary", None, b'{"hardware_id": "00",'),
    ("a JSON array", "/v1/licenses/temporary", [1, 2], None),
    ("no hardware_id", "/v1/licenses/temporary", {"device_name": "PC-9"}, None),
    ("hardware_id of 15 bytes", "/v1/licenses/temporary", {"hardware_id": "ab" * 15, "device_name": "PC-9"}, None),
    ("hardware_id of 65 bytes", "/v1/licenses/temporary", {"hardware_id": "ab" * 65, "device_name": "PC-9"}, None),
    ("hardware_id with a non-hex digit", "/v1/licenses/temporary",
     {"hardware_id": "zz" + "ab" * 15, "device_name": "PC-9"}, None),
    ("hardware_id with separators", "/v1/licenses/temporary",
     {"hardware_id": ":".join(["ab"] * 16), "device_name": "PC-9"}, None),
    ("hardware_id of odd length", "/v1/licenses/temporary", {"hardware_id": "a" * 33, "device_name": "PC-9"},
     None),
    ("hardware_id a number", "/v1/licenses/temporary", {"hardware_id": 1234, "device_name": "PC-9"}, None),
    ("device_name of 256 bytes", "/v1/licenses/temporary", {"hardware_id": hwid(9), "device_name": long_name},
     None),
    ("empty device_name", "/v1/licenses/temporary", {"hardware_id": hwid(9), "device_name": ""}, None),
    ("user_name of 256 bytes", "/v1/licenses/temporary",
     {"hardware_id": hwid(9), "device_name": "PC-9", "user_name": long_name}, None),
    ("product_version with a space", "/v1/licenses/temporary",
     {"hardware_id": hwid(9), "device_name": "PC-9", "product_version": "20 25"}, None),
    ("product_version of 33 bytes", "/v1/licenses/temporary",
     {"hardware_id": hwid(9), "device_name": "PC-9", "product_version": "1" * 33}, None),
    ("token_id of 31 digits", "/v1/licenses/validate", {"token_id": "a" * 31, "hardware_id": hwid(1)}, None),
    ("token_id of 34 digits", "/v1/licenses/validate", {"token_id": "a" * 34, "hardware_id": hwid(1)}, None),
    ("a CAL without user_name", "/v1/licenses/cal",
     {"hardware_id": hwid(1), "device_name": "PC-1", "presented_token_id": t1["token_id"]}, None),
    ("a CAL with a bad presented_token_id", "/v1/licenses/cal",
     dict(device(1), presented_token_id="g" * 32), None),
]
rep = report()
for what, path, body, raw in bad_requests:
    st, b = call("ts1", "POST", path, body, raw=raw)
    check(f"{what}: 400 with a reason", st == 400 and isinstance(b, dict) and b.get("error") and b.get("reason"),
          f"{st} {b}")
st, b = call("ts1", "POST", "/v1/licenses/temporary",
             raw=json.dumps({"hardware_id": hwid(9), "device_name": "x" * (100 * 1024)}).encode())
check("an oversized body: 413", st == 413, f"{st} {b}")
for what, body in (("count 0", {"id": "PX", "product_version": "2025", "count": 0}),
                   ("count 1000001", {"id": "PX", "product_version": "2025", "count": 1000001}),
                   ("count a string", {"id": "PX", "product_version": "2025", "count": "5"}),
                   ("an id with a space", {"id": "P X", "product_version": "2025", "count": 5}),
                   ("an id of 65 bytes", {"id": "P" * 65, "product_version": "2025", "count": 5}),
                   ("no product_version", {"id": "PX", "count": 5})):
    st, b = local("POST", "/v1/packs", body)
    check(f"install-pack with {what}: 400", st == 400 and b.get("reason"), f"{st} {b}")
for q in ("state=bogus", "state=active,", "hardware_id=xyz", "pack=a%20b", "device="):
    st, b = local("GET", f"/v1/issued?{q}")
    check(f"GET /v1/issued?{q}: 400", st == 400 and b.get("reason"), f"{st} {b}")
st, b = local("GET", "/v1/report?format=pdf")
check("GET /v1/report?format=pdf: 400", st == 400, f"{st} {b}")
check("the report is unchanged by all of the above", report() == rep)
rc, doc = lic_json("issued", "--state", "active,revoked")
check("issued --state active,revoked filters by both",
      rc == 0 and sorted(t["state"] for t in doc["tokens"]) == ["active", "active", "active", "active", "revoked"],
      f"{rc} {doc}")

# Metrics.
conn = UnixConnection(sock_path)
conn.request("GET", "/metrics")
metrics = conn.getresponse().read().decode()
conn.close()
check("/metrics has the licensing gauges and counters",
      "tsfarm_licensing_packs_installed 2" in metrics and "tsfarm_licensing_cals_installed 8" in metrics
      and "tsfarm_licensing_cals_available 4" in metrics and "tsfarm_licensing_cals_issued 4" in metrics
      and "tsfarm_licensing_temporary_issued_total 5" in metrics
      and "tsfarm_licensing_cals_issued_total 5" in metrics
      and "tsfarm_licensing_no_inventory_total 1" in metrics, metrics)

# Restart after SIGKILL loses nothing.
rep = report()
check("the invariant holds before the restart", invariant_holds(rep), f"{rep['packs']}")
stop_agent(agent, signal.SIGKILL)
agent, ready = start_agent()
check("tsagent starts again after SIGKILL", ready)
after = report() if ready else None
check("the report is the same after the restart", after == rep,
      f"{json.dumps(rep)[:2000]} -> {json.dumps(after)[:2000]}")
check("the invariant holds after the restart", after and invariant_holds(after))
st, b = call("ts2", "GET", "/v1/inventory")
check("the same signing key after the restart", st == 200 and b["key_id"] == inv["key_id"], f"{st} {b}")
st, b = temporary(1)
check("device 1 gets the same temporary token after the restart", st == 200 and b["token"] == t1["token"],
      f"{st} {b}")
st, b = cal(2, temps[2]["token_id"], user="user2")
check("device 2 gets the same CAL after the restart", st == 200 and b["token"] == cals[2]["token"], f"{st} {b}")

rc = stop_agent(agent)
check("tsagent exits cleanly on SIGTERM", rc == 0, logs[-1])
check("the key id was logged", inv["key_id"] in logs[-1], logs[-1])


def start_refused():
    env = dict(os.environ, NOTIFY_SOCKET=ns.path, TSFARM_LOG_TARGET="stderr")
    p = subprocess.run([TSAGENT, "--config", conf], env=env, capture_output=True, text=True, timeout=20)
    return p.returncode, p.stderr


# A store whose numbers were edited: the start is refused, naming the pack.
db = os.path.join(state, "licensing.db")
with sqlite3.connect(db) as sql:
    sql.execute("UPDATE packs SET available = available - 1 WHERE id = 'P5'")
rc, err = start_refused()
check("a store breaking available + issued = count refuses the start, naming the pack",
      rc == 1 and "key pack 'P5' breaks available + issued = count" in err, err)
with sqlite3.connect(db) as sql:
    sql.execute("UPDATE packs SET available = available + 1 WHERE id = 'P5'")

# A signing key that is not one: refused, never replaced.
os.rename(key_file, key_file + ".saved")
with open(key_file, "w") as f:
    f.write("not a key\n")
os.chmod(key_file, 0o600)
rc, err = start_refused()
check("a signing key file that holds no key refuses the start",
      rc == 1 and "license-signing.key" in err and open(key_file).read() == "not a key\n", err)
os.replace(key_file + ".saved", key_file)
agent, ready = start_agent()
st, b = call("ts1", "GET", "/v1/inventory") if ready else (None, None)
check("repaired, it starts again with the same key", ready and st == 200 and b["key_id"] == inv["key_id"],
      f"{st} {b}")
rc = stop_agent(agent)
check("tsagent exits cleanly on SIGTERM again", rc == 0, logs[-1])
ns.close()
shutil.rmtree(work)
finish()
