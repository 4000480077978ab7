#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The directory role served by tsagent (docs/directory.md, "The API"):
nodes register and heartbeat over mutual TLS and act only for themselves;
session events, logon queries (cut cookies too), placement, drain over the
UNIX socket only, heartbeat lapse marking a node down and its sessions
lost, the change feed's long poll, refusals that change nothing, and a
restart that loses nothing. Loopback only; certificates from `tsctl pki`;
run as root (the UNIX socket admits root only)."""

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))
from tsftest import NotifySocket, check, finish, wait_for  # noqa: E402
from dirtest import TSAGENT, Directory, UnixConnection  # noqa: E402

d = Directory("tsfarm-directory-test-", "2s", evil=True)
work, ca_dir, evil_dir = d.work, d.ca_dir, d.evil_dir
call, local = d.call, d.local


bad = os.path.join(work, "bad.conf")
with open(bad, "w") as f:
    f.write(f"[agent]\nroles = directory\n[directory]\ncertificate = {ca_dir}/dir.crt\n")
p = subprocess.run([TSAGENT, "--config", bad, "--check-config"], capture_output=True, text=True)
check("[directory] certificate without key and ca is refused",
      p.returncode == 1 and "certificate, key and ca go together" in p.stderr, p.stderr)

ns = NotifySocket()
logs = []


def start_agent():
    p = d.start(ns.path)
    return p, ns.wait("READY=1", timeout=10) is not None


def stop_agent(p):
    p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    logs.append(err)
    return p.returncode


def nodes_view():
    st, b = call("n1", "GET", "/v1/nodes")
    if st != 200:
        return st
    return b["revision"], sorted((n["name"], n["weight"], tuple(n["addresses"]), n["drain"])
                                 for n in b["nodes"])


def snapshot():
    st, b = local("GET", "/v1/snapshot")
    assert st == 200, (st, b)
    return b


def session_of(snap, user):
    return next((s for s in snap["sessions"] if s["user"] == user), None)


def node_of(snap, name):
    return next((n for n in snap["nodes"] if n["name"] == name), None)


agent, ready = start_agent()
if not check("tsagent with roles = directory sends READY=1", ready, "no READY=1"):
    agent.kill()
    print(agent.communicate()[1])
    finish()

# Registration and heartbeats (kept up in the background: the lapse is 2 s).
st, b = call("n1", "POST", "/v1/nodes/register",
             {"addresses": ["10.0.0.1"], "rdp_port": 3389, "weight": 100, "session_limit": 0,
              "boot_id": "boot-n1"})
check("n1 registers", st == 200 and "revision" in b, f"{st} {b}")
st, b = call("n2", "POST", "/v1/nodes/register",
             {"addresses": ["10.0.0.2"], "rdp_port": 3389, "weight": 300, "boot_id": "boot-n2"})
check("n2 registers", st == 200, f"{st} {b}")
st, b = call("n1", "POST", "/v1/nodes/register", {"node": "n2", "boot_id": "x"})
check("n1 cannot register as n2 (403)", st == 403 and b.get("error") == "not-your-node" and b.get("reason"),
      f"{st} {b}")

beating = {"n1": True, "n2": True}
stop_beats = threading.Event()


def heartbeats():
    while not stop_beats.is_set():
        for n, on in list(beating.items()):
            if on:
                try:
                    call(n, "POST", "/v1/nodes/heartbeat", {}, timeout=2)
                except Exception:
                    pass  # the agent restarts at the end
        stop_beats.wait(0.3)


beater = threading.Thread(target=heartbeats, daemon=True)
beater.start()

st, b = call("n1", "GET", "/v1/nodes")
check("GET /v1/nodes lists both", st == 200 and sorted(n["name"] for n in b["nodes"]) == ["n1", "n2"]
      and all(n["up"] for n in b["nodes"]), f"{st} {b}")

# Session events and logon queries.
st, b = call("n1", "POST", "/v1/sessions/event",
             {"event": "logon", "user": "alice", "session_id": 1, "device": "PC-1",
              "client_address": "192.0.2.10"})
check("n1 reports alice's logon", st == 200 and b.get("revision", 0) > 0, f"{st} {b}")
st, b = call("n1", "POST", "/v1/sessions/event",
             {"event": "logon", "user": "alexandrine", "session_id": 2})
check("n1 reports alexandrine's logon", st == 200, f"{st} {b}")

st, b = call("n2", "POST", "/v1/logon-query", {"user": "alice", "entry_node": "n2"})
check("logon query for alice at n2 answers her session on n1",
      st == 200 and b["answer"] == "session" and b["node"] == "n1" and b["addresses"] == ["10.0.0.1"]
      and b["rdp_port"] == 3389 and b["redirect"] is True and b["session_id"] == 1, f"{st} {b}")
st, b = call("n2", "POST", "/v1/logon-query", {"cookie": "alexandri", "entry_node": "n2"})
check("a 9-character cut cookie finds the session",
      st == 200 and b["answer"] == "session" and b["node"] == "n1" and b["session_id"] == 2, f"{st} {b}")

# Nodes act only for themselves.
before = snapshot()
st, b = call("n2", "POST", "/v1/sessions/event",
             {"node": "n1", "event": "logoff", "session_id": 1, "user": "alice"})
check("n2 cannot report an event for n1 (403 with a reason)",
      st == 403 and b.get("error") == "not-your-node" and "n1" in b.get("reason", ""), f"{st} {b}")
st, b = call("n2", "POST", "/v1/sessions/event", {"event": "logoff", "session_id": 1, "user": "alice"})
check("n2 cannot end n1's session by its id (4xx)", 400 <= st < 500 and b.get("reason"), f"{st} {b}")
check("state unchanged after the refused events", snapshot()["revision"] == before["revision"]
      and session_of(snapshot(), "alice")["state"] == "active")
st, b = call("n1", "POST", "/v1/sessions/event", {"event": "reconnect", "session_id": 99})
check("an event for an unknown session is 404", st == 404 and b.get("reason"), f"{st} {b}")

# Refused peers change nothing.
view = nodes_view()
try:
    st, b = call(None, "POST", "/v1/nodes/register", {"weight": 7, "boot_id": "x"})
    refused = st == 403
except (ssl.SSLError, ConnectionError, OSError):
    refused = True
check("no client certificate is refused", refused)
try:
    st, b = call("n1", "POST", "/v1/nodes/register", {"weight": 7, "boot_id": "evil"}, ca=evil_dir)
    refused = st == 403
except (ssl.SSLError, ConnectionError, OSError):
    refused = True
check("a certificate from another CA (CN n1) is refused", refused)
check("the database is unchanged by refused peers", nodes_view() == view, f"{view} -> {nodes_view()}")

# Malformed and oversized bodies.
st, b = call("n1", "POST", "/v1/sessions/event", raw=b'{"event": "logon",')
check("malformed JSON is 400 with a reason", st == 400 and b.get("error") == "invalid-json" and b.get("reason"),
      f"{st} {b}")
st, b = call("n1", "POST", "/v1/sessions/event",
             raw=json.dumps({"event": "logon", "user": "x" * (100 * 1024), "session_id": 5}).encode())
check("an oversized body is 413", st == 413, f"{st} {b}")
st, b = call("n1", "POST", "/v1/sessions/event", {"event": "explode", "session_id": 5})
check("an unknown event is 400 with a reason", st == 400 and "explode" in b.get("reason", ""), f"{st} {b}")

# Logoff, placement.
st, b = call("n1", "POST", "/v1/sessions/event", {"event": "logoff", "session_id": 2})
check("n1 reports alexandrine's logoff", st == 200, f"{st} {b}")
check("logoff removes the session", session_of(snapshot(), "alexandrine") is None)
st, b = call("n1", "POST", "/v1/logon-query", {"user": "carol", "entry_node": "n1"})
check("a new user is placed on the least-loaded node (n2: weight 300, no sessions)",
      st == 200 and b["answer"] == "placed" and b["node"] == "n2" and b["redirect"] is True, f"{st} {b}")

# Drain: operators over the UNIX socket only.
st, b = call("n1", "POST", "/v1/nodes/drain", {"node": "n2", "state": "disable"})
check("drain over TLS is refused (403 local-only)", st == 403 and b.get("error") == "local-only", f"{st} {b}")
st, b = local("POST", "/v1/nodes/drain", {"node": "n2", "state": "disable"})
check("drain over the UNIX socket works", st == 200 and node_of(snapshot(), "n2")["drain"] == "disabled",
      f"{st} {b}")
st, b = call("n1", "POST", "/v1/logon-query", {"user": "dave", "entry_node": "n1"})
check("a drained node gets no new sessions", st == 200 and b["answer"] == "placed" and b["node"] == "n1",
      f"{st} {b}")
st, b = local("POST", "/v1/nodes/drain", {"node": "nobody", "state": "disable"})
check("drain of an unknown node is 404", st == 404, f"{st} {b}")
st, b = local("POST", "/v1/nodes/drain", {"node": "n2", "state": "enable"})
check("enable over the UNIX socket works", st == 200 and node_of(snapshot(), "n2")["drain"] == "enabled",
      f"{st} {b}")

# The change feed: a long poll returns as soon as a change commits.
rev = snapshot()["revision"]
result = {}


def poll():
    t = time.monotonic()
    result["answer"] = call("n2", "GET", f"/v1/changes?since={rev}&wait=10", timeout=20)
    result["done"] = time.monotonic()
    result["took"] = result["done"] - t


poller = threading.Thread(target=poll)
poller.start()
time.sleep(0.3)
check("the long poll waits while nothing changes", poller.is_alive())
t_event = time.monotonic()
st, b = call("n1", "POST", "/v1/sessions/event", {"event": "disconnect", "session_id": 1})
check("n1 reports alice's disconnect", st == 200, f"{st} {b}")
poller.join(timeout=15)
st, b = result.get("answer", (None, None))
changed = [c for c in (b or {}).get("changes", []) if c["kind"] == "session"]
check("the long poll answers the committed change",
      st == 200 and b["revision"] > rev and changed and changed[-1]["session"]["state"] == "disconnected",
      f"{st} {b}")
check("... within 1 s of the commit", "done" in result and result["done"] - t_event < 1.0,
      f"{result.get('done', 0) - t_event:.3f}s")
rev = b["revision"] if b else rev
t = time.monotonic()
st, b = call("n2", "GET", f"/v1/changes?since={rev}&wait=1", timeout=10)
took = time.monotonic() - t
check("a long poll with nothing new times out with 204", st == 204 and 0.8 < took < 5, f"{st} {b} {took:.2f}s")
st, b = call("n2", "GET", f"/v1/changes?since={rev + 1000}")
check("a revision outside the history is 410 resync", st == 410 and b.get("error") == "resync", f"{st} {b}")
st, b = call("n2", "GET", "/v1/changes?since=0")
check("the feed from 0 has both nodes and alice",
      st == 200 and {c["node"]["name"] for c in b["changes"] if c["kind"] == "node"} == {"n1", "n2"}
      and any(c["kind"] == "session" and c["session"]["user"] == "alice" for c in b["changes"]), f"{st} {b}")

# Heartbeat lapse: n1 falls silent, n2 keeps beating.
beating["n1"] = False
t = time.monotonic()
down = wait_for(lambda: (lambda s: not node_of(s, "n1")["up"]
                         and session_of(s, "alice")["state"] == "lost")(snapshot()), 8, 0.1)
check("a silent n1 goes down and alice's session is lost (lapse 2 s)", down,
      f"{snapshot()}")
check("... within the deadline", time.monotonic() - t < 8)
check("n2, still beating, stays up", node_of(snapshot(), "n2")["up"])
st, b = call("n1", "POST", "/v1/nodes/heartbeat", {})
check("a heartbeat from a node marked down is 409 (register again)", st == 409, f"{st} {b}")
st, b = call("n2", "POST", "/v1/logon-query", {"user": "alice", "entry_node": "n2"})
check("alice is not sent to her lost session", st == 200 and b["answer"] == "placed" and b["node"] == "n2",
      f"{st} {b}")

conn = UnixConnection(d.sock_path)
conn.request("GET", "/metrics")
metrics = conn.getresponse().read().decode()
conn.close()
check("/metrics has the directory's gauges",
      "tsfarm_directory_sessions_lost 1" in metrics and "tsfarm_directory_nodes_down 1" in metrics
      and "tsfarm_directory_nodes_up 1" in metrics and "tsfarm_directory_revision " in metrics, metrics)

# Restart loses nothing.
beating["n2"] = False
time.sleep(0.4)  # let a heartbeat in flight finish
before = snapshot()
rc = stop_agent(agent)
check("tsagent exits cleanly on SIGTERM", rc == 0, logs[-1])
agent, ready = start_agent()
check("tsagent starts again", ready)


def essence(s):
    return (s["revision"],
            sorted((n["name"], n["up"], n["drain"], n["weight"], tuple(n["addresses"])) for n in s["nodes"]),
            sorted((x["id"], x["node"], x["session_id"], x["user"], x["state"], x["device"])
                   for x in s["sessions"]))


after = snapshot() if ready else None
check("everything is still there after a restart", after and essence(after) == essence(before),
      f"{essence(before)} -> {after and essence(after)}")

# An outage longer than the lapse: nobody could heartbeat, so nobody is
# judged for it until a whole lapse after the restart.
rc = stop_agent(agent)
time.sleep(3)  # the outage itself, longer than the 2 s lapse
agent, ready = start_agent()
check("tsagent starts after a long outage", ready)
went_down = wait_for(lambda: not node_of(snapshot(), "n2")["up"], 1.6, 0.1)
check("n2 is not marked down for the outage (first expiry ticks after the restart)", not went_down,
      f"{snapshot()}")
beating["n2"] = True
went_down = wait_for(lambda: not node_of(snapshot(), "n2")["up"], 3, 0.1)
check("... and stays up once it heartbeats again", not went_down, f"{snapshot()}")

stop_beats.set()
beater.join(timeout=5)
rc = stop_agent(agent)
check("tsagent exits cleanly again", rc == 0, logs[-1])
ns.close()
shutil.rmtree(work)
finish()
