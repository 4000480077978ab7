#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""tsclient against a minimal session host that speaks docs/protocol.md
(lib/tsproto_server.py): the device store across the license exchange
(new-license, upgrade, valid), a copied store on another machine refused
as other-device, the cookie and the routing token in the Connection
Requests, a redirect followed, wrong passwords, scripts and their
expectations, disconnect and reattach, server logoff, certificate
verification, and the load generator's summary adding up.

  TSFARM_BUILD=/abs/build tests/integration/tsclient.py

No root needed: everything runs on 127.0.0.1 in a temporary directory."""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from tsftest import build_dir, check, finish  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = build_dir()
TSCLIENT = os.path.join(BUILD, "tsclient")
TSCTL = os.path.join(BUILD, "tsctl")


def main():
    for b in (TSCLIENT, TSCTL):
        if not os.access(b, os.X_OK):
            check("built", False, f"no executable {b}")
            finish()
    tmp = tempfile.mkdtemp(prefix="tsclient-test-")
    server = None
    try:
        server = run(tmp)
    finally:
        if server:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


def events(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def server_ended(path, before, hows, timeout=5.0):
    """Waits (deadline) until the test server logged the end of a session
    in one of `hows` after event number `before`: the client may exit
    before the server has read its last PDU."""
    deadline = time.monotonic() + timeout
    while True:
        ev = events(path)[before:]
        if any(e["event"] == "end" and e["how"] in hows for e in ev):
            return True, ev
        if time.monotonic() >= deadline:
            return False, ev
        time.sleep(0.02)


def run(tmp):
    pki, other = os.path.join(tmp, "pki"), os.path.join(tmp, "other-pki")
    os.mkdir(pki, 0o700)
    os.mkdir(other, 0o700)
    for d, name in ((pki, "farm1"), (other, "evil")):
        subprocess.run([TSCTL, "pki", "init", "--dir", d, "--name", name], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([TSCTL, "pki", "issue", "--dir", d, "ts1", "--ip", "127.0.0.1"], check=True,
                       stdout=subprocess.DEVNULL)
    mid_a, mid_b = os.path.join(tmp, "mid-a"), os.path.join(tmp, "mid-b")
    with open(mid_a, "w") as f:
        f.write("0123456789abcdef0123456789abcdef\n")
    with open(mid_b, "w") as f:
        f.write("fedcba9876543210fedcba9876543210\n")
    pw, bad_pw = os.path.join(tmp, "pw"), os.path.join(tmp, "bad-pw")
    with open(pw, "w") as f:
        f.write("secret\n")
    with open(bad_pw, "w") as f:
        f.write("guess\n")
    log = os.path.join(tmp, "events.jsonl")
    open(log, "w").close()

    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "lib", "tsproto_server.py"), "--cert",
         os.path.join(pki, "ts1.crt"), "--key", os.path.join(pki, "ts1.key"), "--log", log,
         "--redirect-user", "bob"],
        stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if not check("server-started", line.startswith("PORT "), line):
        return server
    port = int(line.split()[1])
    store_a = os.path.join(tmp, "store-a")

    def client(*args, user="alice", store=store_a, mid=mid_a, password=pw, script=None, ca=None,
               timeout=30):
        cmd = [TSCLIENT, "--server", f"127.0.0.1:{port}", "--ca", ca or os.path.join(pki, "ca.crt"),
               "--store", store, "--machine-id-file", mid, "--json", "--user", user,
               "--password-file", password, "--expect-timeout", "3s", *args]
        if script is not None:
            path = os.path.join(tmp, "script")
            with open(path, "w") as f:
                f.write(script)
            cmd += ["--script", path]
        else:
            cmd += ["--disconnect"]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "{}"
        try:
            summary = json.loads(last)
        except json.JSONDecodeError:
            summary = {}
        return p.returncode, summary, p

    def new_events(fn):
        before = len(events(log))
        r = fn()
        return r, events(log)[before:]

    def ended(hows):
        return server_ended(log, marks[-1], hows)

    marks = []

    def mark():
        marks.append(len(events(log)))

    def token_file(store):
        path = os.path.join(store, "farm.farm1")
        if not os.path.exists(path):
            return None, None
        with open(path) as f:
            return f.read(), stat.S_IMODE(os.stat(path).st_mode)

    # 1. First contact: a temporary token, stored before the logon; the
    #    script's expectations met; logoff.
    echo = "expect $ \nsend hello world\nexpect echo: hello world\nwindow 30 100\nexpect size 30x100\n"
    mark()
    (rc, s, p), ev = new_events(lambda: client(script=echo + "logoff\n"))
    check("first-exit", rc == 0, f"rc {rc}: {p.stderr.strip()}")
    check("first-license", s.get("license", {}).get("status") == "new-license"
          and s["license"].get("kind") == "temporary" and s["license"].get("stored"), str(s))
    check("first-server", s.get("server") == "ts1" and s.get("farm") == "farm1"
          and s.get("session_id", 0) > 0 and not s.get("reattached"), str(s))
    check("first-output", "echo: hello world" in p.stdout and "size 30x100" in p.stdout, p.stdout)
    lic = [e for e in ev if e["event"] == "license"]
    text, mode = token_file(store_a)
    check("store-written", lic and text == lic[0]["new_token"] + "\n" and mode == 0o600,
          f"{text!r} mode {mode}")
    check("first-cookie", [e["cookie"] for e in ev if e["event"] == "cr"] == ["Cookie: mstshash=alice"],
          str(ev))
    check("first-no-token-presented", lic and lic[0]["token"] == "", str(lic))
    ok, ev_end = ended(("logoff",))
    check("logoff-reached-server", ok, str(ev_end))
    hwid_a = lic[0]["hwid"] if lic else None
    dev = subprocess.run([TSCLIENT, "device", "--store", store_a, "--machine-id-file", mid_a, "--json"],
                         capture_output=True, text=True)
    d = json.loads(dev.stdout or "{}")
    check("device-verb", d.get("hardware_id") == hwid_a
          and d.get("farms", {}).get("farm1", {}).get("kind") == "temporary", dev.stdout + dev.stderr)

    # 2. The validated temporary token is upgraded to a Device CAL, which
    #    replaces it in the store; 3. then it is simply valid.
    first_token = text
    (rc, s, p), ev = new_events(lambda: client())
    text, _ = token_file(store_a)
    check("upgrade", rc == 0 and s.get("license", {}).get("status") == "upgrade"
          and s["license"].get("kind") == "device-cal", f"rc {rc} {s} {p.stderr}")
    check("upgrade-stored", text and text != first_token
          and [e for e in ev if e["event"] == "license"][0]["token"] + "\n" == first_token, text)
    (rc, s, p), ev = new_events(lambda: client())
    check("valid", rc == 0 and s.get("license", {}).get("status") == "valid"
          and s["license"].get("kind") == "device-cal" and not s["license"].get("stored"), str(s))
    check("same-hwid", all(e["hwid"] == hwid_a for e in ev if e["event"] == "license"), str(ev))
    # --disconnect left the session: the next logon reattaches.
    check("reattached", s.get("reattached") is True, str(s))

    # 4. The store copied onto another machine: another hardware id, the
    #    token refused as other-device, a new temporary token instead.
    store_copy = os.path.join(tmp, "store-copy")
    shutil.copytree(store_a, store_copy)
    (rc, s, p), ev = new_events(lambda: client(store=store_copy, mid=mid_b))
    lic = [e for e in ev if e["event"] == "license"]
    check("copied-other-hwid", lic and lic[0]["hwid"] != hwid_a and lic[0]["token"] + "\n" == text,
          str(lic))
    check("copied-other-device", rc == 0 and s.get("license", {}).get("status") == "new-license"
          and s["license"].get("reason") == "token-other-device"
          and s["license"].get("kind") == "temporary", str(s))
    check("original-untouched", token_file(store_a)[0] == text, "")

    # 5. A malformed token file is not presented (and gets replaced).
    store_m = os.path.join(tmp, "store-malformed")
    shutil.copytree(store_a, store_m)
    with open(os.path.join(store_m, "farm.farm1"), "w") as f:
        f.write("garbage\x01\n")
    (rc, s, p), ev = new_events(lambda: client(store=store_m))
    lic = [e for e in ev if e["event"] == "license"]
    check("malformed-not-presented", rc == 0 and lic and lic[0]["token"] == ""
          and s.get("license", {}).get("ignored_stored_token") is True
          and "malformed" in p.stderr, f"{s} {p.stderr}")
    check("malformed-replaced", token_file(store_m)[0] == lic[0]["new_token"] + "\n", "")

    # 6. Wrong password: exit status 4, nothing attached.
    (rc, s, p), ev = new_events(lambda: client(password=bad_pw))
    check("wrong-password-exit", rc == 4 and s.get("result") == "wrong-password"
          and s.get("logon", {}).get("status") == "wrong-password", f"rc {rc} {s}")
    check("wrong-password-no-logon", not any(e["event"] == "logon" for e in ev), str(ev))

    # 7. Redirect: bob's first connection is redirected; the second
    #    Connection Request carries the routing token, to the same address.
    (rc, s, p), ev = new_events(lambda: client(user="bob", script="expect $ \nsend hi\nexpect echo: hi\n"))
    crs = [e["cookie"] for e in ev if e["event"] == "cr"]
    check("redirect-followed", rc == 0 and s.get("redirects") == 1 and s.get("session_id", 0) > 0,
          f"rc {rc} {s} {p.stderr}")
    check("redirect-routing-token", crs == ["Cookie: mstshash=bob", "Cookie: msts=16777343.15629.0000"],
          str(crs))
    check("redirect-credentials-again",
          [e["user"] for e in ev if e["event"] == "client-info"] == ["bob", "bob"], str(ev))

    # 8. --no-cookie: no token line at all.
    (rc, s, p), ev = new_events(lambda: client("--no-cookie", user="carol"))
    check("no-cookie", rc == 0 and [e["cookie"] for e in ev if e["event"] == "cr"] == [None], str(ev))

    # 9. An expectation not met: exit status 7, the session left disconnected.
    mark()
    (rc, s, p), ev = new_events(lambda: client(user="dave", script="expect never-printed\n"))
    check("expect-fails", rc == 7 and s.get("result") == "script-failed"
          and "never-printed" in (s.get("error") or ""), f"rc {rc} {s}")
    ok, ev_end = ended(("disconnect",))
    check("expect-fail-disconnects", ok, str(ev_end))

    # 10. The server ends the session (the shell exits): LOGOFF from it.
    (rc, s, p), ev = new_events(lambda: client(user="erin", script="expect $ \nsend exit\nsleep 2s\n"))
    check("server-logoff", rc == 0 and s.get("end") == "logoff-by-server", f"rc {rc} {s}")
    (rc, s, p), ev = new_events(lambda: client(user="erin", script="send exit\nsleep 1s\nsend more\n"))
    check("server-logoff-script-left", rc == 7 and "ended the session" in (s.get("error") or ""),
          f"rc {rc} {s}")

    # 11. --drop: the connection closes without DISCONNECT; the session stays.
    mark()
    (rc, s, p), ev = new_events(lambda: client("--drop", user="frank", script="expect $ \n"))
    ok, ev_end = ended(("eof", "reset"))
    check("drop", rc == 0 and s.get("end") == "drop" and ok, f"{s} {ev_end}")
    (rc, s, p), ev = new_events(lambda: client(user="frank"))
    check("drop-reattach", rc == 0 and s.get("reattached") is True, str(s))

    # 12. A certificate from another CA: refused before anything is sent.
    (rc, s, p), ev = new_events(lambda: client(ca=os.path.join(other, "ca.crt"), user="mallory"))
    check("wrong-ca-refused", rc == 2 and "did not verify" in (s.get("error") or ""), f"rc {rc} {s}")
    check("wrong-ca-nothing-sent", not any(e["event"] in ("license", "client-info") for e in ev), str(ev))
    (rc, s, p), ev = new_events(lambda: client("--tls-name", "ts2.example", user="mallory"))
    check("wrong-name-refused", rc == 2 and not any(e["event"] == "license" for e in ev), f"rc {rc} {s}")
    (rc, s, p), ev = new_events(lambda: client("--tls-name", "any", user="carol"))
    check("tls-name-any", rc == 0, f"rc {rc} {s}")

    # 13. Nothing listening: exit status 2 with a reason.
    p = subprocess.run([TSCLIENT, "--server", "127.0.0.1:1", "--ca", os.path.join(pki, "ca.crt"),
                        "--store", store_a, "--machine-id-file", mid_a, "--user", "x",
                        "--password-file", pw, "--json"], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    check("connect-refused", p.returncode == 2 and "cannot connect" in p.stderr, p.stderr)

    # 14. The load generator: every count adds up, nothing fails.
    load_dir = os.path.join(tmp, "load")
    before = len(events(log))
    p = subprocess.run([TSCLIENT, "load", "--server", f"127.0.0.1:{port}", "--ca",
                        os.path.join(pki, "ca.crt"), "--password-file", pw, "--machine-id-file", mid_a,
                        "--store", load_dir, "--devices", "6", "--users", "4", "--duration", "3s",
                        "--rate", "30", "--concurrency", "6", "--json",
                        "--mix", "connect=40,disconnect=20,reconnect=30,logoff=10"],
                       capture_output=True, text=True, timeout=120)
    try:
        summary = json.loads(p.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        summary = {}
    check("load-exit", p.returncode == 0, f"rc {p.returncode} {p.stdout} {p.stderr}")
    conns = summary.get("connections", 0)
    check("load-ran", conns >= 30, str(summary))
    check("load-adds-up", summary.get("consistent") is True
          and conns == summary.get("succeeded", -1) + summary.get("failed", -1)
          and conns == sum(summary.get("license", {}).values())
          and conns == sum(o["connections"] for o in summary.get("ops", {}).values())
          and summary.get("succeeded") == sum(summary.get("sessions", {}).values()), str(summary))
    check("load-no-failures", summary.get("failed") == 0, str(summary))
    check("load-licenses", summary.get("license", {}).get("temporary") == 6
          and summary["license"].get("cal", 0) >= 1, str(summary.get("license")))
    check("load-reattached", summary.get("sessions", {}).get("reattached", 0) >= 1, str(summary))
    check("load-latency", 0 < summary.get("latency_ms", {}).get("p50", 0)
          <= summary["latency_ms"].get("p99", 0), str(summary.get("latency_ms")))
    hwids = {e["hwid"] for e in events(log)[before:] if e["event"] == "license"}
    check("load-devices-distinct", len(os.listdir(load_dir)) == 6 and len(hwids) == 6, str(hwids))
    return server


if __name__ == "__main__":
    main()
