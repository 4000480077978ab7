# SPDX-License-Identifier: LGPL-2.1-or-later
"""The client side of tests/integration/tshost.sh: runs in the farm's client
namespace against tshost behind node1's gateway and prints PASS/FAIL lines.
Environment: TSHOST_ADDR, TSHOST_CA, TSHOST_NODE2, TSHOST_USER,
TSHOST_PASSWORD, TSHOST_REDIRECT_USER, TSHOST_REDIRECT_PASSWORD, TSHOST_LOG,
TSCTL, TSHOST_LIC_SOCKET."""

import json
import os
import re
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tsrp  # noqa: E402
from tsftest import check, finish  # noqa: E402

E = os.environ
ADDR, CA = E["TSHOST_ADDR"], E["TSHOST_CA"]
USER, PASSWORD = E["TSHOST_USER"], E["TSHOST_PASSWORD"]
RUSER, RPASSWORD = E["TSHOST_REDIRECT_USER"], E["TSHOST_REDIRECT_PASSWORD"]


def connect(user=USER, **kw):
    return tsrp.Client(ADDR, 3389, user=user, cafile=CA, **kw)


def issued(hwid):
    """The license server's records of one device."""
    out = subprocess.run([E["TSCTL"], "license", "issued", "--hardware-id", hwid.hex(), "--json",
                          "--licensing-socket", E["TSHOST_LIC_SOCKET"]],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out).get("tokens", [])


def states(hwid):
    return sorted((t.get("kind"), t.get("state")) for t in issued(hwid))


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def shell_pid(c, tag):
    """Asks the shell for its pid ($$), marked so the echo of the command does not match."""
    c.type(f"echo {tag}=$(( $$ + 0 ))\n")
    out = c.read_until(tag, 10, regex=re.compile(f"{tag}=([0-9]+)\r?\n".encode()))
    return int(re.search(f"{tag}=([0-9]+)", out).group(1))


# ---- 1. a new device logs on: new-license, a login shell -----------------------------
hw = tsrp.random_hwid()
c = connect()
lr = c.license(hw, "dev-one")
check("LICENSE_REQUEST carries the farm id and product version",
      c.request["farm_id"] == "tsfarm" and c.request["product_version"] == "2025", str(c.request))
check("a new device gets new-license with a temporary token",
      lr["status"] == "new-license" and lr["token"].startswith("tsl1."), str(lr))
token = lr["token"]
res = c.client_info(USER, PASSWORD, "dev-one", hw)
check("the right password logs on: LOGON_RESULT ok, a new session",
      res["type"] == "logon-result" and res["status"] == "ok" and not res["reattached"] and res["session_id"] > 0,
      str(res))
sid, cookie = res["session_id"], res["cookie"]
check("LOGON_RESULT carries a reconnect cookie", len(cookie) >= 16, str(res))
pid1 = shell_pid(c, "PIDA")
check("the session runs a login shell as the user, in their home",
      alive(pid1) and open(f"/proc/{pid1}/status").read().count(f"\t{os.stat(f'/home/{USER}').st_uid}\t") > 0,
      f"pid {pid1}")
c.type("cd /tmp && echo marker-$((6*7)) && pwd\n")
out = c.read_until("marker-42", 10)
check("a command runs in the shell", "marker-42" in out)
c.send(tsrp.WINDOW_SIZE, struct.pack(">HH", 40, 132))
c.type("stty size\n")
check("WINDOW_SIZE resizes the pty", "40 132" in c.read_until("40 132", 10))
check("the logon validated the temporary token at the license server",
      wait_for(lambda: states(hw) == [("temporary", "temporary-validated")], 10), str(states(hw)))

# ---- 2. the connection is lost: the shell keeps running -------------------------------
c.drop()
time.sleep(0.5)
check("a lost connection leaves the shell running", alive(pid1), f"pid {pid1}")

# ---- 3. reconnect: a Device CAL, the same shell, its history --------------------------
c = connect()
lr = c.license(hw, "dev-one", token)
check("the reconnecting device is upgraded to a Device CAL", lr["status"] == "upgrade" and lr["token"], str(lr))
token = lr["token"] or token
res = c.client_info(USER, PASSWORD, "dev-one", hw)
check("the reconnect reattaches the same session",
      res["status"] == "ok" and res["reattached"] and res["session_id"] == sid, str(res))
cookie = res["cookie"]
hist = c.read_until("marker-42", 10)
check("the reattached client sees the session's recent output", "marker-42" in hist)
check("the reattached shell is the same process", shell_pid(c, "PIDB") == pid1)
c.type("pwd\n")
check("the shell kept its state (cwd)", "/tmp" in c.read_until("/tmp\r\n", 10))
c.send(tsrp.DISCONNECT, struct.pack(">H", 0x0401) + tsrp.s("bye"))
check("DISCONNECT from the client: the server closes", c.closed_soon())
check("DISCONNECT leaves the shell running", alive(pid1))

# ---- 4. reconnect cookie: once ---------------------------------------------------------
c = connect()
c.license(hw, "dev-one", token)
res = c.client_info(USER, "", "dev-one", hw, cookie=cookie)
check("a reconnect cookie logs on without a password",
      res["status"] == "ok" and res["reattached"] and res["session_id"] == sid, str(res))
c.drop()
c = connect()
c.license(hw, "dev-one", token)
res = c.client_info(USER, "", "dev-one", hw, cookie=cookie)
check("a reconnect cookie works only once",
      res["status"] == "wrong-password" and res["reason"] == "bad-reconnect-cookie", str(res))
c.close()

# ---- 5. wrong passwords: refused, nothing changes at the license server ---------------
hw2 = tsrp.random_hwid()
c = connect()
t2 = c.license(hw2, "dev-two")["token"]
before = states(hw2)
c.close()
c = connect()
lr = c.license(hw2, "dev-two", t2)
check("a temporary token not yet validated stays valid", lr["status"] == "valid", str(lr))
results = [c.client_info(USER, "wrong-%d" % i, "dev-two", hw2) for i in range(3)]
check("a wrong password is refused with wrong-password",
      all(r["type"] == "logon-result" and r["status"] == "wrong-password" and r["reason"] == "bad-credentials"
          for r in results), str(results))
f, _ = c.recv_until(lambda f: f["type"] == "disconnect", 5)
check("three failed attempts end the connection with too-many-attempts", f["reason"] == "too-many-attempts",
      str(f))
check("... and the server closes", c.closed_soon())
check("wrong passwords validated nothing and issued nothing", states(hw2) == before == [("temporary", "temporary")],
      f"{before} -> {states(hw2)}")
c = connect(user="nosuchuser-tsh")
c.license(hw2, "dev-two", t2)
r = c.client_info("nosuchuser-tsh", "x", "dev-two", hw2)
check("an unknown user gets the same wrong-password", r["status"] == "wrong-password", str(r))
c.close()

# ---- 6. bad input: ERROR and close, nothing changed ------------------------------------
log_before = open(E["TSHOST_LOG"]).read().count("starting a login shell")


def expect_error(name, send, reason):
    c = connect()
    c.recv()  # LICENSE_REQUEST
    send(c)
    try:
        f, _ = c.recv_until(lambda f: f["type"] in ("error", "disconnect"), 5)
    except (tsrp.Closed, TimeoutError) as e:
        check(name, False, str(e))
        return
    check(name, f["type"] == "error" and f["reason"] == reason and c.closed_soon(), str(f))


expect_error("a frame with a bad magic gets ERROR malformed", lambda c: c.send_raw(b"XSRP" + bytes(8)), "malformed")
expect_error("a frame of version 2 gets ERROR unsupported-version",
             lambda c: c.send_raw(tsrp.frame(tsrp.KEEPALIVE, bytes(8), version=2)), "unsupported-version")
expect_error("a length above the type's cap gets ERROR too-large",
             lambda c: c.send_raw(b"TSRP" + struct.pack(">BBHI", 1, tsrp.CLIENT_LICENSE_INFO, 0, 100000)), "too-large")
expect_error("a malformed body gets ERROR malformed",
             lambda c: c.send(tsrp.CLIENT_LICENSE_INFO, bytes(32) + tsrp.s(b"short") + tsrp.s("d") + tsrp.s("")),
             "malformed")
expect_error("a PDU out of phase gets ERROR unexpected-pdu", lambda c: c.send(tsrp.TERMINAL_DATA, b"ls\n"),
             "unexpected-pdu")
expect_error("a wrong nonce gets ERROR nonce-mismatch",
             lambda c: c.send(tsrp.CLIENT_LICENSE_INFO, bytes(32) + tsrp.s(hw2) + tsrp.s("d") + tsrp.s("")),
             "nonce-mismatch")
c = connect()
c.license(hw2, "dev-two", t2)
c.send(tsrp.CLIENT_INFO, struct.pack(">HH", 24, 80) + tsrp.s(USER) + tsrp.s(PASSWORD) + tsrp.s("d")
       + tsrp.s(tsrp.random_hwid()) + tsrp.s(b"") + tsrp.s(""))
f, _ = c.recv_until(lambda f: f["type"] in ("error", "logon-result"), 10)
check("CLIENT_INFO with another hardware id gets ERROR malformed", f["type"] == "error" and f["reason"] == "malformed",
      str(f))
c = connect()
c.recv()
r = c.closed_soon(6)
check("a client that never answers LICENSE_REQUEST gets ERROR timeout (--license-timeout 3s)", r)
check("bad input started no session",
      open(E["TSHOST_LOG"]).read().count("starting a login shell") == log_before)
check("bad input changed nothing at the license server", states(hw2) == [("temporary", "temporary")], str(states(hw2)))
check("bad input left the session alone", alive(pid1))

# ---- 7. a session elsewhere: REDIRECT ------------------------------------------------------
hw3 = tsrp.random_hwid()
c = connect(user=None)  # no cookie: the gateway places it here
c.license(hw3, "dev-three")
res = c.client_info(RUSER, RPASSWORD, "dev-three", hw3)
check("a user whose disconnected session is on node2 is redirected there",
      res["type"] == "redirect" and res["reason"] == "session-elsewhere" and res["target"] == E["TSHOST_NODE2"] + ":3389"
      and len(res["routing_token"]) > 0, str(res))
check("... and the server closes after REDIRECT", c.closed_soon())
c = connect(user=None)
c.license(hw3, "dev-three")
res = c.client_info(RUSER, "wrong", "dev-three", hw3)
check("no redirect before the password is right", res["type"] == "logon-result" and res["status"] == "wrong-password",
      str(res))
c.close()

# ---- 8. LOGOFF ends the session and the shell ----------------------------------------------
c = connect()
c.license(hw, "dev-one", token)
res = c.client_info(USER, PASSWORD, "dev-one", hw)
check("reattached once more", res["status"] == "ok" and res["reattached"] and res["session_id"] == sid, str(res))
c.send(tsrp.LOGOFF)
f, _ = c.recv_until(lambda f: f["type"] == "logoff", 10)
check("LOGOFF is answered with LOGOFF and a close", f["type"] == "logoff" and c.closed_soon())
check("LOGOFF ends the shell", wait_for(lambda: not alive(pid1), 6), f"pid {pid1} still there")

# ---- 9. the shell exits: LOGOFF from the server --------------------------------------------
c = connect()
c.license(hw, "dev-one", token)
res = c.client_info(USER, PASSWORD, "dev-one", hw)
check("after a logoff the next logon gets a new session",
      res["status"] == "ok" and not res["reattached"] and res["session_id"] != sid, str(res))
pid2 = shell_pid(c, "PIDC")
c.type("exit\n")
try:
    f, _ = c.recv_until(lambda f: f["type"] == "logoff", 10)
    ok = c.closed_soon()
except (tsrp.Closed, TimeoutError) as e:
    ok, f = False, str(e)
check("the shell's exit ends the session: LOGOFF and a close", ok, str(f))
check("... and the shell is gone", wait_for(lambda: not alive(pid2), 5))

finish()
