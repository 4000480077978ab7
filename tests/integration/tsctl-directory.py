#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""tsctl's directory commands (docs/tsctl.md): `nodes`, `sessions`, `drain`
and `undrain` against a directory role served by tsagent on loopback, with
two nodes registered and a logon reported over mutual TLS the way hosts do.
Tables and --json, the directory's refusals and an unreachable socket.
Certificates from `tsctl pki`; run as root (the UNIX socket admits root
only)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))
from tsftest import NotifySocket, check, finish  # noqa: E402
from dirtest import TSCTL, Directory  # noqa: E402

# A long heartbeat lapse: the test sends none, and the nodes must stay up.
d = Directory("tsfarm-tsctl-directory-test-", "10min")
work, sock_path, call = d.work, d.sock_path, d.call


def tsctl(*args, sock=sock_path):
    return subprocess.run([TSCTL, "--directory-socket", sock, *args], capture_output=True, text=True,
                          timeout=30)


def tsctl_json(*args):
    p = tsctl(*args, "--json")
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        return p.returncode, p.stdout + p.stderr


def node_of(doc, name):
    return next((n for n in doc.get("nodes", []) if n["name"] == name), None) if isinstance(doc, dict) else None


ns = NotifySocket()
agent = d.start(ns.path)
if not check("tsagent with roles = directory sends READY=1", ns.wait("READY=1", timeout=10) is not None,
             "no READY=1"):
    agent.kill()
    print(agent.communicate()[1])
    finish()

st, b = call("n1", "POST", "/v1/nodes/register",
             {"addresses": ["10.0.0.1"], "rdp_port": 3389, "weight": 100, "session_limit": 20,
              "boot_id": "boot-n1"})
check("n1 registers", st == 200, f"{st} {b}")
st, b = call("n2", "POST", "/v1/nodes/register",
             {"addresses": ["10.0.0.2", "fd00::2"], "rdp_port": 3389, "weight": 300, "boot_id": "boot-n2"})
check("n2 registers", st == 200, f"{st} {b}")
st, b = call("n1", "POST", "/v1/sessions/event",
             {"event": "logon", "user": "alice", "session_id": 7, "device": "PC-1",
              "client_address": "192.0.2.10"})
check("n1 reports alice's logon", st == 200, f"{st} {b}")

# nodes
rc, doc = tsctl_json("nodes")
n1, n2 = node_of(doc, "n1"), node_of(doc, "n2")
check("nodes --json lists n1 and n2", rc == 0 and n1 and n2 and len(doc["nodes"]) == 2, f"{rc} {doc}")
check("nodes --json has n1's values",
      n1 and n1["up"] is True and n1["drain"] == "enabled" and n1["weight"] == 100
      and n1["session_limit"] == 20 and n1["sessions"] == 1 and n1["addresses"] == ["10.0.0.1"]
      and n1["last_heartbeat_usec"] > 0, f"{n1}")
check("nodes --json has n2's values",
      n2 and n2["weight"] == 300 and n2["sessions"] == 0 and n2["addresses"] == ["10.0.0.2", "fd00::2"],
      f"{n2}")
p = tsctl("nodes")
lines = p.stdout.splitlines()
row1 = next((l.split() for l in lines if l.startswith("n1 ")), [])
row2 = next((l for l in lines if l.startswith("n2 ")), "")
check("nodes prints a table with a header and n1's row",
      p.returncode == 0 and lines and lines[0].split()[:3] == ["NODE", "STATE", "DRAIN"]
      and row1[:7] == ["n1", "up", "enabled", "100", "1", "20", "10.0.0.1"] and row1[-1] == "UTC",
      p.stdout + p.stderr)
check("... and n2's (no limit: '-', both addresses)",
      row2.split()[:7] == ["n2", "up", "enabled", "300", "0", "-", "10.0.0.2,fd00::2"], p.stdout)

# sessions
rc, doc = tsctl_json("sessions")
s = doc["sessions"] if isinstance(doc, dict) else []
check("sessions --json has alice's session",
      rc == 0 and len(s) == 1 and s[0]["user"] == "alice" and s[0]["node"] == "n1" and s[0]["session_id"] == 7
      and s[0]["state"] == "active" and s[0]["device"] == "PC-1" and s[0]["client_address"] == "192.0.2.10"
      and s[0]["logon_time_usec"] > 0, f"{rc} {doc}")
rc, doc = tsctl_json("sessions", "ALICE")
check("sessions USER filters (case-insensitive)", rc == 0 and len(doc["sessions"]) == 1, f"{rc} {doc}")
rc, doc = tsctl_json("sessions", "bob")
check("sessions of a user without sessions is an empty list", rc == 0 and doc == {"sessions": []},
      f"{rc} {doc}")
p = tsctl("sessions")
lines = p.stdout.splitlines()
row = next((l.split() for l in lines if l.startswith("alice ")), [])
check("sessions prints a table with alice's row",
      p.returncode == 0 and lines and lines[0].split()[:2] == ["USER", "NODE"]
      and row[:6] == ["alice", "n1", "7", "active", "PC-1", "192.0.2.10"] and row[-1] == "UTC",
      p.stdout + p.stderr)
p = tsctl("sessions", "bob")
check("sessions of nobody says so", p.returncode == 0 and "No sessions of bob" in p.stdout, p.stdout)

# drain, undrain
p = tsctl("drain", "n1")
check("drain n1 prints n1's row, disabled",
      p.returncode == 0 and any(l.split()[:3] == ["n1", "up", "disabled"] for l in p.stdout.splitlines()),
      p.stdout + p.stderr)
rc, doc = tsctl_json("nodes")
check("nodes --json then shows n1 disabled, n2 enabled",
      rc == 0 and node_of(doc, "n1")["drain"] == "disabled" and node_of(doc, "n2")["drain"] == "enabled",
      f"{rc} {doc}")
rc, doc = tsctl_json("drain", "n1", "--until-restart")
check("drain n1 --until-restart --json answers n1 drain-until-restart",
      rc == 0 and len(doc["nodes"]) == 1 and node_of(doc, "n1")["drain"] == "drain-until-restart",
      f"{rc} {doc}")
rc, doc = tsctl_json("nodes")
check("nodes --json then shows n1 drain-until-restart",
      rc == 0 and node_of(doc, "n1")["drain"] == "drain-until-restart", f"{rc} {doc}")
p = tsctl("undrain", "n1")
check("undrain n1 prints n1's row, enabled",
      p.returncode == 0 and any(l.split()[:3] == ["n1", "up", "enabled"] for l in p.stdout.splitlines()),
      p.stdout + p.stderr)
rc, doc = tsctl_json("nodes")
check("nodes --json then shows n1 enabled", rc == 0 and node_of(doc, "n1")["drain"] == "enabled",
      f"{rc} {doc}")

# Refusals and trouble.
p = tsctl("drain", "nosuch")
check("drain of an unknown node: exit 1 with the directory's reason",
      p.returncode == 1 and "tsctl: error: no such node" in p.stderr and p.stdout == "",
      f"{p.returncode} {p.stdout} {p.stderr}")
gone = os.path.join(work, "nothing-here.sock")
p = tsctl("nodes", sock=gone)
check("an unreachable socket: exit 1 naming the socket",
      p.returncode == 1 and "cannot reach the directory" in p.stderr and gone in p.stderr,
      f"{p.returncode} {p.stderr}")
p = subprocess.run([TSCTL, "sessions"], capture_output=True, text=True, timeout=30,
                   env=dict(os.environ, TSFARM_DIRECTORY_SOCKET=sock_path))
check("$TSFARM_DIRECTORY_SOCKET is used without --directory-socket",
      p.returncode == 0 and "alice" in p.stdout, p.stdout + p.stderr)
p = tsctl("drain")
check("drain without NODE is a usage error (exit 2)", p.returncode == 2, f"{p.returncode} {p.stderr}")

agent.send_signal(signal.SIGTERM)
try:
    _, err = agent.communicate(timeout=10)
except subprocess.TimeoutExpired:
    agent.kill()
    _, err = agent.communicate()
check("tsagent exits cleanly on SIGTERM", agent.returncode == 0, err)
ns.close()
shutil.rmtree(work)
finish()
